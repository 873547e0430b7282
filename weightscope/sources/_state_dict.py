"""Shared by the pickle and in-memory sources: find the state dict, list its tensors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch

from ..errors import SourceError
from .base import TensorRef

log = logging.getLogger(__name__)

#: Keys training scripts wrap a state dict in, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


def select_state_dict(obj: Any) -> Any:
    """Unwrap ``{"state_dict": sd, "epoch": 3}``-style checkpoints (repeatedly).

    A wrapper key only counts when it holds tensors, so a ``model`` entry that
    is a config string does not hide the weights next to it.
    """
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping) and _has_tensor(obj[k])), None)
        if inner is None:
            break
        obj = inner
    return obj


def flatten_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors at any depth, named by their dotted key path; everything else dropped."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out.update(flatten_tensors(value, f"{prefix}.{i}" if prefix else str(i)))
    elif prefix:
        log.debug("ignoring non-tensor entry %s (%s)", prefix, type(obj).__name__)
    return out


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_tensor(v) for v in obj)
    return False


def storage_key(tensor: torch.Tensor, origin: str) -> Hashable | None:
    """Equal for two tensors that are the same view of the same memory (tied weights).

    ``torch.save``/``torch.load`` keep shared storages shared, so this finds
    GPT-2's ``lm_head.weight``/``transformer.wte.weight`` in a ``.bin`` file as
    well as in a live module. Meta, sparse and other storage-less tensors get None.
    """
    if tensor.is_meta or tensor.layout != torch.strided:
        return None
    try:
        ptr = tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without plain storage
        return None
    if ptr == 0:  # empty tensors all sit at address 0 and share nothing
        return None
    return (origin, ptr, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)


def tensor_refs(
    tensors: Mapping[str, torch.Tensor], origin: str, loader: Callable[[str], torch.Tensor]
) -> list[TensorRef]:
    """Refs over tensors already in hand (mapped or in memory), in mapping order.

    ``loader`` gets the name, so a ref does not pin its tensor: closing the
    source really releases the file map or the module.
    """
    return [
        TensorRef(
            name=name,
            shape=tuple(t.shape),
            dtype=t.dtype,
            loader=lambda name=name: loader(name),
            storage_id=storage_key(t, origin),
        )
        for name, t in tensors.items()
    ]


def require_tensors(tensors: Mapping[str, torch.Tensor], what: str, obj: Any) -> None:
    if tensors:
        return
    keys = f" (top-level keys: {', '.join(map(str, list(obj)[:10]))})" if isinstance(obj, Mapping) else ""
    raise SourceError(f"{what}: contains no tensors{keys}")
