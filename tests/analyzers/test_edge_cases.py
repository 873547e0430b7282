"""Every analyzer on sane-but-odd tensors: never an error, always flat JSON-able plain values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from weightscope.analyzers import ALL_METHODS, analyze_tensor
from weightscope.analyzers.view import TensorView

PLAIN = (int, float, str, type(None), bool)


def _odd_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    nan = torch.randn(30, 20, generator=g)
    nan[0, 0] = float("nan")
    inf = torch.randn(30, 20, generator=g)
    inf[5, :] = float("inf")
    return {
        "zeros": torch.zeros(16, 24),
        "row": torch.randn(1, 300, generator=g),
        "column": torch.randn(300, 1, generator=g),
        "empty_rows": torch.zeros(0, 12),
        "empty_cols": torch.zeros(12, 0),
        "nan": nan,
        "inf": inf,
        "all_nan": torch.full((4, 4), float("nan")),
        "constant": torch.full((9, 9), 0.25),
        "conv": torch.randn(8, 4, 3, 3, generator=g),
        "experts": torch.randn(4, 16, 32, generator=g),
        "bf16": torch.randn(40, 70, generator=g).bfloat16(),
        "fp16": torch.randn(40, 70, generator=g).half(),
        "fp8": torch.randn(40, 70, generator=g).to(torch.float8_e4m3fn),
        "fp8_e5m2": torch.randn(40, 70, generator=g).to(torch.float8_e5m2),
        "int": torch.arange(60).reshape(6, 10),
        "bool": torch.eye(5, dtype=torch.bool),
        "huge": torch.full((6, 6), 1e300, dtype=torch.float64),
        "vector": torch.randn(50, generator=g),
        "scalar": torch.tensor(3.0),
    }


@pytest.mark.parametrize("name", list(_odd_tensors()))
def test_no_errors_and_plain_json(name):
    t = _odd_tensors()[name]
    out = analyze_tensor(t, list(ALL_METHODS))
    expected = list(ALL_METHODS) if t.ndim >= 2 else ["basic_stats"]
    assert list(out) == expected
    for method, result in out.items():
        assert "error" not in result, (method, result)
        for key, value in result.items():
            if isinstance(value, dict):  # sparsity's two small maps are one level deep
                assert all(isinstance(v, PLAIN) for v in value.values()), (method, key)
            elif isinstance(value, list):
                assert all(isinstance(v, PLAIN) for v in value), (method, key)
            else:
                assert isinstance(value, PLAIN), (method, key, type(value))
    text = json.dumps(out)  # inf/nan allowed here; the JSON writer maps them to null
    assert json.loads(text).keys() == out.keys()


def test_nan_only_where_a_method_could_not_run():
    """Undefined statistics of a measured tensor are None (inf stays inf); NaN means the method could
    not run on the tensor (empty, NaN/Inf weights; for esd, fewer than 10 nonzero eigenvalues to fit
    a tail to), and then ``note`` says why."""
    from weightscope.analyzers._linalg import singular_values
    from weightscope.analyzers.esd import MIN_EIGENVALUES

    for name, t in _odd_tensors().items():
        for method, result in analyze_tensor(t, list(ALL_METHODS)).items():
            nans = [k for k, v in result.items() if isinstance(v, float) and math.isnan(v)]
            if not nans:
                continue
            assert "note" in result, (name, method, nans)
            if name in ("empty_rows", "empty_cols", "nan", "inf", "all_nan"):
                continue
            assert method == "esd", (name, method, nans)
            s, _ = singular_values(t.reshape(t.shape[0], -1).double() if t.ndim > 1 else t.reshape(1, -1).double())
            assert int((s > s[0] * max(s.shape[0], 1) * 1e-15).sum()) < MIN_EIGENVALUES, name


def test_a_layer_with_nan_weights_keeps_contract_style_checks_valid():
    """feature-notes' checks ``cond > 1e6`` and ``outliers > 1.0`` on every layer: False, not a TypeError."""
    w = torch.randn(16, 8)
    w[3, 2] = float("nan")
    out = analyze_tensor(w, ["spectral", "quantization"])
    cond = out["spectral"]["condition_number"]
    assert math.isnan(cond) and not cond > 1e6 and "NaN" in out["spectral"]["note"]
    assert out["spectral"]["top_singular_values"] is None
    # quantization is measured over the finite weights: a real number
    finite = w[torch.isfinite(w)].double().numpy()
    assert out["quantization"]["abs_max"] == pytest.approx(float(np.abs(finite).max()))
    all_bad = analyze_tensor(torch.full((4, 4), float("inf")), ["quantization"])["quantization"]
    assert math.isnan(all_bad["extreme_outlier_percentage"]) and all_bad["recommendation"] is None


def test_view_is_shared_between_methods(monkeypatch):
    """methods=all computes the spectrum once for spectral and esd."""
    from weightscope.analyzers import _linalg

    calls = []
    real = _linalg.singular_values
    monkeypatch.setattr(_linalg, "singular_values", lambda m: calls.append(1) or real(m))
    analyze_tensor(torch.randn(64, 32), ["spectral", "esd"])
    assert len(calls) == 1


def test_device_is_respected_on_cpu():
    v = TensorView(torch.randn(4, 4), device="cpu")
    assert v.matrix.device.type == "cpu"
    assert next(v.flat_chunks()).device.type == "cpu"


@pytest.mark.parametrize("name", list(_odd_tensors()))
def test_odd_tensors_match_numpy_float64(name):
    """The values, not only their types: every odd tensor against numpy float64 of its stored values.

    "huge" (float64 1e300) overflows the Gram matrix and takes the rescaled route; "int"/"bool" are
    analysed in float64; "experts" (3-D) is the (4, 512) matrix."""
    t = _odd_tensors()[name]
    out = analyze_tensor(t, list(ALL_METHODS))
    x = t.to(torch.float64).numpy()
    f = x[np.isfinite(x)]
    b = out["basic_stats"]
    assert b["numel"] == x.size and b["nan_count"] == int(np.isnan(x).sum())
    assert b["inf_count"] == int(np.isinf(x).sum())
    if f.size == 0:
        assert b["mean"] is None and b["std"] is None
        return
    ref = {"mean": f.mean(), "std": f.std(), "min": f.min(), "max": f.max(), "abs_mean": np.abs(f).mean(),
           "zeros_percentage": 100.0 * np.count_nonzero(f == 0) / f.size}
    with np.errstate(over="ignore"):
        sumsq = np.sum(f * f)
    if np.isfinite(sumsq):  # "huge": a float64 sum of squares overflows
        ref["l2_norm"] = np.sqrt(sumsq)
    for key, want in ref.items():
        assert b[key] == pytest.approx(want, rel=1e-12, abs=1e-300), key
    if t.ndim < 2 or x.size == 0:
        return
    m = x.reshape(x.shape[0], -1)
    fm = np.where(np.isfinite(m), m, 0.0)
    spars = out["sparsity"]
    for key, thr in (("0", 0.0), ("1e-06", 1e-6), ("0.0001", 1e-4), ("0.01", 1e-2)):
        assert spars["sparsity_levels"][key] == pytest.approx(100.0 * np.mean(np.abs(f) <= thr), rel=1e-12), key
    dead = (np.abs(fm) <= 1e-6) & np.isfinite(m)
    assert spars["dead_rows"] == int(dead.all(axis=1).sum()) and spars["dead_columns"] == int(dead.all(axis=0).sum())
    assert spars["magnitude_percentiles"]["p50"] == pytest.approx(np.percentile(np.abs(f), 50), rel=1e-15)
    q = out["quantization"]
    assert q["q1"] == pytest.approx(np.percentile(f, 25), rel=1e-15)
    assert q["q3"] == pytest.approx(np.percentile(f, 75), rel=1e-15)
    assert q["abs_max"] == np.abs(f).max()
    if f.size != x.size:
        return  # no spectrum of a tensor with NaN/Inf (test_nan_only_where_a_method_could_not_run)
    s = np.linalg.svd(m, compute_uv=False)
    sp = out["spectral"]
    assert sp["total_rank"] == min(m.shape)
    assert sp["max_singular_value"] == pytest.approx(s[0], rel=1e-9)
    np.testing.assert_allclose(sp["top_singular_values"], s[:10], rtol=1e-9, atol=1e-12 * s[0])
    stored_eps = np.finfo(np.float32 if t.is_floating_point() and t.dtype.itemsize <= 4 else np.float64).eps
    assert sp["numerical_rank"] == np.linalg.matrix_rank(m, tol=s[0] * max(m.shape) * stored_eps)
    if s[0] > 0:
        assert sp["stable_rank"] == pytest.approx(np.sum((s / s[0]) ** 2), rel=1e-9)
