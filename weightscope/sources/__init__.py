"""Sources: what the user named -> an ordered list of lazily loaded tensors.

>>> from weightscope.sources import open_source
>>> with open_source("path/to/model") as src:  # doctest: +SKIP
...     for ref in src.refs():
...         print(ref.name, ref.shape, ref.dtype)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import SourceError
from .base import TensorRef, TensorSource
from .files import WEIGHT_SUFFIXES, is_weight_file, open_file, sniff_format
from .folder import FolderSource, checkpoint_candidates, find_weight_files, natural_key, resolve_weight_files
from .memory import MemorySource
from .safetensors_file import SafetensorsFileSource
from .torch_pickle import TorchPickleSource

log = logging.getLogger(__name__)


def open_source(obj: Any, *, revision: str | None = None) -> TensorSource:
    """Pick the source for ``obj``.

    ``obj`` is a ``TensorSource`` (returned as is), an ``nn.Module``, a state
    dict (possibly wrapped: ``{"state_dict": sd, ...}``), a path to a file or
    model folder, or a Hugging Face Hub id. ``revision`` applies to Hub ids only.
    """
    if isinstance(obj, TensorSource):
        return obj
    if isinstance(obj, torch.nn.Module):
        return MemorySource.from_module(obj)
    if isinstance(obj, Mapping):
        return MemorySource.from_mapping(obj)
    if not isinstance(obj, (str, os.PathLike)):
        raise SourceError(
            f"cannot read weights from a {type(obj).__name__}; pass a path, a Hub id, an nn.Module or a state dict"
        )
    text = os.fspath(obj)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            log.warning("revision=%r ignored: %s is a local path", revision, path)
        return FolderSource(path) if path.is_dir() else open_file(path)
    from .hub import looks_like_hub_id, open_hub

    if isinstance(obj, str) and looks_like_hub_id(text):
        try:
            return open_hub(text, revision=revision)
        except SourceError as exc:
            raise SourceError(f"no such file or directory: {text}; as a Hugging Face Hub id: {exc}") from None
    raise SourceError(f"no such file or directory: {text}")


__all__ = [
    "WEIGHT_SUFFIXES",
    "FolderSource",
    "MemorySource",
    "SafetensorsFileSource",
    "TensorRef",
    "TensorSource",
    "TorchPickleSource",
    "checkpoint_candidates",
    "find_weight_files",
    "is_weight_file",
    "natural_key",
    "open_file",
    "open_source",
    "resolve_weight_files",
    "sniff_format",
]
