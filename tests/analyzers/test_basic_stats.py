"""basic_stats against numpy float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def _reference(a: np.ndarray) -> dict:
    f = a[np.isfinite(a)]
    return {
        "mean": f.mean(),
        "std": f.std(),  # ddof=0
        "min": f.min(),
        "max": f.max(),
        "abs_mean": np.abs(f).mean(),
        "l2_norm": np.linalg.norm(f),
        "zeros_percentage": 100.0 * np.count_nonzero(f == 0) / f.size,
    }


def _check(got: dict, ref: dict) -> None:
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def test_matches_numpy_float64(rng, run, small_chunks):
    a = rng.standard_normal((123, 77)) * 0.02 + 0.001
    a[a < -0.03] = 0.0  # some exact zeros
    got = run("basic_stats", torch.from_numpy(a.astype(np.float32)))
    _check(got, _reference(a.astype(np.float32).astype(np.float64)))
    assert got["numel"] == a.size and got["shape"] == [123, 77] and got["dtype"] == "float32"
    assert got["nan_count"] == 0 and got["inf_count"] == 0
    assert got["zeros_percentage"] > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float64])
def test_low_precision_inputs_use_their_upcast_values(rng, run, dtype):
    t = torch.from_numpy(rng.standard_normal((64, 33)) * 3).to(dtype)
    got = run("basic_stats", t)
    _check(got, _reference(t.double().numpy()))
    assert got["dtype"] == str(dtype).removeprefix("torch.")


def test_non_finite_values_are_counted_and_excluded(rng, run, small_chunks):
    a = rng.standard_normal((40, 60))
    a[1, 2] = a[30, 59] = np.nan
    a[5, 5] = np.inf
    a[6, 0] = a[7, 7] = a[8, 8] = -np.inf
    got = run("basic_stats", a)
    assert got["nan_count"] == 2 and got["inf_count"] == 4
    _check(got, _reference(a))
    assert all(math.isfinite(got[k]) for k in ("mean", "std", "min", "max", "l2_norm"))


def test_all_nan_and_empty(run):
    got = run("basic_stats", torch.full((3, 4), float("nan")))
    assert got["nan_count"] == 12 and got["mean"] is None and got["std"] is None and got["numel"] == 12
    got = run("basic_stats", torch.zeros(0, 8))
    assert got["numel"] == 0 and got["shape"] == [0, 8] and got["mean"] is None and got["l2_norm"] is None


def test_vector_and_conv(rng, run):
    v = rng.standard_normal(17)
    _check(run("basic_stats", v), _reference(v))
    conv = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    got = run("basic_stats", conv)
    assert got["shape"] == [8, 3, 5, 5] and got["numel"] == 600
    _check(got, _reference(conv.astype(np.float64)))


def test_large_mean_keeps_std_precision(run):
    """A LayerNorm-like scale (mean 1, tiny spread): a naive sum-of-squares std would lose it."""
    a = 1.0 + np.linspace(-1e-4, 1e-4, 10_001)
    got = run("basic_stats", a)
    assert got["std"] == pytest.approx(a.std(), rel=1e-9)
