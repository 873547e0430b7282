"""Weights & Biases: scalars, histograms and alerts of snapshot records.

The step goes *into the row* (``trainer/global_step`` for Lightning,
``train/global_step`` for the HF ``Trainer``, ``weightscope/step`` otherwise)
rather than ``run.log(step=...)``: W&B drops rows whose ``step`` is behind the
run's, and a run shared with a trainer is always ahead of a snapshot analysed
in the background. Offline and disabled runs take the same calls.
``wandb`` is imported only here, and only when used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..errors import WeightScopeError
from ..monitor.naming import (
    DRIFT_PREFIX,
    HISTOGRAM_SECTION,
    STAT_PREFIX,
    SUMMARY_SECTION,
    histogram_name,
    wandb_key,
    wandb_keys,
)

log = logging.getLogger(__name__)

#: Seconds W&B waits before sending another alert with the same title.
DEFAULT_WAIT_DURATION = 300
OWN_STEP_KEY = "weightscope/step"


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise WeightScopeError("the wandb sink needs wandb: pip install 'weightscope[wandb]'") from exc
    return wandb


def histogram_values(histograms: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    wandb = _wandb()
    return {wandb_key(histogram_name(layer)): wandb.Histogram(np_histogram=(list(h["counts"]), list(h["edges"])))
            for layer, h in histograms.items()}


def send_alert(run: Any, alert: Any, wait_duration: int = DEFAULT_WAIT_DURATION) -> None:
    wandb = _wandb()
    level = getattr(wandb.AlertLevel, str(alert.level).upper(), wandb.AlertLevel.WARN)
    run.alert(title=alert.title, text=alert.message, level=level, wait_duration=wait_duration)


def log_record(
    run: Any,
    record: Any,
    *,
    step_key: str = OWN_STEP_KEY,
    scalars: bool = True,
    histograms: bool = True,
    alerts: bool = True,
    wait_duration: int = DEFAULT_WAIT_DURATION,
) -> None:
    """One row with the record's scalars (and histograms) plus ``step_key``; one ``run.alert`` per alert.

    Keys are the chart names with the layers' dots as ``/`` (:func:`~weightscope.monitor.naming.wandb_key`).
    """
    row: dict[str, Any] = {}
    if scalars:
        row.update(wandb_keys(record.scalars()))
    if histograms and record.histograms:
        row.update(histogram_values(record.histograms))
    if row:
        row[step_key] = record.step
        run.log(row)
    if alerts:
        for alert in record.alerts:
            send_alert(run, alert, wait_duration)


def define_step_metric(run: Any, step_key: str = OWN_STEP_KEY) -> None:
    """Chart WeightScope's sections against ``step_key`` rather than W&B's own row counter."""
    run.define_metric(step_key)
    for section in (STAT_PREFIX, DRIFT_PREFIX, HISTOGRAM_SECTION, SUMMARY_SECTION + "/"):
        run.define_metric(f"{section}*", step_metric=step_key)


class WandbSink:
    """Logs to ``run``, else the active ``wandb.run``, else a run it starts with ``init_kwargs``."""

    def __init__(self, run: Any = None, *, step_key: str | None = None, histograms: bool = True,
                 wait_duration: int = DEFAULT_WAIT_DURATION, **init_kwargs: Any) -> None:
        wandb = _wandb()
        self._owned = False
        if run is None:
            run = wandb.run
        if run is None:
            init_kwargs.setdefault("project", "weightscope")
            run = wandb.init(**init_kwargs)
            self._owned = True
        self.run = run
        self.histograms = histograms
        self.wait_duration = wait_duration
        self.step_key = step_key or OWN_STEP_KEY
        if step_key is None:
            define_step_metric(run, self.step_key)

    def write(self, record: Any) -> None:
        log_record(self.run, record, step_key=self.step_key, histograms=self.histograms,
                   wait_duration=self.wait_duration)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._owned:
            self.run.finish()
