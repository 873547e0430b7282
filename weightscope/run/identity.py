"""Is a checkpoint whole yet, and which exact bytes is it? (the cache key)

A checkpoint being written is caught here, before anything is scanned: a
folder whose index names absent shards or that has no weights yet, a
zero-size file, a safetensors file shorter than its header says, a zip
(``torch.save``) without its closing directory. Such a checkpoint is skipped
and looked at again on the next run.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from ..errors import SourceError
from ..sources.files import sniff_format
from ..sources.safetensors_file import read_safetensors_header
from .discovery import Checkpoint


class IncompleteCheckpoint(SourceError):
    """A checkpoint that is missing files or bytes (most likely still being written)."""


#: Bytes read from each end of a file for the identity: a zip's end holds every entry's CRC.
SAMPLE_BYTES = 64 * 1024


def checkpoint_identity(cp: Checkpoint) -> str:
    """A digest of the checkpoint's name and, per weight file, its name, size, mtime,
    (safetensors) header and first and last 64 KiB.

    Size, mtime and header alone collide: checkpoints of one model share their
    header and size, and files written within one clock tick share an mtime.
    The name keeps checkpoints apart; the sampled bytes catch a file rewritten
    in place within a tick. Raises :class:`IncompleteCheckpoint` for a
    checkpoint that is not whole.
    """
    try:
        files = cp.weight_files()
    except SourceError as exc:
        raise IncompleteCheckpoint(str(exc)) from None
    digest = hashlib.sha256(cp.path.name.encode())
    for path in files:
        digest.update(json.dumps(_file_identity(path, cp.path)).encode())
    return digest.hexdigest()


def _file_identity(path: Path, root: Path) -> list[object]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IncompleteCheckpoint(f"{path}: file vanished (still being written?)") from None
    if st.st_size == 0:
        raise IncompleteCheckpoint(f"{path}: empty file (still being written?)")
    name = path.name if path == root else str(path.relative_to(root))
    header = None
    fmt = sniff_format(path)
    if fmt == "safetensors" or path.suffix.lower() == ".safetensors":
        try:
            entries = read_safetensors_header(path)
        except SourceError as exc:
            raise IncompleteCheckpoint(str(exc)) from None
        header = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()
    elif fmt == "torch" and _starts_as_zip(path) and not zipfile.is_zipfile(path):
        # torch.save writes the zip's central directory last: no directory, not done.
        raise IncompleteCheckpoint(f"{path}: truncated torch.save file (still being written?)")
    return [name, st.st_size, st.st_mtime_ns, header, _sample(path, st.st_size)]


def _starts_as_zip(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def _sample(path: Path, size: int) -> str:
    with path.open("rb") as fh:
        head = fh.read(SAMPLE_BYTES)
        fh.seek(max(0, size - SAMPLE_BYTES))
        tail = fh.read(SAMPLE_BYTES)
    return hashlib.sha256(head + tail).hexdigest()
