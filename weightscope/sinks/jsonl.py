"""JSONL history: one strict-JSON line per snapshot, appended as training goes.

Each line is written whole and flushed, so a crash leaves at most a missing
last line, never a torn one in the middle; :func:`read_jsonl` skips a torn
last line should a kill land mid-write.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import WeightScopeError
from .files import to_strict

log = logging.getLogger(__name__)

HISTORY_NAME = "weightscope.jsonl"


class JsonlSink:
    """Appends ``record.to_json_dict()`` of each snapshot record to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")

    def write(self, record: Any) -> None:
        self.write_dict(record.to_json_dict())

    def write_dict(self, data: dict[str, Any]) -> None:
        if self._fh is None:
            raise WeightScopeError(f"{self.path}: JSONL history is closed")
        self._fh.write(json.dumps(to_strict(data), allow_nan=False, separators=(",", ":")) + "\n")
        self._fh.flush()

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a history file, in order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise WeightScopeError(f"no such file: {path}") from exc
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a torn last line", path)
                return
            raise WeightScopeError(f"{path}:{i + 1} is not valid JSON: {exc}") from exc
