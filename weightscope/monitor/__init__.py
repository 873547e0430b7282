"""Monitoring during training: snapshots, background analysis, drift, alerts, sinks.

Framework-free; the Lightning and Hugging Face callbacks in
:mod:`weightscope.callbacks` are thin adapters over :class:`WeightMonitor`.
The alert rules (:mod:`.alerts`), the naming scheme (:mod:`.naming`) and the
snapshot record (:mod:`.record`) are pure and serve scans of saved
checkpoints too.
"""

from __future__ import annotations

from .alerts import DEFAULT_RULES, Alert, AlertState, Rule, evaluate_alerts, resolve_rules
from .config import DEFAULT_METHODS, MonitorConfig
from .monitor import MonitorStats, WeightMonitor
from .record import SnapshotRecord, summarize

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_RULES",
    "Alert",
    "AlertState",
    "MonitorConfig",
    "MonitorStats",
    "Rule",
    "SnapshotRecord",
    "WeightMonitor",
    "evaluate_alerts",
    "resolve_rules",
    "summarize",
]
