"""The comparison summary: every compared layer in a block, changed/unchanged by value."""

import copy
import math

import numpy as np
import pytest
import torch

from weightscope.core.comparator import compare_sources


def _f64(tensors):
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])


def _group_reference(before, after):
    x, y = _f64(before), _f64(after)
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    return {"l2_distance": np.linalg.norm(y - x), "relative_l2_distance": np.linalg.norm(y - x) / nx,
            "cosine_similarity": float(x @ y / (nx * ny))}


@pytest.fixture(scope="module")
def gpt2_pair():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=50,
                                  bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    base = transformers.GPT2LMHeadModel(cfg).eval()
    tuned = copy.deepcopy(base)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tuned.named_parameters():
            if name == "transformer.wpe.weight":
                continue  # frozen
            scale = 3.0 if name.startswith("lm_head") else 0.05
            p.add_(scale * (p.abs().mean() + 0.01) * torch.randn(p.shape, generator=g))  # biases start at 0
    return base, tuned


def test_by_block_covers_the_layers_outside_numbered_blocks(gpt2_pair):
    base, tuned = gpt2_pair
    c = compare_sources(base, tuned, include_vectors=True, parallel=False)
    s = c["summary"]
    groups = {"wte": "transformer.wte.", "wpe": "transformer.wpe.", "h.0": "transformer.h.0.",
              "h.1": "transformer.h.1.", "ln_f": "transformer.ln_f.", "lm_head": "lm_head."}
    assert set(s["by_block"]) == set(groups)
    assert sum(g["layers"] for g in s["by_block"].values()) == s["compared_layers"] == len(c["layer_comparisons"])
    params1, params2 = dict(base.named_parameters()), dict(tuned.named_parameters())
    for group, prefix in groups.items():
        names = [n for n in params1 if n.startswith(prefix)]
        got = s["by_block"][group]
        assert got["layers"] == len(names), group  # weight and bias together, as in a block
        if group == "wpe":
            assert (got["changed_layers"], got["l2_distance"], got["cosine_similarity"]) == (0, 0.0, 1.0)
            continue
        ref = _group_reference([params1[n] for n in names], [params2[n] for n in names])
        for key, want in ref.items():
            assert got[key] == pytest.approx(want, rel=1e-9), (group, key)
        assert got["changed_layers"] == len(names)
    top = max(s["by_block"], key=lambda k: s["by_block"][k]["relative_l2_distance"])
    assert top == "lm_head"  # the block that changed most is now in the summary at all


def test_a_lossless_dtype_change_is_not_a_change(counting_source, gen):
    w = torch.randn(16, 8, generator=gen).half()
    signed = torch.randn(8, 8, generator=gen)
    signed[0, :4] = 0.0
    a = {"layers.0.cast.weight": w, "layers.0.same.weight": torch.randn(8, 8, generator=gen),
         "layers.1.signed_zero.weight": signed, "layers.1.tuned.weight": torch.randn(8, 8, generator=gen)}
    flipped = signed.clone()
    flipped[0, :4] = -0.0  # other bits, same values
    b = {"layers.0.cast.weight": w.float(), "layers.0.same.weight": a["layers.0.same.weight"].clone(),
         "layers.1.signed_zero.weight": flipped, "layers.1.tuned.weight": a["layers.1.tuned.weight"] * 1.5}
    c = compare_sources(counting_source(a), counting_source(b), methods=["basic_stats", "spectral"], parallel=False)
    lc = c["layer_comparisons"]
    value_equal = {k.removesuffix(".weight"): np.array_equal(a[k].double().numpy(), b[k].double().numpy())
                   for k in a}
    assert value_equal == {"layers.0.cast": True, "layers.0.same": True, "layers.1.signed_zero": True,
                           "layers.1.tuned": False}
    # identical stays bit equality.
    assert [lc[k]["identical"] for k in value_equal] == [False, True, False, False]
    assert (lc["layers.0.cast"]["dtype1"], lc["layers.0.cast"]["dtype2"]) == ("float16", "float32")
    s = c["summary"]
    assert (s["identical_layers"], s["changed_layers"]) == (3, 1)
    assert s["dtype_changed_layers"] == 1
    assert s["by_block"]["layers.0"]["changed_layers"] == 0 and s["by_block"]["layers.1"]["changed_layers"] == 1
    assert s["by_block"]["layers.0"]["cosine_similarity"] == 1.0  # all values equal: exactly 1
    assert lc["layers.0.cast"]["update_rank_90"] == 0  # ΔW = 0


def test_a_model_saved_in_another_dtype_is_unchanged(counting_source, gen):
    a = {f"h.{i}.fc.weight": torch.randn(12, 6, generator=gen).bfloat16() for i in range(3)}
    c = compare_sources(counting_source(a), counting_source({k: v.float() for k, v in a.items()}), parallel=False)
    s = c["summary"]
    assert (s["identical_layers"], s["changed_layers"], s["dtype_changed_layers"]) == (3, 0, 3)
    assert s["global_cosine_similarity"] == 1.0 and s["global_relative_l2_distance"] == 0.0
    assert not any(m["identical"] for m in c["layer_comparisons"].values())
