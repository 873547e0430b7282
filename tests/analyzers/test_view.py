"""TensorView's shared machinery against numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightscope.analyzers import _linalg, _stats
from weightscope.analyzers.view import TensorView

QS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def _np_percentiles(a: np.ndarray, qs=QS) -> list[float]:
    return [float(np.percentile(a, 100 * q)) for q in qs]


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1001])
def test_quantiles_small_match_numpy(rng, n):
    a = rng.standard_normal(n).astype(np.float32)
    v = TensorView(torch.from_numpy(a))
    assert v.quantiles(QS) == pytest.approx(_np_percentiles(a.astype(np.float64)), rel=1e-15, abs=0)
    assert v.quantiles(QS, absolute=True) == pytest.approx(_np_percentiles(np.abs(a.astype(np.float64))), rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantiles_histogram_path_is_exact(rng, monkeypatch, dtype):
    """Above DIRECT_LIMIT the two-pass histogram route runs; it must equal numpy exactly."""
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", 10_000)
    a = (rng.standard_t(3, size=(400, 300)) * 0.02).astype(dtype)
    a[:, 7] = 0.0  # ties at zero, and a signed zero
    a[0, 0] = -0.0
    a[1, :5] = np.finfo(dtype).tiny / 4  # subnormals
    calls = []
    real_direct = _stats._direct
    monkeypatch.setattr(_stats, "_direct", lambda *a, **k: calls.append(1) or real_direct(*a, **k))
    v = TensorView(torch.from_numpy(a))
    ref = a.astype(np.float64).ravel()
    assert v.quantiles(QS) == pytest.approx(_np_percentiles(ref), rel=1e-15)
    assert v.quantiles(QS, absolute=True) == pytest.approx(_np_percentiles(np.abs(ref)), rel=1e-15)
    assert not calls, "the histogram route, not a full copy"


def test_quantiles_histogram_path_with_few_distinct_values(rng, monkeypatch):
    """Every wanted rank in one crowded bin (quantized weights): still exact."""
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", 1_000)
    a = rng.choice(np.array([-0.5, 0.0, 0.25, 0.2500001], dtype=np.float32), size=30_000)
    v = TensorView(torch.from_numpy(a))
    assert v.quantiles(QS) == pytest.approx(_np_percentiles(a.astype(np.float64)), rel=1e-15)
    assert v.quantiles(QS, absolute=True) == pytest.approx(_np_percentiles(np.abs(a.astype(np.float64))), rel=1e-15)


@pytest.mark.parametrize("direct_limit", [1 << 18, 100])
def test_quantiles_skip_non_finite(rng, monkeypatch, direct_limit):
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", direct_limit)
    a = rng.standard_normal(5000)
    a[[3, 50, 999]] = [np.nan, np.inf, -np.inf]
    v = TensorView(torch.from_numpy(a))
    assert v.quantiles(QS) == pytest.approx(_np_percentiles(a[np.isfinite(a)]), rel=1e-15)


def test_moments_merge_across_chunks(rng, small_chunks):
    """Pébay merging over many chunks equals numpy two-pass moments, even with a large mean."""
    a = 1000.0 + rng.standard_normal(12_345) * 1e-3
    m = TensorView(torch.from_numpy(a)).moments
    d = a - a.mean()
    assert m.count == a.size
    assert m.mean == pytest.approx(a.mean(), rel=1e-14)
    assert m.m2 == pytest.approx(np.sum(d**2), rel=1e-9)
    assert m.m3 == pytest.approx(np.sum(d**3), rel=1e-6, abs=1e-12 * np.sum(np.abs(d) ** 3))
    assert m.m4 == pytest.approx(np.sum(d**4), rel=1e-9)
    assert m.abs_sum == pytest.approx(np.abs(a).sum(), rel=1e-13)


@pytest.mark.parametrize(("cond", "route"), [(10.0, "gram"), (1e3, "gram"), (3e4, "gram"), (1e6, "qr"), (1e9, "qr")])
@pytest.mark.parametrize("shape", [(300, 120), (120, 300)])
def test_singular_values_against_numpy(rng, mx, cond, route, shape, small_chunks):
    """Gram route while sigma_min/sigma_max >= 1e-5, exact TSQR route below; both within 1e-4 of LAPACK."""
    m, n = shape
    w = mx.with_singular_values(rng, m, n, mx.log_spaced(min(m, n), cond))
    v = TensorView(torch.from_numpy(w))
    ref = np.linalg.svd(w, compute_uv=False)
    s = v.singular_values
    assert s.shape == ref.shape
    assert np.all(np.diff(s) <= 0), "descending"
    np.testing.assert_allclose(s, ref, rtol=1e-4)
    assert v.svd_route == route


def test_gram_route_is_accurate_up_to_its_switch_point(rng, mx, monkeypatch):
    """At the switch ratio (cond 1e5) the Gram route alone still meets 1e-4: the threshold is safe."""
    monkeypatch.setattr(_linalg, "GRAM_MIN_RATIO", 0.0)
    w = mx.with_singular_values(rng, 400, 150, mx.log_spaced(150, 1e5))
    v = TensorView(torch.from_numpy(w))
    np.testing.assert_allclose(v.singular_values, np.linalg.svd(w, compute_uv=False), rtol=1e-4)
    assert v.svd_route == "gram"


def test_singular_values_of_float32_input_match_float64_reference_on_upcast_values(rng, mx):
    w = (mx.with_singular_values(rng, 200, 80, mx.log_spaced(80, 100.0))).astype(np.float32)
    ref = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(TensorView(torch.from_numpy(w)).singular_values, ref, rtol=1e-6)


def test_matrix_flattens_and_keeps_dtype():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.bfloat16).reshape(2, 3, 4, 5)
    v = TensorView(t)
    assert v.matrix.shape == (2, 60) and v.matrix.dtype == torch.bfloat16
    assert v.compute_dtype == torch.float32
    assert TensorView(torch.zeros(3, dtype=torch.float64)).compute_dtype == torch.float64
    assert TensorView(torch.tensor(2.0)).matrix.shape == (1, 1)
    assert TensorView(torch.zeros(0, 5)).matrix.shape == (0, 5)
    assert TensorView(torch.zeros(5, 0, 3)).matrix.shape == (5, 0)


def test_non_contiguous_tensor(rng):
    w = rng.standard_normal((50, 30))
    t = torch.from_numpy(w).T  # a transposed view
    v = TensorView(t)
    np.testing.assert_allclose(v.singular_values, np.linalg.svd(w, compute_uv=False), rtol=1e-10)
    assert v.quantiles((0.5,)) == [pytest.approx(float(np.median(w)), rel=1e-15)]


def test_chunks_never_modify_the_tensor(rng):
    from weightscope.analyzers import ALL_METHODS, analyze_tensor

    w = torch.from_numpy(rng.standard_normal((64, 48)))
    before = w.clone()
    analyze_tensor(w, list(ALL_METHODS))
    assert torch.equal(w, before)


@pytest.mark.parametrize("shape", [(700, 520), (520, 700), (300, 260)])
def test_blocked_gram_of_wider_matrices(rng, mx, shape, small_chunks):
    """Matrices with >= 256 columns take the block-upper-triangular Gram product."""
    w = mx.with_singular_values(rng, *shape, mx.log_spaced(min(shape), 100.0))
    v = TensorView(torch.from_numpy(w))
    np.testing.assert_allclose(v.singular_values, np.linalg.svd(w, compute_uv=False), rtol=1e-10)
    assert v.svd_route == "gram"


def test_one_histogram_serves_signed_and_magnitude_quantiles(rng, monkeypatch):
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", 1_000)
    calls = []
    real = _stats.histogram
    monkeypatch.setattr(_stats, "histogram", lambda chunks: calls.append(1) or real(chunks))
    a = rng.standard_normal((100, 100)).astype(np.float32)
    v = TensorView(torch.from_numpy(a))
    v.quantiles((0.25, 0.75))
    v.quantiles((0.1, 0.9), absolute=True)
    assert len(calls) == 1


def test_cached_properties_of_different_views_compute_concurrently():
    """functools.cached_property (Python < 3.12) locks across instances and serialized the workers."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from weightscope.analyzers.view import cached_property

    barrier = threading.Barrier(2, timeout=5)

    class Probe(TensorView):
        @cached_property
        def together(self):
            barrier.wait()  # only returns when both views are inside the property at once
            return True

    views = [Probe(torch.zeros(2, 2)), Probe(torch.zeros(2, 2))]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda v: v.together, views)) == [True, True]
    assert views[0].__dict__["together"] is True  # cached on the instance


@pytest.mark.parametrize(("cond", "route"), [(10.0, "gram"), (1e7, "qr")])
def test_weights_whose_gram_overflows_are_rescaled_exactly(rng, mx, run, cond, route):
    """float64 weights near 1e200: the Gram matrix overflows, the matrix is rescaled by a power of two
    and the singular values scaled back. Reference: the singular values the matrix was built with."""
    s = mx.log_spaced(40, cond, top=3.0) * 1e200
    w = mx.with_singular_values(rng, 90, 40, s)
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(w.T @ w).all()  # the plain float64 Gram overflows
    v = TensorView(torch.from_numpy(w))
    np.testing.assert_allclose(v.singular_values, s, rtol=1e-6)
    assert v.svd_route == route
    got = run("spectral", w)
    assert got["max_singular_value"] == pytest.approx(s[0], rel=1e-9)
    assert got["condition_number"] == pytest.approx(cond, rel=1e-6)
    assert got["stable_rank"] == pytest.approx(np.sum((s / s[0]) ** 2), rel=1e-9)
