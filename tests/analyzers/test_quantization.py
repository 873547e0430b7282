"""quantization: planted outliers, numpy/scipy references, and a numpy simulation of the quantizers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch


def numpy_reference(a: np.ndarray) -> dict:
    """Independent float64 re-implementation of every number the analyzer reports."""
    w = a.reshape(a.shape[0], -1).astype(np.float64) if a.ndim >= 2 else a.reshape(1, -1).astype(np.float64)
    w = np.where(np.isfinite(w), w, 0.0)  # non-finite weights are left out (zero adds nothing to the sums)
    f = a[np.isfinite(a)].astype(np.float64).ravel()
    q1, q3 = np.percentile(f, 25), np.percentile(f, 75)
    iqr = q3 - q1
    amax = np.abs(f).max()

    def err(x, s, lo, hi):
        s = np.where(s > 0, s, 1.0)
        return np.sum((np.clip(np.round(x / s), lo, hi) * s - x) ** 2)

    s = amax / 127
    wq = np.clip(np.round(w / s), -127, 127) * s
    rows, cols = w.shape
    g = np.pad(w, ((0, 0), (0, -cols % 128))).reshape(rows, -1, 128)
    signal = np.sum(f**2)
    return {
        "q1": q1,
        "q3": q3,
        "iqr": iqr,
        "outlier_count": int(np.sum((f < q1 - 1.5 * iqr) | (f > q3 + 1.5 * iqr))),
        "extreme_outlier_count": int(np.sum((f < q1 - 3 * iqr) | (f > q3 + 3 * iqr))),
        "kurtosis": scipy.stats.kurtosis(f),
        "abs_max": amax,
        "dynamic_range": amax / np.abs(f).mean(),
        "quantization_scale": s,
        "quantization_mse": np.sum((wq - w) ** 2) / f.size,
        "sqnr_db": 10 * np.log10(signal / np.sum((wq - w) ** 2)),
        "cosine_similarity": np.sum(w * wq) / np.sqrt(signal * np.sum(wq**2)),
        "sqnr_db_per_channel": 10 * np.log10(signal / err(w, np.abs(w).max(1, keepdims=True) / 127, -127, 127)),
        "sqnr_db_int4_g128": 10 * np.log10(signal / err(g, np.abs(g).max(2, keepdims=True) / 7, -8, 7)),
    }


def check(got: dict, ref: dict, rel: float = 1e-9) -> None:
    for k, v in ref.items():
        if isinstance(v, int):
            assert got[k] == v, k
        else:
            assert got[k] == pytest.approx(v, rel=rel, abs=1e-12), k


@pytest.mark.parametrize("shape", [(96, 300), (5, 1000), (300, 1), (7, 3, 11, 13)])
def test_matches_numpy_simulation(rng, run, shape, small_chunks):
    a = (rng.standard_t(4, size=shape) * 0.02).astype(np.float32)
    got = run("quantization", a)
    check(got, numpy_reference(a))
    assert got["cosine_similarity"] <= 1.0
    assert got["outlier_count"] > 0  # t-distributed: there are outliers to count
    assert got["outlier_percentage"] == pytest.approx(100 * got["outlier_count"] / a.size)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_match_reference_on_upcast_values(rng, run, dtype):
    t = torch.from_numpy(rng.standard_normal((64, 200)) * 0.05).to(dtype)
    check(run("quantization", t), numpy_reference(t.double().numpy()))


def test_planted_outliers_are_counted_exactly(rng, run, small_chunks):
    a = rng.uniform(-1, 1, size=(100, 100))  # Q1 ~ -0.5, Q3 ~ 0.5: fences ~ +-2 and ~ +-3.5
    flat = a.reshape(-1)
    idx = rng.permutation(flat.size)
    flat[idx[:37]] = rng.choice([-1, 1], 37) * 2.6  # mild outliers
    flat[idx[37:60]] = rng.choice([-1, 1], 23) * 50.0  # extreme outliers
    got = run("quantization", a)
    assert got["outlier_count"] == 60 and got["extreme_outlier_count"] == 23
    assert got["outlier_percentage"] == pytest.approx(0.60) and got["extreme_outlier_percentage"] == pytest.approx(0.23)
    assert got["abs_max"] == 50.0 and got["recommendation"] == "int8"
    check(got, numpy_reference(a))


@pytest.mark.parametrize(("n_extreme", "expected"), [(0, "int8"), (100, "int8"), (101, "keep_fp16"),
                                                     (500, "keep_fp16"), (501, "per_channel_or_smoothquant")])  # fmt: skip
def test_recommendation_thresholds(rng, run, n_extreme, expected):
    a = rng.uniform(-1, 1, size=10_000)
    a[:n_extreme] = 1e3
    got = run("quantization", a.reshape(100, 100))
    assert got["extreme_outlier_count"] == n_extreme
    assert got["recommendation"] == expected


def test_round_half_to_even(run):
    # abs_max 127 -> scale 1: x / s lands exactly on .5 for these values
    w = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -2.5, 3.0, 0.0]])
    got = run("quantization", w)
    even = np.round(w)  # numpy: 0, 2, 2, -0, -2 ...
    assert got["quantization_mse"] == pytest.approx(np.mean((even - w) ** 2), rel=1e-12)
    assert got["quantization_mse"] == pytest.approx(5 * 0.25 / 8, rel=1e-12)


def test_all_zero_and_lossless(run):
    got = run("quantization", torch.zeros(8, 16))
    assert got["sqnr_db"] is None and got["cosine_similarity"] is None and got["kurtosis"] is None
    assert got["quantization_mse"] == 0.0 and got["dynamic_range"] is None and got["recommendation"] == "int8"
    grid = torch.arange(-127, 128, dtype=torch.float32).reshape(5, 51) / 128  # scale 1/128: exact
    got = run("quantization", grid)
    assert got["sqnr_db"] == math.inf and got["cosine_similarity"] == pytest.approx(1.0)


def test_non_finite_weights_are_left_out(rng, run):
    a = rng.standard_normal((20, 300))
    a[2, 5] = np.nan
    a[4, :3] = np.inf
    got = run("quantization", a)
    assert got["abs_max"] < 10 and math.isfinite(got["sqnr_db"])
    check(got, numpy_reference(a))


def test_empty(run):
    got = run("quantization", torch.zeros(0, 4))
    assert math.isnan(got["q1"]) and got["recommendation"] is None and got["note"] == "empty tensor"


@pytest.mark.parametrize("v", [0.1, -0.1, 1 / 3, 0.5, -2.5, 1e-40, 3e38, -1e300, 1e300])
def test_fences_rounded_to_float32_keep_strict_comparisons_exact(v):
    """Counting runs on float32 values against float32 fences; it must equal the float64 comparison."""
    from weightscope.analyzers._stats import at_least, at_most

    with np.errstate(over="ignore"):
        f = np.float32(v)
    near = np.array([np.nextafter(f, -np.inf), f, np.nextafter(f, np.inf), -f, 0.0], dtype=np.float32)
    near = near[np.isfinite(near)]
    x = torch.from_numpy(near)
    lo, hi = at_least(v, torch.float32), at_most(v, torch.float32)
    assert ((x < lo).numpy() == (near.astype(np.float64) < v)).all()
    assert ((x > hi).numpy() == (near.astype(np.float64) > v)).all()


def test_a_tensor_with_nan_or_inf_is_not_recommended_for_any_format(rng, run):
    a = rng.normal(0, 0.02, size=(64, 48))
    clean = run("quantization", a)
    assert clean["recommendation"] == "int8"
    a[5, 7] = np.inf
    got = run("quantization", a)
    assert got["recommendation"] == "fix_nonfinite"
    finite = a[np.isfinite(a)]
    assert got["abs_max"] == pytest.approx(np.abs(finite).max())  # the numbers are still the finite values'
