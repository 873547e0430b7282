"""JSONL history: one strict-JSON line per snapshot, appended as training goes.

Each line is written whole and flushed, so a crash leaves at most a missing
last line, never a torn one in the middle; :func:`read_jsonl` skips a torn
last line should a kill land mid-write.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import WeightScopeError
from .files import to_strict

log = logging.getLogger(__name__)

HISTORY_NAME = "weightscope.jsonl"


class JsonlSink:
    """Appends ``record.to_json_dict()`` of each snapshot record to ``path``."""

    def __init__(self, path: str | Path, *, fresh: bool = False) -> None:
        """``fresh=True`` starts the file anew (a replay writes a whole history, as ``--output`` a whole
        file); otherwise records are appended, as training and its resumes go."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._fh = self.path.open("w", encoding="utf-8")
            return
        self._set_aside_torn_tail()
        self._fh = self.path.open("a", encoding="utf-8")

    def _set_aside_torn_tail(self) -> None:
        """A run killed mid-write leaves a last line without its newline: appending to it would
        make it a bad line in the middle of the file. It goes to the superseded file instead."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        with self.superseded_path.open("ab") as fh:
            fh.write(data[cut:] + b"\n")
        with self.path.open("r+b") as fh:
            fh.truncate(cut)

    @property
    def superseded_path(self) -> Path:
        return self.path.with_name(self.path.name + ".superseded")

    def rewind(self, step: int) -> int:
        """Move the records of steps after ``step`` to ``<name>.superseded``; returns how many.

        Training resumed from a checkpoint at ``step`` replaces what the history
        holds beyond it (as TensorBoard drops orphaned events on such a restart);
        the replaced records are kept aside, appended to the superseded file.
        Lines are handled as bytes: one that is not a UTF-8 JSON record stays in place.
        """
        if self._fh is None:
            raise WeightScopeError(f"{self.path}: JSONL history is closed")
        self._fh.flush()
        keep: list[bytes] = []
        moved: list[bytes] = []
        for line in self.path.read_bytes().splitlines(keepends=True):
            try:
                rec_step = json.loads(line).get("step")
            except (ValueError, AttributeError):  # JSON and UTF-8 errors are ValueErrors
                keep.append(line)  # not a record: a header or a line of the user's, left in place
                continue
            later = isinstance(rec_step, int) and not isinstance(rec_step, bool) and rec_step > step
            (moved if later else keep).append(line)
        if not moved:
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(b"".join(keep))
        self._fh.close()
        try:
            os.replace(tmp, self.path)
        finally:  # the history stays writable whatever happened
            self._fh = self.path.open("a", encoding="utf-8")
        with self.superseded_path.open("ab") as fh:  # only once they are out of the history
            fh.writelines(moved)
        return len(moved)

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
