"""The metric-naming scheme shared by every sink (TensorBoard, W&B, Lightning loggers).

One panel group per statistic, one chart per layer: W&B and TensorBoard both
make a section from the part of a name before the first ``/``, so the
statistic goes there and the layer after it.

============================================  =====================================================
name                                          value
============================================  =====================================================
``weights_<stat>/<layer>``                    a scan statistic, e.g. ``weights_condition_number/h.0.mlp``
``drift_<metric>/<layer>``                    vs the previous snapshot (``relative_l2_distance``, ...)
``drift_from_start_<metric>/<layer>``         vs the baseline (first) snapshot
``weights_histogram/<layer>``                 weight histogram (only with ``log_histograms=True``)
``weightscope/<summary>``                     run-wide: ``max_condition_number``, ``global_drift``, ...
============================================  =====================================================

``docs/monitoring.md`` has the full table; keep the two in step.

W&B gets the same names with the layer's dots as ``/``
(``weights_condition_number/h/0/mlp``, see :func:`wandb_key`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STAT_PREFIX = "weights_"
DRIFT_PREFIX = "drift_"
DRIFT_BASE_PREFIX = "drift_from_start_"
HISTOGRAM_SECTION = "weights_histogram"
SUMMARY_SECTION = "weightscope"
ALERT_TEXT_TAG = "weightscope/alerts"

#: Pair metrics charted per layer (all of them are in the JSONL history).
DRIFT_METRICS: tuple[str, ...] = ("relative_l2_distance", "cosine_similarity", "l2_norm_ratio")
#: Scan keys that describe the tensor rather than measure it: JSONL only.
_NOT_CHARTED = frozenset({"numel", "shape", "dtype", "error", "rows", "cols", "ndim"})


def stat_name(stat: str, layer: str) -> str:
    return f"{STAT_PREFIX}{stat}/{layer}"


def drift_name(metric: str, layer: str, *, from_start: bool = False) -> str:
    return f"{DRIFT_BASE_PREFIX if from_start else DRIFT_PREFIX}{metric}/{layer}"


def summary_name(name: str) -> str:
    return f"{SUMMARY_SECTION}/{name}"


def histogram_name(layer: str) -> str:
    return f"{HISTOGRAM_SECTION}/{layer}"


def wandb_key(name: str) -> str:
    """``name`` as W&B keys it: dots become ``/``.

    W&B reads ``.`` in a metric definition as nesting, and the definition our
    ``define_metric("weights_*", step_metric=...)`` glob makes for each key is
    named by the key itself: a dotted layer name would not match its own
    history column and its chart would lose the step axis (wandb issue #6659).
    Section names have no dots, so the section W&B makes is unchanged.
    """
    return name.replace(".", "/")


def wandb_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    return {wandb_key(k): v for k, v in values.items()}


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def stat_scalars(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``weights_<stat>/<layer>`` for every numeric scan metric.

    A statistic is named by its key alone; should two methods report the same
    key for a layer, the later one (in method order) is qualified as
    ``weights_<method>_<stat>``, so no value silently overwrites another.
    """
    out: dict[str, float] = {}
    for layer, methods in results.items():
        seen: set[str] = set()
        for method, metrics in methods.items():
            if not isinstance(metrics, Mapping):
                continue
            for key, value in metrics.items():
                num = _scalar(value)
                if num is None or key in _NOT_CHARTED:
                    continue
                stat = key if key not in seen else f"{method}_{key}"
                seen.add(key)
                out[stat_name(stat, layer)] = num
    return out


def drift_scalars(diff: Mapping[str, Mapping[str, Any]], *, from_start: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    for layer, metrics in diff.items():
        for metric in DRIFT_METRICS:
            num = _scalar(metrics.get(metric))
            if num is not None:
                out[drift_name(metric, layer, from_start=from_start)] = num
    return out


def summary_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    return {summary_name(k): num for k, v in summary.items() if (num := _scalar(v)) is not None}


def scalar_metrics(
    results: Mapping[str, Mapping[str, Any]],
    diff_prev: Mapping[str, Mapping[str, Any]],
    diff_base: Mapping[str, Mapping[str, Any]],
    summary: Mapping[str, Any],
) -> dict[str, float]:
    """Every scalar of one snapshot under its chart name (NaN and Inf kept: the charts show them)."""
    return {
        **stat_scalars(results),
        **drift_scalars(diff_prev),
        **drift_scalars(diff_base, from_start=True),
        **summary_scalars(summary),
    }

