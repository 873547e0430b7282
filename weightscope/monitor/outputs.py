"""What the monitor hands out: its sinks, its cost figures, its one-time warnings."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sinks.jsonl import HISTORY_NAME, JsonlSink


def open_sink(spec: Any, output_dir: Path, *, histograms: bool) -> Any:
    """A sink object for a parsed sink spec (see ``config.parse_sink``); objects pass through.

    TensorBoard and W&B are imported here, only when asked for.
    """
    if not isinstance(spec, tuple):
        return spec
    kind, arg = spec
    if kind == "jsonl":
        return JsonlSink(Path(arg) if arg else output_dir / HISTORY_NAME)
    if kind == "tensorboard":
        from ..sinks.tensorboard import TensorBoardSink

        return TensorBoardSink(Path(arg) if arg else output_dir / "tensorboard", histograms=histograms)
    from ..sinks.wandb import WandbSink

    return WandbSink(histograms=histograms)


@dataclass
class MonitorStats:
    """What monitoring cost. ``blocking_s``: per snapshot, how long the training loop waited for the copy."""

    snapshots: int = 0
    skipped: int = 0
    blocking_s: list[float] = field(default_factory=list)
    analysis_s: list[float] = field(default_factory=list)
    logging_s: list[float] = field(default_factory=list)
    snapshot_bytes: int = 0
    #: CPU seconds the analysis thread used, all snapshots together.
    analysis_cpu_s: float = 0.0
    #: How long :meth:`WeightMonitor.close` waited for the last analyses (the end of training waits that long).
    close_wait_s: float = 0.0
    #: How long :meth:`WeightMonitor.start` analysed the baseline on the training thread (CPU weights only).
    start_wait_s: float = 0.0

    @property
    def mean_blocking_s(self) -> float:
        return sum(self.blocking_s) / len(self.blocking_s) if self.blocking_s else 0.0

    @property
    def max_blocking_s(self) -> float:
        return max(self.blocking_s, default=0.0)

    @property
    def mean_analysis_s(self) -> float:
        return sum(self.analysis_s) / len(self.analysis_s) if self.analysis_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "snapshots": self.snapshots, "skipped": self.skipped, "snapshot_bytes": self.snapshot_bytes,
            "mean_blocking_s": self.mean_blocking_s, "max_blocking_s": self.max_blocking_s,
            "mean_analysis_s": self.mean_analysis_s, "total_logging_s": sum(self.logging_s),
            "analysis_cpu_s": self.analysis_cpu_s, "close_wait_s": self.close_wait_s,
            "start_wait_s": self.start_wait_s,
        }


class Once:
    """Log each distinct problem once: a failing sink must not flood the training log."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def warn(self, key: str, msg: str, *args: Any) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        self._log.warning(msg + " (reported once; monitoring goes on)", *args)
