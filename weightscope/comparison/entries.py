"""Building the per-layer entries of a comparison from what was computed for a pair.

Every entry of ``layer_comparisons`` has the same keys whatever was
available, so tables and DataFrames line up: a metric that is not known
(no tensors, method not run) is None; one that could not be measured (a
pair that failed, non-finite weights) is NaN.
"""

from __future__ import annotations

import math
from typing import Any

from .pair_metrics import DIFF_KEYS
from .stats_diff import STATS_METRICS, norm_change, stat, stats_metrics
from .update_spectrum import UPDATE_KEYS

# Keys that stats can also provide when tensors are absent.
_BASIC = {"mean_diff", "std_diff", "l2_norm_ratio"}


def _shape(shape: Any) -> list[int] | None:
    return [int(s) for s in shape] if shape is not None else None


def layer_entry(
    *,
    shape: Any,
    dtype1: str | None,
    dtype2: str | None,
    stats1: dict[str, Any] | None,
    stats2: dict[str, Any] | None,
    methods: list[str],
    diff: dict[str, Any] | None = None,
    update: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``layer_comparisons`` entry for two tensors of the same shape.

    ``diff``/``update`` are the tensor-level metrics when both tensors were
    read; without them the stats give what they can (``mean_diff``,
    ``std_diff``, ``l2_norm_ratio``, norms) and the rest is None.
    """
    entry: dict[str, Any] = {
        "shape": _shape(shape), "dtype1": dtype1, "dtype2": dtype2, "tensors_compared": diff is not None,
    }
    from_stats = stats_metrics(stats1, stats2, ["basic_stats", *methods])
    if diff is not None:
        entry.update({k: diff.get(k) for k in DIFF_KEYS})
    else:
        entry.update({k: (from_stats.get(k) if k in _BASIC else None) for k in DIFF_KEYS})
        entry["model1_l2_norm"] = stat(stats1, "basic_stats", "l2_norm")
        entry["model2_l2_norm"] = stat(stats2, "basic_stats", "l2_norm")
    entry["norm_change"] = norm_change(entry, stat(stats1, "basic_stats", "std"))
    for method in methods:
        if method == "basic_stats":
            continue
        for key, _, _ in STATS_METRICS.get(method, ()):
            entry[key] = from_stats.get(key)
        if method == "spectral":
            entry.update({k: (update or {}).get(k) for k in UPDATE_KEYS})
            entry.update({k: v for k, v in (update or {}).items() if k in ("update_note", "update_error")})
    return entry


def mismatch_entry(
    *,
    shape1: Any,
    shape2: Any,
    dtype1: str | None,
    dtype2: str | None,
    stats1: dict[str, Any] | None,
    stats2: dict[str, Any] | None,
    methods: list[str],
    distribution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``shape_mismatches`` entry: distributions and spectra, side by side."""
    from_stats = stats_metrics(stats1, stats2, ["basic_stats", *methods])
    dist = distribution or {}
    entry: dict[str, Any] = {
        "shape1": _shape(shape1),
        "shape2": _shape(shape2),
        "dtype1": dtype1,
        "dtype2": dtype2,
        "tensors_compared": distribution is not None,
        "mean_diff": dist.get("mean_diff", from_stats.get("mean_diff")),
        "std_diff": dist.get("std_diff", from_stats.get("std_diff")),
        "wasserstein_distance": dist.get("wasserstein_distance"),
        "l2_norm_ratio": dist.get("l2_norm_ratio", from_stats.get("l2_norm_ratio")),
    }
    for method in methods:
        if method != "basic_stats":
            entry.update({key: from_stats.get(key) for key, _, _ in STATS_METRICS.get(method, ())})
    if "spectral" in methods:
        entry["spectra"] = {"model1": (stats1 or {}).get("spectral"), "model2": (stats2 or {}).get("spectral")}
    return entry


def error_entry(message: str, methods: list[str]) -> dict[str, Any]:
    """An entry for a pair that could not be compared: the usual keys plus ``error``. Its metrics
    are NaN (could not be measured, as a method that cannot run gives), so a check such as
    ``0.99 < entry["l2_norm_ratio"] < 1.01`` over every layer stays valid."""
    entry = layer_entry(shape=None, dtype1=None, dtype2=None, stats1=None, stats2=None, methods=methods)
    entry.update({k: math.nan for k, v in entry.items() if v is None and k not in _NOT_NUMBERS})
    entry["error"] = message
    return entry


#: Entry keys that are not measurements: left None in an error entry.
_NOT_NUMBERS = frozenset({"shape", "dtype1", "dtype2", "identical"})
