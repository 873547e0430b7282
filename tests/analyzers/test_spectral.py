"""spectral against matrices with known singular values and numpy float64."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch


def _reference(s: np.ndarray, shape: tuple[int, int]) -> dict:
    """Closed-form values from exact singular values s (descending)."""
    p = s / s.sum()
    return {
        "max_singular_value": s[0],
        "min_singular_value": s[-1],
        "singular_value_ratio": s[-1] / s[0],
        "stable_rank": np.sum(s**2) / s[0] ** 2,
        "effective_rank": np.exp(-np.sum(p * np.log(p))),
        "numerical_rank": min(shape),
        "total_rank": min(shape),
    }


@pytest.mark.parametrize("cond", [10.0, 1e3, 1e5, 1e6])
@pytest.mark.parametrize("shape", [(257, 96), (96, 257)])
def test_known_spectrum(rng, mx, run, cond, shape):
    s = mx.log_spaced(min(shape), cond, top=2.5)
    got = run("spectral", mx.with_singular_values(rng, *shape, s))
    ref = _reference(s, shape)
    assert got["condition_number"] == pytest.approx(cond, rel=1e-3)
    for k in ("max_singular_value", "min_singular_value", "singular_value_ratio", "stable_rank", "effective_rank"):
        assert got[k] == pytest.approx(ref[k], rel=1e-4), k
    assert got["numerical_rank"] == ref["numerical_rank"] and got["total_rank"] == ref["total_rank"]
    np.testing.assert_allclose(got["top_singular_values"], s[:10], rtol=1e-4)
    assert len(got["top_singular_values"]) == 10


def test_effective_rank_closed_forms(rng, mx, run):
    # k equal singular values: effective rank and stable rank are exactly k.
    got = run("spectral", mx.with_singular_values(rng, 80, 50, np.ones(50)))
    assert got["effective_rank"] == pytest.approx(50, rel=1e-10)
    assert got["stable_rank"] == pytest.approx(50, rel=1e-10)
    assert got["condition_number"] == pytest.approx(1.0, rel=1e-10)


def test_rank_deficient_matches_numpy_matrix_rank(rng, mx, run):
    s = np.concatenate([np.linspace(5, 1, 30), np.zeros(10)])
    w = mx.with_singular_values(rng, 60, 40, s)
    got = run("spectral", w)
    assert got["numerical_rank"] == np.linalg.matrix_rank(w) == 30
    assert got["condition_number"] == math.inf
    assert got["min_singular_value"] == 0.0 and got["singular_value_ratio"] == 0.0
    nz = s[:30]
    p = nz / nz.sum()
    assert got["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-6)
    assert got["stable_rank"] == pytest.approx(np.sum(nz**2) / 25.0, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_zero_matrix_ranks_are_undefined_not_zero(run, dtype):
    w = torch.zeros(20, 30, dtype=dtype)
    got = run("spectral", w)
    ref = np.linalg.svd(w.double().numpy(), compute_uv=False)
    assert got["max_singular_value"] == ref[0] == 0.0 and got["min_singular_value"] == ref[-1] == 0.0
    assert got["top_singular_values"] == [0.0] * 10
    # numpy's own rank of the zero matrix is 0: defined, and kept.
    assert got["numerical_rank"] == np.linalg.matrix_rank(w.double().numpy()) == 0 and got["total_rank"] == 20
    assert got["condition_number"] == math.inf
    # sigma/sigma_max and sigma/sum(sigma) are 0/0: undefined, so None (never a made-up 0).
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(np.sum(ref**2) / ref[0] ** 2) and np.isnan((ref / ref.sum())[0])
    assert got["singular_value_ratio"] is None and got["stable_rank"] is None and got["effective_rank"] is None
    assert "note" not in got
    json.dumps(got)


def test_near_zero_matrix_keeps_real_ranks(rng, mx, run):
    # Tiny but nonzero weights are not the zero matrix: their ranks are numbers, scale-free.
    s = mx.log_spaced(12, 10.0, top=1e-30)
    got = run("spectral", mx.with_singular_values(rng, 30, 12, s))
    ref = _reference(s, (30, 12))
    assert got["stable_rank"] == pytest.approx(ref["stable_rank"], rel=1e-6)
    assert got["effective_rank"] == pytest.approx(ref["effective_rank"], rel=1e-6)


@pytest.mark.parametrize("shape", [(1, 40), (40, 1)])
def test_vectors_as_matrices(rng, run, shape):
    w = rng.standard_normal(shape)
    got = run("spectral", w)
    norm = np.linalg.norm(w)
    assert got["max_singular_value"] == pytest.approx(norm, rel=1e-12)
    assert got["condition_number"] == pytest.approx(1.0) and got["total_rank"] == 1
    assert got["top_singular_values"] == [pytest.approx(norm, rel=1e-12)]


def test_conv_is_flattened_to_out_by_rest(rng, run):
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    got = run("spectral", w)
    ref = np.linalg.svd(w.reshape(16, -1).astype(np.float64), compute_uv=False)
    assert got["total_rank"] == 16
    np.testing.assert_allclose(got["top_singular_values"], ref[:10], rtol=1e-8)
    assert got["condition_number"] == pytest.approx(ref[0] / ref[-1], rel=1e-8)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_float64_of_upcast_values(rng, mx, run, dtype):
    t = torch.from_numpy(mx.with_singular_values(rng, 120, 64, mx.log_spaced(64, 50.0))).to(dtype)
    got = run("spectral", t)
    ref = np.linalg.svd(t.double().numpy(), compute_uv=False)
    assert got["condition_number"] == pytest.approx(ref[0] / ref[-1], rel=1e-6)
    np.testing.assert_allclose(got["top_singular_values"], ref[:10], rtol=1e-8)


def test_non_finite_weights_give_nan_with_note(run):
    w = torch.ones(10, 10)
    w[3, 3] = float("nan")
    got = run("spectral", w)
    assert math.isnan(got["condition_number"]) and math.isnan(got["effective_rank"])
    assert got["top_singular_values"] is None and got["total_rank"] == 10
    assert "non-finite" in got["note"]
    assert run("spectral", torch.zeros(0, 10))["note"] == "empty tensor"


def test_numerical_rank_uses_the_stored_precision_like_numpy(run):
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(96, 8, generator=g) @ torch.randn(8, 160, generator=g)).float()
    assert run("spectral", w)["numerical_rank"] == np.linalg.matrix_rank(w.numpy()) == 8
    # the same values held in float64 are judged with float64's eps, as numpy does
    w64 = w.double()
    assert run("spectral", w64)["numerical_rank"] == np.linalg.matrix_rank(w64.numpy())


def test_zero_matrix_none_reaches_table_json_csv_and_charts(tmp_path, capsys):
    """The undefined ranks of a zero layer go through every consumer as None / null / blank / '-'."""
    import csv

    from safetensors.torch import save_file

    from weightscope.cli.main import main
    from weightscope.core.scope import Scope
    from weightscope.monitor.naming import scalar_metrics
    from weightscope.monitor.record import summarize

    g = torch.Generator().manual_seed(0)
    dense = torch.randn(16, 24, generator=g)
    save_file({"zero.weight": torch.zeros(16, 24), "dense.weight": dense}, str(tmp_path / "m.safetensors"))
    ref = np.linalg.svd(dense.double().numpy(), compute_uv=False)
    ref_stable = float(np.sum(ref**2) / ref[0] ** 2)

    out_json, out_csv = tmp_path / "m.json", tmp_path / "m.csv"
    assert main(["scan", "--model", str(tmp_path / "m.safetensors"), "--methods", "basic_stats", "spectral",
                 "--output", str(out_json)]) == 0
    table = capsys.readouterr().out
    # The report names the zero matrix apart (its condition number is inf by definition), not in the table.
    assert not any(" zero " in line for line in table.splitlines() if line.startswith("│"))
    assert "1 all-zero matrices (condition number inf" in table and table.rstrip().count("zero") >= 1
    row = next(line for line in table.splitlines() if " dense " in line)
    assert float(row.split("│")[3]) == pytest.approx(ref_stable, rel=1e-3)
    layers = json.loads(out_json.read_text(), parse_constant=lambda t: pytest.fail(t))["layers"]
    assert layers["zero"]["spectral"]["stable_rank"] is None and layers["zero"]["spectral"]["effective_rank"] is None
    assert layers["zero"]["spectral"]["numerical_rank"] == 0
    assert layers["dense"]["spectral"]["stable_rank"] == pytest.approx(ref_stable, rel=1e-6)

    assert main(["scan", "--model", str(tmp_path / "m.safetensors"), "--methods", "spectral", "--quiet",
                 "--output", str(out_csv)]) == 0
    rows = {r["layer"]: r for r in csv.DictReader(out_csv.open())}
    assert rows["zero"]["spectral.stable_rank"] == "" and rows["zero"]["spectral.effective_rank"] == ""
    assert float(rows["dense"]["spectral.stable_rank"]) == pytest.approx(ref_stable, rel=1e-6)

    # The callbacks' charts leave the undefined values out rather than plot a 0.
    results = Scope(str(tmp_path / "m.safetensors")).scan(methods=["spectral"])
    charts = scalar_metrics(results, {}, {}, summarize(results, {}, {}, [], 0))
    assert "weights_stable_rank/zero" not in charts and "weights_effective_rank/zero" not in charts
    assert charts["weights_numerical_rank/zero"] == 0.0
    assert charts["weights_stable_rank/dense"] == pytest.approx(ref_stable, rel=1e-6)
