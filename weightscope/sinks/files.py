"""Atomic, strict-JSON and tabular file writers used by every command."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WeightScopeError

#: What results files can be, by suffix: strict JSON, or a flattened table.
OUTPUT_SUFFIXES: tuple[str, ...] = (".json", ".csv", ".parquet")
_TABLE_SUFFIXES = (".csv", ".parquet")


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
    check_location(path)
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
    """Write a pandas DataFrame as .csv or .parquet, chosen by the suffix.

    Non-finite floats become empty cells / nulls, as in the JSON files: a
    reader should not have to know that ``inf`` means "undefined".
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise WeightScopeError(f"unsupported table format {suffix!r}: use {' or '.join(_TABLE_SUFFIXES)}")
    require_table_support(suffix)
    frame = strict_frame(frame)
    if suffix == ".csv":
        return atomic_write(path, lambda p: frame.to_csv(p, index=False))
    return atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def strict_frame(frame: Any) -> Any:
    """A copy of ``frame`` without ±inf: NaN in float columns (written as empty / null), None in cells."""
    import numpy as np

    out = frame.copy()
    for col in out.columns:
        column = out[col]
        if column.dtype.kind == "f":
            out[col] = column.where(np.isfinite(column))
        elif column.dtype == object:  # lists (shape, top singular values) and mixed cells
            out[col] = column.map(to_strict)
    return out


def is_table_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in _TABLE_SUFFIXES


def require_table_support(suffix: str) -> None:
    """Raise if the packages that write a ``suffix`` table are missing (checked without importing them)."""
    needed = ["pandas"] + (["pyarrow"] if suffix == ".parquet" else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise WeightScopeError(f"writing {suffix} needs {' and '.join(missing)}: pip install 'weightscope[pandas]'")


def check_location(path: Path) -> None:
    """Raise if ``path`` cannot be created as a file: a folder already, or its folder missing / read-only."""
    if path.is_dir():
        raise WeightScopeError(f"cannot write {path}: it is a folder; name a file in it, "
                               f"e.g. {path / ('results' + (path.suffix or '.json'))}")
    parent = path.parent
    if not parent.exists():
        raise WeightScopeError(f"cannot write {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise WeightScopeError(f"cannot write {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WeightScopeError(f"cannot write {path}: no permission to create files in {parent}")


def check_folder_path(path: str | Path, what: str) -> Path:
    """Raise unless ``path`` is a writable folder or can be made one, missing parents included.

    For outputs that are folders (TensorBoard logs, the demo's files), checked
    before the work that ends by writing there. Unlike a results file, whose
    folder must exist, a log folder is created as TensorBoard itself does.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it is" if existing == path else f"{existing} is"
        raise WeightScopeError(f"cannot write {what} to {path}: {where} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WeightScopeError(f"cannot write {what} to {path}: no permission to create files in {existing}")
    return path


def check_output_path(path: str | Path) -> Path:
    """Everything about a results path that can fail, checked before a long scan rather than after it."""
    path = Path(path)
    check_location(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        given = f"unsupported extension {suffix!r}" if suffix else "no extension"
        raise WeightScopeError(f"cannot write {path}: {given} (supported: {_suffix_list()})")
    if suffix in _TABLE_SUFFIXES:
        require_table_support(suffix)
    return path


def _suffix_list() -> str:
    return ", ".join(OUTPUT_SUFFIXES)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WeightScopeError(f"no such file: {path}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightScopeError(f"{path} is not valid JSON: {exc}") from exc
