"""TensorBoard: scalars, histograms and alert text of snapshot records.

The functions take any ``SummaryWriter``-like object (torch's, tensorboardX's,
or a Lightning ``TensorBoardLogger.experiment``), so the live monitor and a
scan of saved checkpoints write the same tags. Only :class:`TensorBoardSink`
imports ``torch.utils.tensorboard``, and only when constructed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightScopeError
from ..monitor.naming import ALERT_TEXT_TAG, histogram_name


def log_scalars(writer: Any, step: int, scalars: Mapping[str, float]) -> None:
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, global_step=step)


def log_histograms(writer: Any, step: int, histograms: Mapping[str, Mapping[str, Any]]) -> None:
    """``weights_histogram/<layer>`` from pre-binned summaries (``add_histogram_raw``: no weights kept)."""
    for layer, h in histograms.items():
        writer.add_histogram_raw(
            histogram_name(layer), min=h["min"], max=h["max"], num=h["num"], sum=h["sum"],
            sum_squares=h["sum_squares"], bucket_limits=list(h["edges"][1:]), bucket_counts=list(h["counts"]),
            global_step=step,
        )


def alerts_markdown(alerts: Iterable[Any]) -> str:
    rows = ["| level | rule | layer | message |", "|---|---|---|---|"]
    for a in alerts:
        message = str(a.message).replace("|", "\\|")
        rows.append(f"| {a.level} | {a.rule} | {a.layer or '-'} | {message} |")
    return "\n".join(rows)


def log_alerts(writer: Any, step: int, alerts: list[Any]) -> None:
    """Alerts of one step as one markdown table under ``weightscope/alerts`` (TensorBoard's Text tab)."""
    if alerts:
        writer.add_text(ALERT_TEXT_TAG, alerts_markdown(alerts), global_step=step)


def log_record(writer: Any, record: Any, *, scalars: bool = True, histograms: bool = True) -> None:
    """Everything of one snapshot record; ``scalars=False`` when a logger already wrote them."""
    if scalars:
        log_scalars(writer, record.step, record.scalars())
    if histograms and record.histograms:
        log_histograms(writer, record.step, record.histograms)
    log_alerts(writer, record.step, record.alerts)


class TensorBoardSink:
    """Writes records into a TensorBoard folder of its own (an event file beside any others there)."""

    def __init__(self, log_dir: str | Path, *, histograms: bool = True) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise WeightScopeError("the tensorboard sink needs tensorboard: pip install 'weightscope[tensorboard]'") \
                from exc
        self.log_dir = Path(log_dir)
        self.histograms = histograms
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, record: Any) -> None:
        log_record(self.writer, record, histograms=self.histograms)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

