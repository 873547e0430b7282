import math

import numpy as np
import pytest
import torch

from weightscope.comparison import spectrum_metrics, update_spectrum
from weightscope.comparison.update_spectrum import spectrum_from_gram, update_gram, zero_update_metrics


def _np_sv(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    d = b.double().numpy() - a.double().numpy()
    return np.linalg.svd(d.reshape(d.shape[0], -1), compute_uv=False)


def _np_metrics(sv: np.ndarray) -> dict:
    """The three ranks of ΔW from numpy's singular values, straight from their definitions."""
    energy = np.cumsum(sv**2) / np.sum(sv**2)
    p = sv[sv > 0] / sv.sum()
    return {"update_stable_rank": np.sum(sv**2) / sv[0] ** 2,
            "update_effective_rank": float(np.exp(-np.sum(p * np.log(p)))),
            "update_rank_90": int(np.argmax(energy >= 0.9)) + 1}


@pytest.mark.parametrize("shape", [(96, 64), (40, 120), (8, 4, 3, 3), (420, 400), (390, 600)])  # last two: blocked Gram
def test_singular_values_match_numpy_svd(gen, shape):
    a = torch.randn(*shape, generator=gen)
    b = a + 0.1 * torch.randn(*shape, generator=gen)
    sv = spectrum_from_gram(update_gram(a, b)).numpy()
    ref = _np_sv(a, b)
    np.testing.assert_allclose(sv[: len(ref)], ref, rtol=1e-8, atol=1e-10 * ref[0])


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_update_is_seen_as_low_rank(gen, rank):
    a = torch.randn(128, 96, generator=gen)
    u, v = torch.randn(128, rank, generator=gen), torch.randn(rank, 96, generator=gen)
    b = a + 0.05 * (u @ v)
    m = update_spectrum(a, b)
    assert 1 <= m["update_rank_90"] <= rank
    assert m["update_stable_rank"] <= rank + 1e-6
    # Rounding of a + ΔW in float32 adds a noise floor, so the entropy rank is only near r.
    assert m["update_effective_rank"] < rank + 1.5
    ref = _np_metrics(_np_sv(a, b))  # the noise floor is ~1e-7 of σ_max: it moves the entropy rank by ~1e-4
    assert m["update_rank_90"] == ref["update_rank_90"]
    assert m["update_stable_rank"] == pytest.approx(ref["update_stable_rank"], rel=1e-9)
    assert m["update_effective_rank"] == pytest.approx(ref["update_effective_rank"], rel=1e-3)


def test_full_rank_noise_update_has_large_rank(gen):
    a = torch.randn(128, 96, generator=gen)
    b = a + 0.05 * torch.randn(128, 96, generator=gen)
    m = update_spectrum(a, b)
    assert m["update_rank_90"] > 40
    assert m["update_effective_rank"] > 60
    ref = _np_metrics(_np_sv(a, b))
    assert m["update_rank_90"] == ref["update_rank_90"]
    assert m["update_stable_rank"] == pytest.approx(ref["update_stable_rank"], rel=1e-9)
    assert m["update_effective_rank"] == pytest.approx(ref["update_effective_rank"], rel=1e-9)


def test_metrics_match_closed_form_on_known_spectrum():
    sv = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    m = spectrum_metrics(sv)
    assert m["update_stable_rank"] == pytest.approx(14 / 9)
    p = np.array([3, 2, 1]) / 6
    assert m["update_effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert m["update_rank_90"] == 2  # 9+4 = 13 >= 0.9*14 = 12.6, 9 < 12.6
    assert spectrum_metrics(torch.tensor([1.0, 0.0]))["update_rank_90"] == 1


def test_zero_update_and_bf16(gen):
    a = torch.randn(30, 20, generator=gen).bfloat16()
    # ΔW = 0: every σ is 0 (numpy agrees), so ‖ΔW‖²/σ_max² and the entropy of σ/Σσ are 0/0 (None),
    # while no singular value at all is needed to hold 90 % of zero energy (0).
    assert not _np_sv(a, a.clone()).any()
    zero = {"update_stable_rank": None, "update_effective_rank": None, "update_rank_90": 0}
    assert update_spectrum(a, a.clone()) == zero
    assert update_spectrum(a, a.clone().neg().neg()) == zero  # equal values, a fresh tensor
    assert spectrum_metrics(torch.zeros(5, dtype=torch.float64)) == zero == zero_update_metrics()
    assert spectrum_metrics(torch.zeros(0, dtype=torch.float64)) == zero
    u, v = torch.randn(30, 1, generator=gen), torch.randn(1, 20, generator=gen)
    b = (a.double() + u.double() @ v.double()).bfloat16()
    sv = spectrum_from_gram(update_gram(a, b)).numpy()
    np.testing.assert_allclose(sv[:20], _np_sv(a, b), rtol=1e-8, atol=1e-9)


def test_zero_update_through_compare_is_none_in_json(tmp_path):
    """ΔW = 0 from two tensors that differ in bits only (0.0 vs -0.0): the comparison's update spectrum."""
    import json

    from safetensors.torch import save_file

    from weightscope.cli.main import main

    g = torch.Generator().manual_seed(0)
    dense = torch.randn(16, 24, generator=g)
    low = 0.1 * torch.randn(16, 1, generator=g) @ torch.randn(1, 24, generator=g)
    same = torch.randn(8, 8, generator=g)
    save_file({"z.weight": torch.zeros(16, 24), "d.weight": dense, "s.weight": same}, str(tmp_path / "a.safetensors"))
    save_file({"z.weight": -torch.zeros(16, 24), "d.weight": dense + low, "s.weight": same},
              str(tmp_path / "b.safetensors"))
    out = tmp_path / "c.json"
    assert main(["compare", "--model1", str(tmp_path / "a.safetensors"), "--model2", str(tmp_path / "b.safetensors"),
                 "--methods", "basic_stats", "spectral", "--output", str(out), "--quiet"]) == 0
    lc = json.loads(out.read_text(), parse_constant=lambda t: pytest.fail(t))["layer_comparisons"]
    assert lc["z"]["identical"] is False and lc["z"]["max_abs_diff"] == 0.0
    z = lc["z"]
    assert (z["update_stable_rank"], z["update_effective_rank"], z["update_rank_90"]) == (None, None, 0)
    assert lc["z"]["stable_rank_diff"] is None  # both sides' stable rank is undefined
    s = lc["s"]  # bit-identical: no spectrum computed, the same undefined ranks
    assert s["identical"] is True
    assert (s["update_stable_rank"], s["update_effective_rank"], s["update_rank_90"]) == (None, None, 0)
    sv = _np_sv(dense, dense + low)
    assert lc["d"]["update_stable_rank"] == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-6)
    assert lc["d"]["update_rank_90"] == 1
