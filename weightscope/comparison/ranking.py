"""Ranking layers of a comparison by how much they changed."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ComparisonError

#: Default score when tensors were compared: ‖B − A‖ / ‖A‖.
TENSOR_SCORE = "relative_l2_distance"
#: Default score from stats alone: |‖B‖/‖A‖ − 1| (else |Δstd| / std(A)), a lower bound of the above.
STATS_SCORE = "norm_change"


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


def _numeric(value: Any) -> float | None:
    """ints and floats (NaN/inf included) as float; None, bools and the rest as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def layer_score(metrics: dict[str, Any], metric: str) -> float | None:
    """``metrics[metric]`` if it is a number other than NaN (±inf included), else None."""
    value = _numeric(metrics.get(metric))
    return value if value is not None and not math.isnan(value) else None


def find_most_changed_layers(
    comparison: dict[str, Any],
    top_k: int | None = 10,
    by: str | None = None,
    *,
    largest: bool = True,
) -> list[tuple[str, float, dict[str, Any]]]:
    """The ``top_k`` layers that changed most, as ``(layer, score, metrics)``, largest score first.

    ``comparison`` is what :func:`weightscope.core.comparator.compare_sources`
    returns (or that dict read back from JSON). The score is ``by``, any
    numeric per-layer metric (e.g. ``"l2_norm_ratio"``, ``"update_rank_90"``);
    by default ``relative_l2_distance`` when tensors were compared, else
    ``norm_change`` (= |l2_norm_ratio − 1|), the best that saved stats allow.

    The score is always a float: ``inf`` ranks as the largest value (a layer
    that grew from all zeros, a matrix that became singular under
    ``by="condition_number_ratio"``), so it comes first, or last among the
    numbers with ``largest=False``. A score that is undefined (NaN weights,
    a failed layer, a metric the layer lacks, ``null`` in a file) is
    ``float("nan")`` and comes after every number, in model order.
    ``largest=False`` ranks smallest first (e.g. ``by="cosine_similarity"``).
    ``top_k=None`` returns every layer.

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
    sign = -1.0 if largest else 1.0
    rows = []
    for i, (layer, metrics) in enumerate(layers.items()):
        raw = _numeric(metrics.get(metric))
        score = math.nan if raw is None else raw
        # ±inf sort as numbers (sign · inf is ordered); NaN, whatever the direction, after them all.
        key = (1, 0.0, i) if math.isnan(score) else (0, sign * score, i)
        rows.append((key, layer, score, metrics))
    rows.sort(key=lambda r: r[0])
    chosen = rows if top_k is None else rows[:top_k]
    return [(layer, score, metrics) for _, layer, score, metrics in chosen]
