"""One checkpoint file: recognise its format from its first bytes, open it."""

from __future__ import annotations

import re
import struct
from pathlib import Path

from ..errors import SourceError
from .base import TensorSource
from .safetensors_file import MAX_HEADER_BYTES, SafetensorsFileSource
from .torch_pickle import TorchPickleSource

#: Extensions a weight file may have (the content decides the format).
WEIGHT_SUFFIXES = frozenset({".safetensors", ".pt", ".pth", ".bin", ".ckpt"})
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl"})

# What a HF Trainer / Lightning run writes next to the model: not weights
# (training_args.bin is a pickle of arbitrary classes and would be refused).
_NOT_WEIGHTS = re.compile(r"^(optimizer|scheduler|scaler|rng_state|training_args)([._-].*)?$", re.IGNORECASE)


def is_weight_file(path: Path) -> bool:
    """A file whose name says model weights (optimizer/scheduler/RNG state excluded)."""
    return path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES and not _NOT_WEIGHTS.match(path.name)


def sniff_format(path: Path) -> str | None:
    """``"safetensors"`` or ``"torch"`` from the file's first bytes, None if neither."""
    with path.open("rb") as fh:
        head = fh.read(9)
    # safetensors: u64 header length, then the JSON header's opening brace.
    # Checked first: a header length of 0x..80 starts like a pickle.
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < MAX_HEADER_BYTES:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):  # torch.save zip format (torch >= 1.6)
        return "torch"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO 2-5: legacy torch.save
        return "torch"
    return None


def open_file(path: str | Path) -> TensorSource:
    """Open one checkpoint file of any supported format."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: empty file")
    fmt = sniff_format(path)
    suffix = path.suffix.lower()
    # A damaged file may not sniff; its extension still picks the reader
    # with the most precise error message.
    if fmt == "safetensors" or (fmt is None and suffix == ".safetensors"):
        return SafetensorsFileSource(path)
    if fmt == "torch":
        return TorchPickleSource(path)
    hint = "truncated or corrupt? " if suffix in TORCH_SUFFIXES else ""
    raise SourceError(
        f"{path}: not a recognised checkpoint ({hint}expected a safetensors file or a torch.save file)"
    )
