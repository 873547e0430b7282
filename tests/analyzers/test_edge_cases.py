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
