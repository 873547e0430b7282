import json
import math

import numpy as np
import pytest
import torch

from weightscope.comparison import split_block
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
    ratios = [s for _, s, _ in by_ratio]
    assert ratios == sorted(ratios, reverse=True) and by_ratio[-1][0].startswith("model.layers.3")
    smallest_cos = find_most_changed_layers(comparison, top_k=1, by="cosine_similarity", largest=False)
    assert smallest_cos[0][1] == min(m["cosine_similarity"] for m in comparison["layer_comparisons"].values())
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
    assert rows[0][0] == "l2" and rows[0][1] == math.inf == _cond(b["l2.weight"]) / _cond(a["l2.weight"])
    for layer, score, _ in rows[1:]:
        ref = _cond(b[f"{layer}.weight"]) / _cond(a[f"{layer}.weight"])
        assert score == pytest.approx(ref, rel=1e-6), layer
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
