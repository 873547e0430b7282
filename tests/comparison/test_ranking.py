import json
import math

import numpy as np
import pytest
import torch

from weightscope.comparison import block_of, split_block
from weightscope.core.comparator import compare_sources, find_most_changed_layers
from weightscope.errors import ComparisonError
from weightscope.sinks.files import to_strict


@pytest.fixture
def comparison(counting_source, gen):
    a = {f"model.layers.{i}.self_attn.q_proj.weight": torch.randn(16, 16, generator=gen) for i in range(6)}
    b = {k: t + 0.01 * torch.randn(16, 16, generator=gen) for k, t in a.items()}
    b["model.layers.3.self_attn.q_proj.weight"] = a["model.layers.3.self_attn.q_proj.weight"] * 0.2  # planted
    b["model.layers.5.self_attn.q_proj.weight"] = a["model.layers.5.self_attn.q_proj.weight"] * 3.0
    return compare_sources(counting_source(a), counting_source(b), methods=["basic_stats", "spectral"])


def test_planted_change_ranks_first(comparison):
    rows = find_most_changed_layers(comparison, top_k=3)
    assert [r[0] for r in rows[:2]] == ["model.layers.5.self_attn.q_proj", "model.layers.3.self_attn.q_proj"]
    layer, score, metrics = rows[0]
    assert score == metrics["relative_l2_distance"] == pytest.approx(2.0, rel=1e-6)
    assert len(find_most_changed_layers(comparison, top_k=None)) == 6
    assert find_most_changed_layers(comparison, top_k=0) == []


def test_by_names_any_numeric_metric(comparison):
    by_ratio = find_most_changed_layers(comparison, top_k=6, by="l2_norm_ratio")
    scores = [s for _, s, _ in by_ratio]
    assert scores == sorted(scores, reverse=True)
    # x0.2 is a larger change than x3 (|ln 0.2| > |ln 3|): a shrink is not ranked below growth.
    assert [r[0] for r in by_ratio[:2]] == ["model.layers.3.self_attn.q_proj", "model.layers.5.self_attn.q_proj"]
    smallest_cos = find_most_changed_layers(comparison, top_k=1, by="cosine_similarity", largest=False)
    assert smallest_cos[0][1] == min(m["cosine_similarity"] for m in comparison["layer_comparisons"].values())
    # A similarity ranks lowest first without being told.
    assert find_most_changed_layers(comparison, top_k=1, by="cosine_similarity") == smallest_cos
    assert find_most_changed_layers(comparison, top_k=1, by="update_rank_90")[0][1] >= 1
    with pytest.raises(ComparisonError, match="rank by one of"):
        find_most_changed_layers(comparison, by="no_such_metric")


def _layers(rows):
    return [r[0] for r in rows]


def test_inf_ranks_largest_and_undefined_scores_are_nan_and_last():
    c = {"layer_comparisons": {
        "nan": {"relative_l2_distance": float("nan")},
        "none": {"relative_l2_distance": None},
        "inf": {"relative_l2_distance": math.inf},
        "small": {"relative_l2_distance": 0.1},
        "neg_inf": {"relative_l2_distance": -math.inf},
        "missing": {},
        "big": {"relative_l2_distance": 0.9},
        "failed": {"relative_l2_distance": None, "error": "load failed"},
    }}
    rows = find_most_changed_layers(c, top_k=None)
    assert _layers(rows) == ["inf", "big", "small", "neg_inf", "nan", "none", "missing", "failed"]
    scores = [score for _, score, _ in rows]
    assert all(isinstance(score, float) for score in scores)  # never None
    assert scores[:4] == [math.inf, 0.9, 0.1, -math.inf] and all(math.isnan(x) for x in scores[4:])
    for _, score, _ in rows:
        f"{score:.4f}"  # the feature notes' loop formats every score
    smallest = find_most_changed_layers(c, top_k=None, largest=False)
    assert _layers(smallest) == ["neg_inf", "small", "big", "inf", "nan", "none", "missing", "failed"]
    assert _layers(find_most_changed_layers(c, top_k=2)) == ["inf", "big"]
    with pytest.raises(ComparisonError):
        find_most_changed_layers({"not": "a comparison"})


def _cond(t: torch.Tensor) -> float:
    """numpy float64 reference of the README's condition number: inf when σmin is at or below the rank tolerance."""
    s = np.linalg.svd(t.double().numpy().reshape(t.shape[0], -1), compute_uv=False)
    tol = s[0] * max(t.shape) * np.finfo(np.float64).eps
    return math.inf if s[-1] <= tol else float(s[0] / s[-1])


def test_a_matrix_that_became_singular_ranks_first_by_condition_number_ratio(counting_source, gen):
    a = {f"l{i}.weight": torch.randn(12, 12, generator=gen) for i in range(4)}
    b = {k: t + 0.05 * torch.randn(12, 12, generator=gen) for k, t in a.items()}
    b["l2.weight"] = a["l2.weight"].clone()
    b["l2.weight"][5] = 0.0  # a dead row: singular
    c = compare_sources(counting_source(a), counting_source(b), methods=["basic_stats", "spectral"])
    rows = find_most_changed_layers(c, top_k=None, by="condition_number_ratio")
    assert rows[0][0] == "l2" and rows[0][1] == math.inf and _cond(b["l2.weight"]) / _cond(a["l2.weight"]) == math.inf
    for layer, score, metrics in rows[1:]:
        ref = _cond(b[f"{layer}.weight"]) / _cond(a[f"{layer}.weight"])
        assert metrics["condition_number_ratio"] == pytest.approx(ref, rel=1e-6), layer
        assert score == pytest.approx(abs(math.log(ref)), rel=1e-5, abs=1e-9), layer  # a ratio scores |ln ratio|
    assert [s for _, s, _ in rows[1:]] == sorted((s for _, s, _ in rows[1:]), reverse=True)
    assert find_most_changed_layers(c, top_k=None, by="condition_number_ratio", largest=False)[-1][0] == "l2"


def test_ranking_works_on_the_json_round_trip(comparison):
    back = json.loads(json.dumps(to_strict(comparison), allow_nan=False))
    assert [r[0] for r in find_most_changed_layers(back)] == [r[0] for r in find_most_changed_layers(comparison)]


def test_summary_groups_by_block_and_module(comparison):
    s = comparison["summary"]
    assert list(s["by_block"]) == [f"layers.{i}" for i in range(6)]
    assert s["by_block"]["layers.5"]["relative_l2_distance"] == pytest.approx(2.0, rel=1e-6)
    assert list(s["by_module"]) == ["self_attn.q_proj"] and s["by_module"]["self_attn.q_proj"]["layers"] == 6
    assert s["by_module"]["self_attn.q_proj"]["max_score"] == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("name, expected", [
    ("transformer.h.3.attn.c_attn", ("h.3", "attn.c_attn")),
    ("model.layers.12.mlp.down_proj", ("layers.12", "mlp.down_proj")),
    ("encoder.layer.0.attention.self.query", ("encoder.layer.0", "attention.self.query")),
    ("transformer.wte", (None, "wte")),
    ("0", ("0", "0")),
])
def test_split_block(name, expected):
    assert split_block(name) == expected


@pytest.mark.parametrize("name, expected", [
    ("transformer.h.3.attn.c_attn.bias", "h.3"),
    ("transformer.wte", "wte"),
    ("transformer.ln_f.bias", "ln_f"),  # with its weight, as a block holds both
    ("lm_head", "lm_head"),
    ("model.embed_tokens", "embed_tokens"),
    ("bert.embeddings.LayerNorm", "bert.embeddings.LayerNorm"),
])
def test_block_of_names_a_group_for_every_layer(name, expected):
    assert block_of(name) == expected


def _two_sided(rows):
    return [(layer, score) for layer, score, _ in rows]


@pytest.fixture
def zero_sided(counting_source, gen):
    """'lora_B' starts all zeros and trains; 'pruned' is zeroed out; the rest drift a little."""
    a = {f"w{i}.weight": torch.randn(12, 8, generator=gen) for i in range(3)}
    a["lora_B.weight"] = torch.zeros(12, 4)
    a["pruned.weight"] = torch.randn(6, 8, generator=gen)
    b = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in a.items()}
    b["w1.weight"] = -a["w1.weight"]  # anti-parallel: cosine -1, the lowest a defined cosine goes
    b["lora_B.weight"] = 0.02 * torch.randn(12, 4, generator=gen)
    b["pruned.weight"] = torch.zeros(6, 8)
    return a, b, compare_sources(counting_source(a), counting_source(b))


def _np_cos(x: torch.Tensor, y: torch.Tensor) -> float:
    u, v = x.double().numpy().ravel(), y.double().numpy().ravel()
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return float(u @ v / (nu * nv)) if nu > 0 and nv > 0 else math.nan


def test_a_layer_with_one_all_zero_side_ranks_first_by_cosine(zero_sided):
    a, b, c = zero_sided
    cos = {k.removesuffix(".weight"): _np_cos(a[k], b[k]) for k in a}
    assert math.isnan(cos["lora_B"]) and math.isnan(cos["pruned"])  # no direction to compare
    defined = sorted((k for k in cos if not math.isnan(cos[k])), key=cos.get)
    assert defined[0] == "w1"
    for largest in (None, False):  # the default direction of a similarity, and the documented explicit one
        rows = find_most_changed_layers(c, top_k=None, by="cosine_similarity", largest=largest)
        assert [r[0] for r in rows] == ["lora_B", "pruned", *defined]
        assert [r[1] for r in rows[:2]] == [-math.inf, -math.inf]  # beyond every cosine, in model order
        for layer, score, metrics in rows[2:]:
            assert score == metrics["cosine_similarity"] == pytest.approx(cos[layer], abs=1e-12)
        assert math.isnan(rows[0][2]["cosine_similarity"])  # the metric itself stays NaN


def test_a_layer_with_nan_weights_still_ranks_last_by_cosine(counting_source, gen):
    a = {"ok.weight": torch.randn(6, 6, generator=gen), "bad.weight": torch.randn(6, 6, generator=gen),
         "grown.weight": torch.zeros(6, 6)}
    b = {"ok.weight": a["ok.weight"] + 0.1, "bad.weight": a["bad.weight"].clone(), "grown.weight": torch.ones(6, 6)}
    b["bad.weight"][0, 0] = float("nan")
    c = compare_sources(counting_source(a), counting_source(b))
    rows = find_most_changed_layers(c, top_k=None, by="cosine_similarity")
    assert [r[0] for r in rows] == ["grown", "ok", "bad"] and math.isnan(rows[-1][1])


def test_zero_sided_layers_rank_first_after_a_json_round_trip(zero_sided):
    _, _, c = zero_sided
    back = json.loads(json.dumps(to_strict(c), allow_nan=False))
    lora = back["layer_comparisons"]["lora_B"]
    assert lora["relative_l2_distance"] is None and lora["cosine_similarity"] is None  # inf / NaN -> null
    assert find_most_changed_layers(back, top_k=1)[0][:2] == ("lora_B", math.inf)
    assert _two_sided(find_most_changed_layers(back, top_k=None, by="cosine_similarity")) == \
        _two_sided(find_most_changed_layers(c, top_k=None, by="cosine_similarity"))
    for by in ("l2_norm_ratio", "norm_change"):
        assert find_most_changed_layers(back, top_k=1, by=by)[0][:2] == ("lora_B", math.inf), by


def test_l2_norm_ratio_ranks_the_size_of_the_change_either_way(counting_source, gen):
    factors = {"halved": 0.5, "doubled": 2.0, "grew_1pct": 1.01, "shrank_10pct": 0.9, "same": 1.0}
    a = {f"{k}.weight": torch.randn(10, 10, generator=gen) for k in factors}
    a["from_zero.weight"] = torch.zeros(10, 10)
    a["vanished.weight"] = torch.randn(10, 10, generator=gen)
    b = {f"{k}.weight": a[f"{k}.weight"] * f for k, f in factors.items()}
    b["from_zero.weight"] = torch.randn(10, 10, generator=gen)
    b["vanished.weight"] = torch.zeros(10, 10)
    c = compare_sources(counting_source(a), counting_source(b))
    ratio = {k.removesuffix(".weight"): np.linalg.norm(b[k].double().numpy()) / np.linalg.norm(a[k].double().numpy())
             if a[k].any() else math.inf for k in a}
    rows = find_most_changed_layers(c, top_k=None, by="l2_norm_ratio")
    assert [r[0] for r in rows[:2]] == ["from_zero", "vanished"] and [r[1] for r in rows[:2]] == [math.inf] * 2
    assert {r[0] for r in rows[2:4]} == {"halved", "doubled"}
    assert rows[2][1] == pytest.approx(rows[3][1], rel=1e-6) == pytest.approx(math.log(2), rel=1e-6)
    assert [r[0] for r in rows[4:]] == ["shrank_10pct", "grew_1pct", "same"]
    for layer, score, metrics in rows:
        assert metrics["l2_norm_ratio"] == pytest.approx(ratio[layer], rel=1e-6)  # the value stays the ratio
        if math.isfinite(score):
            assert score == pytest.approx(abs(math.log(ratio[layer])), rel=1e-5, abs=1e-9)
    least = find_most_changed_layers(c, top_k=None, by="l2_norm_ratio", largest=False)
    assert [r[0] for r in least[:2]] == ["same", "grew_1pct"]


def test_signed_diffs_rank_by_size(counting_source, gen):
    base = torch.randn(20, 20, generator=gen)
    a = {"up.weight": base, "down.weight": base.clone(), "flat.weight": base.clone()}
    b = {"up.weight": base + 0.1, "down.weight": base - 0.5, "flat.weight": base + 0.001}
    c = compare_sources(counting_source(a), counting_source(b))
    rows = find_most_changed_layers(c, top_k=None, by="mean_diff")
    want = {k.removesuffix(".weight"): float(b[k].double().mean() - a[k].double().mean()) for k in a}
    assert [r[0] for r in rows] == sorted(want, key=lambda k: abs(want[k]), reverse=True) == ["down", "up", "flat"]
    for layer, score, metrics in rows:
        assert score == pytest.approx(abs(want[layer]), rel=1e-6)
        assert metrics["mean_diff"] == pytest.approx(want[layer], rel=1e-6)  # the signed value is kept


def test_zero_sided_matrices_rank_first_by_spectral_ratios_live_and_from_a_file(counting_source, gen):
    a = {"w.weight": torch.randn(12, 8, generator=gen), "lora_B.weight": torch.zeros(12, 4),
         "pruned.weight": torch.randn(6, 8, generator=gen)}
    b = {"w.weight": a["w.weight"] * 1.5, "lora_B.weight": 0.02 * torch.randn(12, 4, generator=gen),
         "pruned.weight": torch.zeros(6, 8)}
    c = compare_sources(counting_source(a), counting_source(b), methods=["basic_stats", "spectral"])
    back = json.loads(json.dumps(to_strict(c), allow_nan=False))
    s_w = np.linalg.svd(a["w.weight"].double().numpy(), compute_uv=False)
    for by in ("max_singular_value_ratio", "condition_number_ratio"):
        for comparison in (c, back):
            rows = find_most_changed_layers(comparison, top_k=None, by=by)
            assert [r[0] for r in rows] == ["lora_B", "pruned", "w"], (by, rows)
            assert [r[1] for r in rows[:2]] == [math.inf, math.inf]
    # The trained layer's own scores: |ln 1.5| for the top singular value, 0 for the conditioning.
    w = find_most_changed_layers(back, top_k=None, by="max_singular_value_ratio")[2]
    assert w[1] == pytest.approx(math.log(1.5), rel=1e-6) and w[2]["max_singular_value_ratio"] == pytest.approx(
        (1.5 * s_w[0]) / s_w[0], rel=1e-6)
