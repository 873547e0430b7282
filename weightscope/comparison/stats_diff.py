"""Comparison metrics that need only each side's per-tensor stats, not the tensors.

These work from saved scan results as well as from a live scan, so both paths
of the comparator share them. Differences are model2 − model1, ratios
model2 / model1; a metric either side lacks (method not run, failed, or an
older results file) is None, never 0.
"""

from __future__ import annotations

import math
from typing import Any

#: method -> (output key, stat key, "diff" or "ratio"), for methods run on both sides.
STATS_METRICS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "basic_stats": (
        ("mean_diff", "mean", "diff"),
        ("std_diff", "std", "diff"),
        ("l2_norm_ratio", "l2_norm", "ratio"),
    ),
    "spectral": (
        ("condition_number_ratio", "condition_number", "ratio"),
        ("stable_rank_diff", "stable_rank", "diff"),
        ("max_singular_value_ratio", "max_singular_value", "ratio"),
    ),
    "quantization": (
        ("extreme_outlier_percentage_diff", "extreme_outlier_percentage", "diff"),
        ("sqnr_db_diff", "sqnr_db", "diff"),
    ),
    "esd": (("alpha_diff", "alpha", "diff"),),
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _combine(v1: float | None, v2: float | None, how: str) -> float | None:
    """None when a side lacks the stat; otherwise a float, as the tensor metrics are: a ratio
    0/0 is 1.0 (no change), x/0 is inf (left zero, ranks first), and NaN (inf - inf, a side
    with NaN) is NaN, which ranks last."""
    if v1 is None or v2 is None:
        return None
    if how == "diff":
        return v2 - v1 if not (math.isinf(v1) and v1 == v2) else 0.0
    if v1 == v2:
        return 1.0  # inf/inf (singular on both sides) and 0/0 included: no change
    if v1 == 0:
        return 1.0 if v2 == 0 else (math.inf if v2 > 0 else math.nan)
    return v2 / v1


def stat(stats: dict[str, Any] | None, method: str, key: str) -> float | None:
    """``stats[method][key]`` as a float, or None when missing, failed or not numeric."""
    res = (stats or {}).get(method)
    return _number(res.get(key)) if isinstance(res, dict) else None


def stats_metrics(stats1: dict[str, Any] | None, stats2: dict[str, Any] | None, methods: list[str]) -> dict[str, Any]:
    """The keys of :data:`STATS_METRICS` for ``methods``, from two ``method -> metrics`` dicts."""
    out: dict[str, Any] = {}
    for method in methods:
        for out_key, key, how in STATS_METRICS.get(method, ()):
            out[out_key] = _combine(stat(stats1, method, key), stat(stats2, method, key), how)
    if "basic_stats" in methods and (_nonfinite(stats1) or _nonfinite(stats2)):
        # basic_stats skip NaN/Inf weights, so their norms would call a layer that broke "unchanged";
        # NaN, as the tensor comparison gives for such a pair (the weights are what is wrong).
        for out_key, _, _ in STATS_METRICS["basic_stats"]:
            if out[out_key] is not None:
                out[out_key] = math.nan
    return out


def _nonfinite(stats: dict[str, Any] | None) -> bool:
    return bool((stat(stats, "basic_stats", "nan_count") or 0) + (stat(stats, "basic_stats", "inf_count") or 0))


def norm_change(metrics: dict[str, Any], std1: float | None = None) -> float | None:
    """Fallback change score from stats: |‖B‖/‖A‖ − 1|, else |Δstd| / std(A).

    By the triangle inequality |‖B‖ − ‖A‖| ≤ ‖B − A‖, so ``|l2_norm_ratio − 1|``
    is a lower bound of ``relative_l2_distance``: a pure rotation scores 0 here.
    """
    ratio = _number(metrics.get("l2_norm_ratio"))
    if ratio is not None:
        return abs(ratio - 1.0)
    std_diff = _number(metrics.get("std_diff"))
    if std_diff is not None and std1:
        return abs(std_diff) / std1
    return None
