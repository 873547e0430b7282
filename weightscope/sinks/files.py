"""Atomic, strict-JSON and tabular file writers used by every command."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WeightScopeError


def to_strict(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars that slipped through
        return to_strict(obj.item())
    return obj


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then rename into place, so a reader never sees half a file."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise WeightScopeError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file 0600; give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    text = json.dumps(to_strict(obj), indent=indent, allow_nan=False)
    return atomic_write(path, lambda p: p.write_text(text + "\n", encoding="utf-8"))


def write_table(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame as .csv or .parquet, chosen by the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return atomic_write(path, lambda p: frame.to_csv(p, index=False))
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:
            raise WeightScopeError("writing .parquet needs pyarrow: pip install 'weightscope[pandas]'") from exc
        return atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    raise WeightScopeError(f"unsupported table format {suffix!r}: use .json, .csv or .parquet")


def is_table_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".csv", ".parquet")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WeightScopeError(f"no such file: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightScopeError(f"{path} is not valid JSON: {exc}") from exc
