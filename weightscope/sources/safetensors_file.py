"""One ``.safetensors`` file, memory-mapped.

Zero-copy: ``safe_open(..., framework="pt")`` builds every tensor as a slice
of one ``torch.UntypedStorage.from_file`` private mapping of the file (checked
with safetensors 0.8: one ``rw-p`` file mapping per handle, RssAnon does not
grow while tensors are read). Pages are file-backed and the kernel can drop
them, which is what keeps a GPT-2 scan far below the 400 MB budget. The
mapping is private, so a stray in-place write would copy a page into
anonymous memory rather than corrupt the file; nothing here writes.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import threading
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ..errors import SourceError
from .base import TensorRef, TensorSource

log = logging.getLogger(__name__)

# safetensors dtype tag -> torch dtype; tags the installed torch lacks are left out.
_DTYPE_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
    "BOOL": "bool", "C64": "complex64",
}  # fmt: skip
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    tag: getattr(torch, name) for tag, name in _DTYPE_NAMES.items() if hasattr(torch, name)
}
# safetensors itself refuses larger headers; a bigger length means "not this format".
MAX_HEADER_BYTES = 100_000_000


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """Entries of a safetensors header, in header order, checked against the file size.

    Layout: 8-byte little-endian header length N, N bytes of JSON
    ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
    then the data; offsets count from the first byte after the header.
    ``safe_open`` validates too, but does not expose the offsets (needed for
    tie detection) and its messages do not say which tensor is cut off.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise SourceError(f"{path}: not a safetensors file ({size} bytes, too short for a header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise SourceError(
                f"{path}: truncated or not a safetensors file "
                f"(header says {n} bytes, file has {size - 8} after the length field)"
            )
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: corrupt safetensors header (invalid JSON: {exc})") from None
    if not isinstance(header, dict):
        raise SourceError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - n
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, info in entries.items():
        _check_entry(path, name, info, data_size)
    return entries


def _check_entry(path: Path, name: str, info: Any, data_size: int) -> None:
    try:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        ok = (
            isinstance(dtype, str)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(begin, int)
            and isinstance(end, int)
            and 0 <= begin <= end
        )
    except (TypeError, KeyError, ValueError):
        ok = False
    if not ok:
        raise SourceError(f"{path}: corrupt safetensors header entry for {name!r}: {info!r}")
    if end > data_size:
        raise SourceError(
            f"{path}: truncated: tensor {name!r} ends at byte {end} of the data "
            f"but the file holds only {data_size} data bytes (incomplete download?)"
        )
    torch_dtype = SAFETENSORS_DTYPES.get(dtype)
    if torch_dtype is not None and end - begin != math.prod(shape) * torch_dtype.itemsize:
        raise SourceError(f"{path}: corrupt safetensors header: {name!r} has {end - begin} bytes for shape {shape}")


class SafetensorsFileSource(TensorSource):
    """All tensors of one safetensors file, in header order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        #: Tensors left out because torch has no matching dtype: name -> reason.
        self.skipped: dict[str, str] = {}
        entries = read_safetensors_header(self.path)
        self._lock = threading.Lock()
        try:  # second opinion from the Rust parser, before anyone loads
            self._handle: Any = safe_open(str(self.path), framework="pt", device="cpu")
        except (SafetensorError, OSError) as exc:
            raise SourceError(f"{self.path}: not a valid safetensors file ({exc})") from None
        self._file_id = str(self.path.resolve())
        self._refs = [ref for name, info in entries.items() if (ref := self._ref(name, info)) is not None]

    def _ref(self, name: str, info: dict[str, Any]) -> TensorRef | None:
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            reason = f"dtype {info['dtype']} is not supported by torch {torch.__version__}"
            log.warning("%s: skipping %s: %s", self.path, name, reason)
            self.skipped[name] = reason
            return None
        return TensorRef(
            name=name,
            shape=tuple(info["shape"]),
            dtype=dtype,
            loader=lambda: self._load(name),
            # Same bytes of the same file = tied. safe_open refuses files whose
            # tensors overlap, so in practice every id here is distinct: tied
            # weights are stored once (HF drops lm_head.weight) and never alias.
            storage_id=("safetensors", self._file_id, *info["data_offsets"]),
        )

    def _load(self, name: str) -> torch.Tensor:
        # The engine loads from several threads; the handle is shared.
        with self._lock:
            if self._handle is None:
                raise SourceError(f"{self.path}: source is closed")
            return self._handle.get_tensor(name)

    def refs(self) -> list[TensorRef]:
        return list(self._refs)

    def close(self) -> None:
        # Tensors already loaded keep the mapping alive on their own.
        with self._lock:
            self._handle = None
