"""One analysed snapshot: what every sink writes and the JSONL history holds, one line each."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..sinks.files import to_strict
from .alerts import Alert
from .naming import scalar_metrics

RECORD_FORMAT = "weightscope.snapshot/1"


@dataclass
class SnapshotRecord:
    """Scan results, diffs and alerts of the weights at one optimizer step.

    ``kind`` is ``baseline`` (the first snapshot), ``periodic``, ``final`` or
    ``resume``. ``histograms`` maps a layer to the summary a histogram sink
    needs (``min``, ``max``, ``num``, ``sum``, ``sum_squares``, ``edges``,
    ``counts``), so no sink ever holds the weights themselves.
    """

    step: int
    kind: str
    results: Mapping[str, Mapping[str, Any]]
    diff_prev: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    diff_base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    prev_step: int | None = None
    base_step: int | None = None
    methods: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Chart name -> value, as every scalar sink logs them (see :mod:`weightscope.monitor.naming`)."""
        return scalar_metrics(self.results, self.diff_prev, self.diff_base, self.summary)

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON form (NaN/Inf become null), one JSONL line."""
        return to_strict({
            "format": RECORD_FORMAT,
            "step": self.step,
            "kind": self.kind,
            "prev_step": self.prev_step,
            "base_step": self.base_step,
            "methods": self.methods,
            "summary": self.summary,
            "alerts": [a.to_dict() for a in self.alerts],
            "layers": dict(self.results),
            "diff_prev": dict(self.diff_prev),
            "diff_base": dict(self.diff_base),
            "timing": self.timing,
        })

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SnapshotRecord:
        return cls(
            step=int(data["step"]),
            kind=str(data.get("kind", "periodic")),
            results=data.get("layers", {}),
            diff_prev=data.get("diff_prev", {}),
            diff_base=data.get("diff_base", {}),
            alerts=[Alert.from_dict(a) for a in data.get("alerts", [])],
            summary=dict(data.get("summary", {})),
            prev_step=data.get("prev_step"),
            base_step=data.get("base_step"),
            methods=list(data.get("methods", [])),
            timing=dict(data.get("timing", {})),
        )


def _global_drift(diff: Mapping[str, Mapping[str, Any]]) -> float | None:
    """||W - W_ref|| / ||W_ref|| over all layers at once (their concatenation), not a mean of ratios."""
    num = den = 0.0
    for metrics in diff.values():
        dist, ref = metrics.get("l2_distance"), metrics.get("model1_l2_norm")
        if isinstance(dist, (int, float)) and isinstance(ref, (int, float)):
            num += float(dist) ** 2
            den += float(ref) ** 2
    return math.sqrt(num) / math.sqrt(den) if den > 0 else None


def summarize(
    results: Mapping[str, Mapping[str, Any]],
    diff_prev: Mapping[str, Mapping[str, Any]],
    diff_base: Mapping[str, Mapping[str, Any]],
    alerts: list[Alert],
    layers_alerting: int,
) -> dict[str, Any]:
    """The run-wide numbers charted under ``weightscope/``."""
    conds = [c for m in results.values()
             if isinstance(c := m.get("spectral", {}).get("condition_number"), (int, float)) and not math.isnan(c)]
    nonfinite = sum(
        1 for m in results.values()
        if (m.get("basic_stats", {}).get("nan_count") or 0) or (m.get("basic_stats", {}).get("inf_count") or 0)
    )
    out: dict[str, Any] = {
        "max_condition_number": max(conds) if conds else None,
        "global_drift": _global_drift(diff_prev),
        "global_drift_from_start": _global_drift(diff_base),
        "layers_alerting": layers_alerting,
        "alerts": len(alerts),
        "nonfinite_layers": nonfinite,
        "layers": len(results),
    }
    return {k: v for k, v in out.items() if v is not None}
