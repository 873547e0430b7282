import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from weightscope.comparison import diff_metrics, distribution_metrics, wasserstein
from weightscope.comparison.pair_metrics import bitwise_equal, moments


def _close(got: dict, ref: dict, rel: float = 1e-9) -> None:
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-12), key


def test_scaled_layer_has_norm_ratio_s_and_cosine_one(gen, reference_diff):
    a = torch.randn(64, 48, generator=gen)
    b = a * 2.5
    m = diff_metrics(a, b)
    assert m["l2_norm_ratio"] == pytest.approx(2.5, rel=1e-7)
    assert m["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)
    assert m["relative_l2_distance"] == pytest.approx(1.5, rel=1e-7)
    assert m["identical"] is False
    _close(m, reference_diff(a, b))


def test_unchanged_layer_is_identical_with_zero_distance(gen):
    a = torch.randn(33, 17, generator=gen)
    m = diff_metrics(a, a.clone())
    assert m["identical"] is True
    assert m["l2_distance"] == 0.0 and m["relative_l2_distance"] == 0.0 and m["max_abs_diff"] == 0.0
    assert m["cosine_similarity"] == 1.0
    assert m["l2_norm_ratio"] == 1.0
    assert m["significant_change_percentage"] == 0.0
    assert m["mean_diff"] == 0.0 and m["std_diff"] == 0.0


def test_noise_of_known_size_gives_reference_relative_distance(gen, reference_diff):
    a = torch.randn(128, 96, generator=gen)
    b = a + 0.05 * torch.randn(128, 96, generator=gen)
    m = diff_metrics(a, b)
    _close(m, reference_diff(a, b))
    # ‖noise‖ / ‖a‖ ≈ 0.05 for unit-variance a
    assert m["relative_l2_distance"] == pytest.approx(0.05, rel=0.05)


def test_significant_change_percentage_exact_and_threshold_settable():
    a = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, -2.0, -2.0], dtype=torch.float64)
    b = torch.tensor([1.0, 1.005, 1.02, 0.98, 0.0, 1e-9, -2.0, -2.03], dtype=torch.float64)
    # changes: 0, 0.005, 0.02, 0.02, 0, 1e-9 (of a zero: any change counts), 0, 0.03
    assert diff_metrics(a, b)["significant_change_percentage"] == 50.0  # 1 %: 0.02, 0.02, 1e-9, 0.03
    assert diff_metrics(a, b, threshold=0.025)["significant_change_percentage"] == 12.5  # only 1e-9
    assert diff_metrics(a, b, threshold=0.0)["significant_change_percentage"] == 62.5


def test_float64_inputs_are_not_modified(gen):
    a = torch.randn(50, 20, generator=gen, dtype=torch.float64) - 0.5
    b = a + 0.1
    a0, b0 = a.clone(), b.clone()
    diff_metrics(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_chunking_does_not_change_results(gen, chunk, reference_diff):
    a = torch.randn(10, 13, generator=gen) + 3.0  # a non-zero mean exercises the moment merge
    b = a * 1.1 + 0.2 * torch.randn(10, 13, generator=gen)
    _close(diff_metrics(a, b, chunk_elements=chunk), reference_diff(a, b), rel=1e-9)


def test_bf16_inputs_are_upcast_not_downcast(gen, reference_diff):
    a = torch.randn(96, 80, generator=gen).bfloat16()
    b = (a.float() + 0.02 * torch.randn(96, 80, generator=gen)).bfloat16()
    m = diff_metrics(a, b)
    _close(m, reference_diff(a, b))  # reference from the exact bf16 values in float64
    assert m["identical"] is False
    assert diff_metrics(a, a.clone())["identical"] is True


def test_cosine_bounds(gen):
    a = torch.randn(20, 20, generator=gen)
    assert diff_metrics(a, -a)["cosine_similarity"] == pytest.approx(-1.0, abs=1e-12)


NUMERIC_KEYS = ("l2_distance", "relative_l2_distance", "cosine_similarity", "mean_diff", "std_diff",
                "l2_norm_ratio", "max_abs_diff", "significant_change_percentage", "model1_l2_norm", "model2_l2_norm")


def _all_floats(m: dict) -> None:
    for key in NUMERIC_KEYS:
        assert isinstance(m[key], float), (key, m[key])


@pytest.mark.parametrize("other", [torch.zeros(20, 20), -torch.zeros(20, 20)])
def test_zero_equals_zero_is_no_change(other):
    z = torch.zeros(20, 20)
    m = diff_metrics(z, other)  # -0.0 has other bits (not identical) but the same value
    _all_floats(m)
    assert m["identical"] is (other.signbit().sum() == 0).item()
    assert m["l2_distance"] == 0.0 and m["relative_l2_distance"] == 0.0
    assert m["l2_norm_ratio"] == 1.0 and m["cosine_similarity"] == 1.0
    assert m["significant_change_percentage"] == 0.0 and m["max_abs_diff"] == 0.0


def test_zero_to_nonzero_is_infinitely_changed(gen, f64):
    z = torch.zeros(16, 4)
    b = 0.01 * torch.randn(16, 4, generator=gen)  # a zero-initialised LoRA B after some steps
    m = diff_metrics(z, b)
    _all_floats(m)
    y = f64(b).ravel()
    # numpy float64 reference: ‖B − 0‖ = ‖B‖; ‖B‖/‖A‖ and ‖B − A‖/‖A‖ with ‖A‖ = 0 are +inf.
    with np.errstate(divide="ignore"):
        assert m["relative_l2_distance"] == np.linalg.norm(y) / np.linalg.norm(np.zeros_like(y)) == math.inf
    assert m["l2_norm_ratio"] == math.inf
    assert m["l2_distance"] == pytest.approx(np.linalg.norm(y), rel=1e-12)
    assert m["model1_l2_norm"] == 0.0 and m["model2_l2_norm"] == pytest.approx(np.linalg.norm(y), rel=1e-12)
    assert m["mean_diff"] == pytest.approx(y.mean(), rel=1e-9) and m["std_diff"] == pytest.approx(y.std(), rel=1e-9)
    assert m["max_abs_diff"] == pytest.approx(np.abs(y).max(), rel=1e-12)
    assert m["significant_change_percentage"] == 100.0
    assert math.isnan(m["cosine_similarity"])  # no direction to compare with: undefined, not 0


def test_nonzero_to_zero_is_a_relative_change_of_one(gen, f64):
    a = torch.randn(16, 4, generator=gen)
    m = diff_metrics(a, torch.zeros(16, 4))  # a pruned / zeroed layer
    _all_floats(m)
    assert m["relative_l2_distance"] == 1.0 and m["l2_norm_ratio"] == 0.0
    assert m["l2_distance"] == pytest.approx(np.linalg.norm(f64(a)), rel=1e-12)
    assert math.isnan(m["cosine_similarity"])


@pytest.mark.parametrize("where, value", [("a", float("nan")), ("b", float("nan")), ("b", float("inf")),
                                          ("a", float("-inf")), ("both", float("nan"))])
def test_non_finite_weights_make_every_pair_metric_nan(gen, f64, where, value):
    a = torch.randn(12, 10, generator=gen)
    b = a + 0.01 * torch.randn(12, 10, generator=gen)
    if where in ("a", "both"):
        a[3, 4] = value
    if where in ("b", "both"):
        b[3, 4] = value
    m = diff_metrics(a, b)
    _all_floats(m)  # NaN, never None: `0.99 < ratio < 1.01` is False, not a TypeError
    for key in NUMERIC_KEYS[:8]:
        assert math.isnan(m[key]), key
    assert not 0.99 < m["l2_norm_ratio"] < 1.01
    # Each side's own norm is still that side's (numpy float64 reference: NaN/inf where it has them).
    for key, t in (("model1_l2_norm", a), ("model2_l2_norm", b)):
        ref = np.linalg.norm(f64(t))
        assert (math.isnan(m[key]) and np.isnan(ref)) or m[key] == pytest.approx(ref, rel=1e-12), key
    assert m["identical"] is False


def test_identical_nan_tensors_are_identical_but_their_metrics_nan():
    a = torch.tensor([[1.0, float("nan")], [0.0, 2.0]])
    m = diff_metrics(a, a.clone())
    assert m["identical"] is True
    assert math.isnan(m["relative_l2_distance"]) and math.isnan(m["cosine_similarity"])


def test_bitwise_equal_is_about_bits():
    a = torch.tensor([0.0, 1.0])
    assert not bitwise_equal(a, torch.tensor([-0.0, 1.0]))  # equal values, different bits
    nan = torch.tensor([float("nan")])
    assert bitwise_equal(nan, nan.clone())
    assert not bitwise_equal(a, a.double())
    with pytest.raises(ValueError):
        diff_metrics(a, torch.zeros(3))


def test_moments_match_numpy(gen, f64):
    t = torch.randn(1000, generator=gen).bfloat16() * 3 + 1
    mean, std, norm = moments(t, chunk_elements=97)
    x = f64(t)
    assert mean == pytest.approx(x.mean(), rel=1e-12)
    assert std == pytest.approx(x.std(), rel=1e-12)
    assert norm == pytest.approx(np.linalg.norm(x), rel=1e-12)


def test_wasserstein_matches_scipy_and_large_sides_use_quantile_grids(gen, f64):
    a = torch.randn(30, 40, generator=gen)
    b = 1.5 * torch.randn(50, 40, generator=gen) + 0.3
    m = distribution_metrics(a, b)
    assert m["wasserstein_distance"] == pytest.approx(wasserstein_distance(f64(a).ravel(), f64(b).ravel()), rel=1e-12)
    assert m["mean_diff"] == pytest.approx(f64(b).mean() - f64(a).mean(), rel=1e-9)
    assert m["std_diff"] == pytest.approx(f64(b).std() - f64(a).std(), rel=1e-9)
    assert m["l2_norm_ratio"] == pytest.approx(np.linalg.norm(f64(b)) / np.linalg.norm(f64(a)), rel=1e-9)
    # Above max_samples: quantile grids, deterministic and close to the exact value.
    big_a, big_b = torch.randn(200_000, generator=gen), 2 * torch.randn(150_000, generator=gen)
    w1 = wasserstein(big_a, big_b, max_samples=20_000)
    assert w1 == wasserstein(big_a, big_b, max_samples=20_000)
    assert math.isclose(w1, wasserstein_distance(f64(big_a), f64(big_b)), rel_tol=1e-3)


def test_wasserstein_of_nearly_equal_large_distributions_is_not_sampling_noise(gen, f64):
    """A vocab resize: the same rows plus a few. A random subsample put the distance at 100x scipy's."""
    a = torch.randn(2000, 96, generator=gen) * 0.02
    b = torch.cat([a, a[:3]])
    exact = wasserstein_distance(f64(a).ravel(), f64(b).ravel())
    assert math.isclose(wasserstein(a, b, max_samples=50_000), exact, rel_tol=0.05)
    assert distribution_metrics(torch.zeros(4, 4), torch.ones(5, 4))["l2_norm_ratio"] == math.inf
    assert distribution_metrics(torch.zeros(4, 4), torch.zeros(5, 4))["l2_norm_ratio"] == 1.0


def test_a_model_compared_with_itself_has_cosine_exactly_one_at_every_level():
    import weightscope

    g = torch.Generator().manual_seed(12)  # a seed where the division alone gives 1 - 2e-16
    sd = {f"transformer.h.{i}.mlp.c_proj.weight": torch.randn(96, 33, generator=g) * 0.37 for i in range(5)}
    c = weightscope.compare(sd, {k: v.clone() for k, v in sd.items()}, methods=["basic_stats"])
    assert all(m["cosine_similarity"] == 1.0 for m in c["layer_comparisons"].values())
    s = c["summary"]
    assert s["global_cosine_similarity"] == 1.0 and s["global_relative_l2_distance"] == 0.0
    assert all(g["cosine_similarity"] == 1.0 for g in (*s["by_block"].values(), *s["by_module"].values()))


def test_same_values_in_another_dtype_have_cosine_exactly_one():
    # For this tensor sqrt(s)**2 != s: the division alone gives 1 - 2 ulp.
    a = torch.randn(30, 20, generator=torch.Generator().manual_seed(0)).half()
    b = a.float()  # a lossless cast: equal values, other bits
    out = diff_metrics(a, b)
    assert out["identical"] is False
    assert out["cosine_similarity"] == 1.0 and out["l2_distance"] == 0.0 and out["max_abs_diff"] == 0.0
    assert out["l2_norm_ratio"] == 1.0
