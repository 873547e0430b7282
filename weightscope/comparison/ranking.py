"""Ranking layers of a comparison by how much they changed.

One rule for every metric: each layer gets a float *score*, rows come in
score order (largest first, or lowest first for a similarity), ``±inf``
rank as numbers and an undefined score (NaN) comes after them all. What the
score is depends on the kind of metric:

- a distance, percentage, rank or norm: the value itself;
- a ratio (model 2 / model 1, e.g. ``l2_norm_ratio``): ``|ln ratio|``, the
  size of the change either way, so 0.5 and 2.0 score alike and 0 (vanished)
  or ``inf`` (grew from zero) score ``inf``;
- a signed difference (``mean_diff``, ``stable_rank_diff``, ...): ``|diff|``;
- a similarity (``cosine_similarity``): the value, ranked lowest first.

A layer where exactly one side is all zeros has changed the most by the
metrics it leaves infinite or undefined (its cosine, its relative distance
and norm ratio from zero): they score as far as that metric goes
(``-inf`` for the cosine, ``inf`` for the others; for a matrix also
``max_singular_value_ratio`` and ``condition_number_ratio``), also when a
file holds ``null`` for them.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ComparisonError
from .stats_diff import STATS_METRICS

#: Default score when tensors were compared: ‖B − A‖ / ‖A‖.
TENSOR_SCORE = "relative_l2_distance"
#: Default score from stats alone: |‖B‖/‖A‖ − 1| (else |Δstd| / std(A)), a lower bound of the above.
STATS_SCORE = "norm_change"

#: Metrics where a lower value means *more* changed: ranked lowest first by default.
LOWEST_FIRST = frozenset({"cosine_similarity"})
#: Ratios model 2 / model 1, scored |ln ratio|.
RATIO_METRICS = frozenset(key for spec in STATS_METRICS.values() for key, _, how in spec if how == "ratio")
#: Signed differences model 2 − model 1, scored |diff|.
DIFF_METRICS = frozenset(key for spec in STATS_METRICS.values() for key, _, how in spec if how == "diff")
#: Metrics that a layer with exactly one all-zero side leaves inf or undefined: its score there.
_ZERO_SIDED = {"cosine_similarity": -math.inf, "relative_l2_distance": math.inf,
               "l2_norm_ratio": math.inf, "norm_change": math.inf}
#: Spectral ratios a zero side leaves inf (or 0, whose |ln| is inf): only for matrices, the tensors
#: spectra are computed for (a vector's are None, never measured).
_ZERO_SIDED_MATRIX = {"max_singular_value_ratio": math.inf, "condition_number_ratio": math.inf}


def score_metric(comparison: dict[str, Any]) -> str:
    """The metric :func:`find_most_changed_layers` ranks by when ``by`` is not given."""
    mode = comparison.get("mode")
    if mode == "tensors":
        return TENSOR_SCORE
    if mode == "stats":
        return STATS_SCORE
    layers = comparison.get("layer_comparisons") or {}
    has_tensor = any(_numeric(m.get(TENSOR_SCORE)) is not None for m in layers.values() if isinstance(m, dict))
    return TENSOR_SCORE if has_tensor else STATS_SCORE


def score_label(metric: str) -> str:
    """What the score of ``metric`` is, for a table header: ``"|ln l2_norm_ratio|"``, ``"|mean_diff|"``, ..."""
    if metric in RATIO_METRICS:
        return f"|ln {metric}|"
    if metric in DIFF_METRICS:
        return f"|{metric}|"
    return metric


def lowest_first(metric: str) -> bool:
    """Whether ``metric`` ranks lowest first by default (a similarity)."""
    return metric in LOWEST_FIRST


def _numeric(value: Any) -> float | None:
    """ints and floats (NaN/inf included) as float; None, bools and the rest as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _one_side_zero(metrics: dict[str, Any]) -> bool:
    """Both norms known and finite, exactly one of them 0 (the norms survive a file, unlike inf)."""
    na, nb = _numeric(metrics.get("model1_l2_norm")), _numeric(metrics.get("model2_l2_norm"))
    if na is None or nb is None or not (math.isfinite(na) and math.isfinite(nb)):
        return False
    return (na == 0) != (nb == 0)


def change_score(metrics: dict[str, Any], metric: str) -> float:
    """The score of one layer by ``metric`` (see the module docs); NaN when it is undefined."""
    value = _numeric(metrics.get(metric))
    if (value is None or math.isnan(value)) and _one_side_zero(metrics):
        if metric in _ZERO_SIDED:
            return _ZERO_SIDED[metric]
        if metric in _ZERO_SIDED_MATRIX and len(metrics.get("shape") or ()) >= 2:
            return _ZERO_SIDED_MATRIX[metric]
    if value is None:
        return math.nan
    if metric in RATIO_METRICS:
        # A ratio of norms or singular values is >= 0; a negative one (hand-made data) has no log.
        return abs(math.log(value)) if value > 0 else (math.inf if value == 0 else math.nan)
    if metric in DIFF_METRICS:
        return abs(value)
    return value


def layer_score(metrics: dict[str, Any], metric: str) -> float | None:
    """:func:`change_score`, with None for NaN (the summary leaves undefined scores out)."""
    score = change_score(metrics, metric)
    return None if math.isnan(score) else score


def find_most_changed_layers(
    comparison: dict[str, Any],
    top_k: int | None = 10,
    by: str | None = None,
    *,
    largest: bool | None = None,
) -> list[tuple[str, float, dict[str, Any]]]:
    """The ``top_k`` layers that changed most, as ``(layer, score, metrics)``, most changed first.

    ``comparison`` is what :func:`weightscope.core.comparator.compare_sources`
    returns (or that dict read back from JSON). ``by`` is any numeric
    per-layer metric (e.g. ``"l2_norm_ratio"``, ``"update_rank_90"``); by
    default ``relative_l2_distance`` when tensors were compared, else
    ``norm_change`` (= |l2_norm_ratio − 1|), the best that saved stats allow.

    The score is always a float, and rows come in score order. For a
    distance it is the metric itself; for a ratio it is ``|ln ratio|`` and for
    a signed difference ``|diff|`` (the size of the change either way: the
    signed value stays in ``metrics``); ``cosine_similarity`` is scored by
    itself and ranks lowest first. ``largest`` overrides that direction
    (None: the metric's own; True: largest score first; False: smallest).

    ``±inf`` rank as numbers: ``inf`` first (a layer that grew from all zeros,
    a matrix that became singular under ``by="condition_number_ratio"``). A
    layer where exactly one side is all zeros scores ``-inf`` by
    ``cosine_similarity`` (its cosine is NaN: no direction to compare) and
    ``inf`` by the distances and ratios that are inf or ``null`` for it, so
    it ranks first, also when read back from a file. A score that is
    undefined (NaN weights, a failed layer, a metric the layer lacks,
    ``null`` in a file otherwise) is ``float("nan")`` and comes after every
    number, in model order. ``top_k=None`` returns every layer.

    >>> comparison = {"layer_comparisons": {"a": {"relative_l2_distance": 0.1},
    ...                                      "b": {"relative_l2_distance": 0.5},
    ...                                      "c": {"relative_l2_distance": float("inf")}}}
    >>> [(layer, score) for layer, score, _ in find_most_changed_layers(comparison, top_k=2)]
    [('c', inf), ('b', 0.5)]
    """
    if not isinstance(comparison, dict) or not isinstance(comparison.get("layer_comparisons"), dict):
        raise ComparisonError("find_most_changed_layers needs a comparison dict (with 'layer_comparisons')")
    if top_k is not None and top_k < 0:
        raise ComparisonError(f"top_k must be >= 0 or None, got {top_k}")
    layers: dict[str, dict[str, Any]] = comparison["layer_comparisons"]
    metric = by or score_metric(comparison)
    if by is not None and layers and not any(_numeric(m.get(by)) is not None for m in layers.values()):
        available = sorted({k for m in layers.values() for k, v in m.items() if _numeric(v) is not None})
        raise ComparisonError(f"no layer has a numeric {by!r}; rank by one of: {', '.join(available)}")
    if largest is None:
        largest = not lowest_first(metric)
    sign = -1.0 if largest else 1.0
    rows = []
    for i, (layer, metrics) in enumerate(layers.items()):
        score = change_score(metrics, metric)
        # ±inf sort as numbers (sign · inf is ordered); NaN, whatever the direction, after them all.
        key = (1, 0.0, i) if math.isnan(score) else (0, sign * score, i)
        rows.append((key, layer, score, metrics))
    rows.sort(key=lambda r: r[0])
    chosen = rows if top_k is None else rows[:top_k]
    return [(layer, score, metrics) for _, layer, score, metrics in chosen]
