"""Read back what the sinks wrote: TensorBoard event files and offline W&B run files."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7  # ":W&B" ident, magic (u16), version (u8)
REC_HEADER = 7  # crc32 (u32), length (u16), type (u8)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: str | Path) -> list[Any]:
    """Every ``Record`` of an offline ``.wandb`` file (a LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, _magic, _version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B", ident
    out, pos, parts = [], HEADER, []
    while pos + REC_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < REC_HEADER:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + REC_HEADER])
        if kind == 0 and length == 0:
            pos += left  # zero padding to the end of the block
            continue
        payload = data[pos + REC_HEADER:pos + REC_HEADER + length]
        pos += REC_HEADER + length
        if kind == FULL:
            parts = [payload]
        elif kind == FIRST:
            parts = [payload]
            continue
        elif kind == MIDDLE:
            parts.append(payload)
            continue
        elif kind == LAST:
            parts.append(payload)
        else:
            raise ValueError(f"bad record type {kind} at {pos}")
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(b"".join(parts))
        out.append(rec)
    return out


def wandb_history(path: str | Path) -> list[dict[str, Any]]:
    """History rows as dicts (values JSON-decoded)."""
    rows = []
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def wandb_alerts(path: str | Path) -> list[Any]:
    return [rec.alert for rec in wandb_records(path) if rec.WhichOneof("record_type") == "alert"]


def find_wandb_file(root: str | Path) -> Path:
    files = sorted(Path(root).rglob("*.wandb"))
    assert len(files) == 1, files
    return files[0]


def tb_scalars(log_dir: str | Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value over every event file under ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                out.setdefault(tag, {})[ev.step] = ev.value
    return out


def tb_accumulators(log_dir: str | Path) -> list[Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0, "histograms": 0})
        acc.Reload()
        accs.append(acc)
    return accs


def tb_texts(log_dir: str | Path) -> dict[int, str]:
    """step -> text logged under the alert tag (the text plugin stores tensors)."""
    out: dict[int, str] = {}
    for acc in tb_accumulators(log_dir):
        for tag in acc.Tags().get("tensors", []):
            if tag.startswith("weightscope/alerts"):
                for ev in acc.Tensors(tag):
                    out[ev.step] = out.get(ev.step, "") + b"".join(ev.tensor_proto.string_val).decode()
    return out


def tb_histogram_steps(log_dir: str | Path) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for acc in tb_accumulators(log_dir):
        for tag in acc.Tags().get("histograms", []):
            out.setdefault(tag, []).extend(ev.step for ev in acc.Histograms(tag))
    return out
