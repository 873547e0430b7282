"""esd: the vectorised power-law fit against a brute-force WeightWatcher-style loop, and recovery of
known exponents from matrices built with Pareto-distributed eigenvalues."""

from __future__ import annotations

import math

import numpy as np
import pytest

from weightscope.analyzers._powerlaw import fit_power_law


def brute_force_fit(evals: np.ndarray) -> tuple[float, float, float]:
    """WeightWatcher's WWFit, written as the plain loop over candidate xmins."""
    x = np.sort(np.asarray(evals, dtype=np.float64))
    n = x.size
    alphas, ds = np.zeros(n - 1), np.ones(n - 1)
    for i in range(n - 1):
        m = n - i
        with np.errstate(divide="ignore"):
            alpha = 1 + m / (np.sum(np.log(x[i:])) - m * np.log(x[i]))
        alphas[i] = alpha
        if np.isfinite(alpha) and alpha > 1:
            theoretical = 1 - (x[i:] / x[i]) ** (1 - alpha)
            ds[i] = np.max(np.abs(theoretical - np.arange(m) / m))
    best = int(np.argmin(ds))
    return alphas[best], x[best], ds[best]


def pareto_eigenvalues(rng: np.random.Generator, n: int, alpha: float, xmin: float = 1.0) -> np.ndarray:
    """n draws with density ~ x**-alpha for x >= xmin (inverse CDF)."""
    return xmin * (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("seed", range(4))
def test_vectorised_fit_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    mixed = np.concatenate([rng.uniform(0.5, 2.0, 300), pareto_eigenvalues(rng, 80, 3.0, 2.0)])
    for x in (mixed, rng.lognormal(0, 1, 500), pareto_eigenvalues(rng, 257, 2.2)):
        fit = fit_power_law(np.sort(x))
        alpha, xmin, d = brute_force_fit(x)
        assert fit.alpha == pytest.approx(alpha, rel=1e-10)
        assert fit.xmin == xmin
        assert fit.ks_distance == pytest.approx(d, rel=1e-10, abs=1e-13)


def test_block_boundaries_do_not_matter(monkeypatch):
    from weightscope.analyzers import _powerlaw

    x = np.sort(np.random.default_rng(7).lognormal(0, 1.5, 300))
    whole = fit_power_law(x)
    monkeypatch.setattr(_powerlaw, "_BLOCK", 700)  # 2 candidates per block
    assert fit_power_law(x) == whole


def test_ties_and_constant_tail():
    x = np.sort(np.concatenate([np.full(20, 3.0), np.linspace(1, 2, 30)]))
    fit = fit_power_law(x)
    alpha, xmin, d = brute_force_fit(x)
    assert (fit.alpha, fit.xmin) == (pytest.approx(alpha, rel=1e-10), xmin)
    assert fit.ks_distance == pytest.approx(d, rel=1e-10)


@pytest.mark.parametrize("alpha_true", [2.5, 4.0])
def test_recovers_known_exponent_from_a_matrix(rng, mx, run, alpha_true):
    lam = np.sort(pareto_eigenvalues(rng, 700, alpha_true, xmin=0.5))[::-1]
    w = mx.with_singular_values(rng, 1000, 700, np.sqrt(lam))
    got = run("esd", w.astype(np.float32))
    assert got["alpha"] == pytest.approx(alpha_true, abs=0.25)
    # and exactly the brute-force fit of the eigenvalues of the matrix analysed
    lam_w = np.linalg.svd(w.astype(np.float32).astype(np.float64), compute_uv=False) ** 2
    alpha, xmin, d = brute_force_fit(lam_w)
    assert got["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert got["xmin"] == pytest.approx(xmin, rel=1e-6)
    assert got["ks_distance"] == pytest.approx(d, rel=1e-4, abs=1e-8)
    assert got["num_pl_spikes"] == int(np.sum(lam_w >= xmin * (1 - 1e-9)))
    # WeightWatcher's conventions: lambda = sigma**2 of the raw W (no 1/N), log10 scale
    assert got["log_spectral_norm"] == pytest.approx(np.log10(lam_w.max()), rel=1e-9)
    assert got["alpha_weighted"] == pytest.approx(got["alpha"] * np.log10(lam_w.max()), rel=1e-9)


def test_gaussian_matrix_is_not_heavy_tailed(rng, run):
    """A random Gaussian matrix (Marchenko-Pastur bulk) fits a large alpha, unlike the heavy tails above."""
    got = run("esd", rng.standard_normal((600, 300)))
    assert got["alpha"] > 5


def test_zero_eigenvalues_are_left_out(rng, mx, run):
    lam = np.sort(pareto_eigenvalues(rng, 60, 3.0))[::-1]
    s = np.concatenate([np.sqrt(lam), np.zeros(20)])
    got = run("esd", mx.with_singular_values(rng, 120, 80, s))
    alpha, xmin, _ = brute_force_fit(lam)
    assert got["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert got["num_pl_spikes"] <= 60


def test_degenerate_inputs_have_a_note(run):
    import torch

    small = run("esd", torch.eye(5) * torch.arange(1, 6))
    assert "5 nonzero eigenvalues" in small["note"]
    # No tail to fit: NaN ("could not be measured"), so a filter like alpha < 2 is simply False.
    assert all(math.isnan(small[k]) for k in ("alpha", "alpha_weighted", "ks_distance", "xmin", "num_pl_spikes"))
    assert not small["alpha"] < 2
    assert small["log_spectral_norm"] == pytest.approx(np.log10(25.0))
    zero = run("esd", torch.zeros(30, 30))
    assert math.isnan(zero["alpha"]) and zero["note"] and zero["log_spectral_norm"] is None
    nan = torch.ones(30, 30)
    nan[0, 0] = float("inf")
    assert "non-finite" in run("esd", nan)["note"]
