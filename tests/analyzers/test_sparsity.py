"""sparsity: planted zeros and dead rows/columns, percentiles against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

THRESHOLDS = {"0": 0.0, "1e-06": 1e-6, "0.0001": 1e-4, "0.01": 1e-2}


def test_planted_structure(rng, run, small_chunks):
    a = rng.uniform(0.02, 1.0, size=(50, 80)) * rng.choice([-1, 1], size=(50, 80))
    a[[3, 17, 40], :] = 0.0  # dead rows
    a[:, [0, 79]] = 5e-7  # dead columns (below 1e-6, not zero)
    a[10, 10:30] = 5e-5  # 20 tiny values
    a[11, 10:15] = 0.005  # 5 small values
    got = run("sparsity", a)
    assert got["dead_rows"] == 3 and got["dead_columns"] == 2
    assert got["dead_rows_percentage"] == pytest.approx(6.0) and got["dead_columns_percentage"] == pytest.approx(2.5)
    zeros = 3 * 78  # the dead columns overwrote two entries of each dead row
    below_1e6 = 3 * 80 + 2 * (50 - 3)
    levels = got["sparsity_levels"]
    assert list(levels) == list(THRESHOLDS)
    assert levels["0"] == pytest.approx(100 * zeros / 4000)
    assert levels["1e-06"] == pytest.approx(100 * below_1e6 / 4000)
    assert levels["0.0001"] == pytest.approx(100 * (below_1e6 + 20) / 4000)
    assert levels["0.01"] == pytest.approx(100 * (below_1e6 + 25) / 4000)
    for k, t in THRESHOLDS.items():  # and the same from numpy directly
        assert levels[k] == pytest.approx(100 * np.mean(np.abs(a) <= t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_magnitude_percentiles_match_numpy(rng, run, dtype, small_chunks):
    t = torch.from_numpy(rng.standard_normal((70, 90))).to(dtype)
    got = run("sparsity", t)["magnitude_percentiles"]
    ref = np.abs(t.double().numpy())
    assert list(got) == ["p10", "p25", "p50", "p75", "p90"]
    for k in got:
        assert got[k] == pytest.approx(np.percentile(ref, int(k[1:])), rel=1e-15), k


def test_conv_rows_are_output_channels(rng, run):
    w = rng.standard_normal((6, 4, 3, 3))
    w[2] = 0.0  # a dead filter
    w[:, 1, 0, 0] = 0.0  # column 9 of the (6, 36) matrix
    got = run("sparsity", w)
    assert got["dead_rows"] == 1 and got["dead_columns"] == 1


def test_non_finite_rows_are_not_dead(run):
    w = np.zeros((4, 5))
    w[1, 2] = np.nan
    w[2, 0] = np.inf
    got = run("sparsity", w)
    assert got["dead_rows"] == 2 and got["dead_columns"] == 3
    assert got["sparsity_levels"]["0"] == pytest.approx(100.0)  # over the 18 finite values
    assert got["magnitude_percentiles"]["p90"] == 0.0


def test_empty(run):
    got = run("sparsity", torch.zeros(0, 3))
    assert got["sparsity_levels"]["0"] is None and got["dead_rows"] == 0 and got["note"] == "empty tensor"


def test_thresholds_compare_in_float64_semantics(run, monkeypatch):
    """0.1 rounds *up* in float32: the float32 value nearest 0.1 is above 0.1 and must not count."""
    from weightscope.analyzers import sparsity

    monkeypatch.setattr(sparsity, "THRESHOLDS", {**THRESHOLDS, "0.1": 0.1})
    f = np.float32(0.1)
    w = np.array([[f, np.nextafter(f, np.float32(0)), -f, 0.05]], dtype=np.float32)
    got = run("sparsity", w)["sparsity_levels"]
    assert got["0.1"] == pytest.approx(100 * np.mean(np.abs(w.astype(np.float64)) <= 0.1)) == 50.0
