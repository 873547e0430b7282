"""compare_sources end to end on real checkpoint files (safetensors, Lightning-style .ckpt)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import wasserstein_distance

import weightscope
from weightscope import Scope
from weightscope.core.comparator import compare_sources, find_most_changed_layers


@pytest.fixture
def pair(tmp_path, gen):
    """A base model (HF-style names, safetensors) and a 'fine-tune' saved as a Lightning .ckpt."""
    base = {
        "embed_tokens.weight": torch.randn(50, 16, generator=gen),
        "layers.0.q_proj.weight": torch.randn(16, 16, generator=gen),  # frozen
        "layers.0.mlp.weight": torch.randn(32, 16, generator=gen),  # scaled
        "layers.1.q_proj.weight": torch.randn(16, 16, generator=gen),  # low-rank update
        "layers.1.mlp.weight": torch.randn(32, 16, generator=gen),  # noise
        "layers.1.mlp.bias": torch.randn(32, generator=gen),  # vector: skipped by default
        "old_head.weight": torch.randn(4, 16, generator=gen),
        "step": torch.tensor([3]),  # not floating: skipped
    }
    u, v = torch.randn(16, 2, generator=gen), torch.randn(2, 16, generator=gen)
    tuned = {
        "embed_tokens.weight": torch.randn(60, 16, generator=gen),  # vocab resized
        "layers.0.q_proj.weight": base["layers.0.q_proj.weight"].clone(),
        "layers.0.mlp.weight": base["layers.0.mlp.weight"] * 1.5,
        "layers.1.q_proj.weight": base["layers.1.q_proj.weight"] + 0.3 * (u @ v),
        "layers.1.mlp.weight": base["layers.1.mlp.weight"] + 0.01 * torch.randn(32, 16, generator=gen),
        "layers.1.mlp.bias": base["layers.1.mlp.bias"] + 1.0,
        "new_head.weight": torch.randn(3, 16, generator=gen),
        "step": torch.tensor([7]),
    }
    save_file(base, tmp_path / "base.safetensors")
    torch.save({"state_dict": {f"model.{k}": t for k, t in tuned.items()}, "epoch": 2}, tmp_path / "tuned.ckpt")
    return tmp_path / "base.safetensors", tmp_path / "tuned.ckpt", base, tuned


def test_pairs_by_stripped_prefix_and_reports_everything(pair, f64, reference_diff):
    p1, p2, base, tuned = pair
    c = compare_sources(p1, p2, methods=["basic_stats", "spectral"], num_workers=2)
    lc = c["layer_comparisons"]
    assert sorted(lc) == ["layers.0.mlp", "layers.0.q_proj", "layers.1.mlp", "layers.1.q_proj"]
    assert c["name_mapping"]["layers.0.mlp"] == "model.layers.0.mlp"
    assert c["only_in_model1"] == ["old_head"] and c["only_in_model2"] == ["model.new_head"]
    assert c["mode"] == "tensors"

    frozen = lc["layers.0.q_proj"]
    assert frozen["identical"] is True and frozen["l2_distance"] == 0.0 and frozen["cosine_similarity"] == 1.0
    assert frozen["update_rank_90"] == 0
    scaled = lc["layers.0.mlp"]
    assert scaled["l2_norm_ratio"] == pytest.approx(1.5, rel=1e-7)
    assert scaled["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)
    assert scaled["update_rank_90"] > 2  # ΔW = 0.5·A: as full-rank as A
    assert lc["layers.1.q_proj"]["update_rank_90"] <= 2
    for layer in lc:
        a, b = base[f"{layer}.weight"], tuned[f"{layer}.weight"]
        for key, value in reference_diff(a, b).items():
            assert lc[layer][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (layer, key)
        if layer == "layers.0.q_proj":
            continue  # ΔW = 0: checked above
        sv = np.linalg.svd(f64(b) - f64(a), compute_uv=False)  # ΔW's spectrum, numpy float64
        energy = np.cumsum(sv**2) / np.sum(sv**2)
        assert lc[layer]["update_rank_90"] == int(np.argmax(energy >= 0.9)) + 1, layer
        assert lc[layer]["update_stable_rank"] == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-6), layer

    mm = c["shape_mismatches"]["embed_tokens"]
    assert mm["shape1"] == [50, 16] and mm["shape2"] == [60, 16]
    a, b = base["embed_tokens.weight"], tuned["embed_tokens.weight"]
    assert mm["wasserstein_distance"] == pytest.approx(wasserstein_distance(f64(a).ravel(), f64(b).ravel()), rel=1e-12)
    assert mm["mean_diff"] == pytest.approx(f64(b).mean() - f64(a).mean(), rel=1e-9)
    assert set(mm["spectra"]) == {"model1", "model2"}
    for side, t in (("model1", a), ("model2", b)):  # each side's own spectrum, side by side
        sv = np.linalg.svd(f64(t), compute_uv=False)
        assert mm["spectra"][side]["max_singular_value"] == pytest.approx(sv[0], rel=1e-9), side
        assert mm["spectra"][side]["condition_number"] == pytest.approx(sv[0] / sv[-1], rel=1e-6), side

    s = c["summary"]
    assert (s["compared_layers"], s["identical_layers"], s["changed_layers"]) == (4, 1, 3)
    assert (s["shape_mismatches"], s["only_in_model1"], s["only_in_model2"]) == (1, 1, 1)
    # Global figures over all compared weights, as one vector.
    x = np.concatenate([f64(base[f"{k}.weight"]).ravel() for k in lc])
    y = np.concatenate([f64(tuned[f"{k}.weight"]).ravel() for k in lc])
    assert s["global_l2_distance"] == pytest.approx(np.linalg.norm(y - x), rel=1e-9)
    assert s["global_cosine_similarity"] == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-9)
    assert set(s["by_block"]) == {"layers.0", "layers.1"}
    assert s["by_block"]["layers.0"]["changed_layers"] == 1
    assert set(s["by_module"]) == {"q_proj", "mlp"}
    assert s["by_module"]["q_proj"]["layers"] == 2

    # Each side's stats come along, keyed by that side's names, only-in layers included.
    assert set(c["model1_stats"]) == {"embed_tokens", *lc, "old_head"}
    assert "model.new_head" in c["model2_stats"] and "spectral" in c["model2_stats"]["model.layers.1.mlp"]
    json.dumps(c, allow_nan=False)  # plain, JSON-serializable

    top = find_most_changed_layers(c, top_k=2)
    assert [layer for layer, _, _ in top] == ["layers.0.mlp", "layers.1.q_proj"]


def test_vectors_only_when_asked(pair):
    p1, p2, *_ = pair
    c = compare_sources(p1, p2, include_vectors=True, layers=r"layers\.1")
    assert sorted(c["layer_comparisons"]) == ["layers.1.mlp", "layers.1.mlp.bias", "layers.1.q_proj"]
    assert c["layer_comparisons"]["layers.1.mlp.bias"]["mean_diff"] == pytest.approx(1.0, rel=1e-6)
    assert c["only_in_model1"] == c["only_in_model2"] == []


def test_scope_and_one_call_forms_agree(pair):
    p1, p2, *_ = pair
    with Scope(p1) as scope:
        via_scope = scope.compare_with(str(p2), parallel=False)
    via_call = weightscope.compare(str(p1), p2, num_workers=2)
    assert via_scope["layer_comparisons"] == via_call["layer_comparisons"]
    assert via_scope["methods"] == ["basic_stats"]  # the compare default


def test_bf16_checkpoints(tmp_path, gen, reference_diff):
    a = torch.randn(64, 32, generator=gen).bfloat16()
    b = (a.float() * 1.01 + 0.01).bfloat16()
    save_file({"w": a}, tmp_path / "a.safetensors")
    save_file({"w": b}, tmp_path / "b.safetensors")
    m = compare_sources(tmp_path / "a.safetensors", tmp_path / "b.safetensors")["layer_comparisons"]["w"]
    assert m["dtype1"] == m["dtype2"] == "bfloat16"
    for key, value in reference_diff(a, b).items():
        assert m[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(weightscope.SourceError):
        compare_sources(tmp_path / "nope.safetensors", tmp_path / "nope2.safetensors")
    with pytest.raises(weightscope.SourceError):
        compare_sources(tmp_path / "scan.json", tmp_path / "nope2.safetensors")
