"""Live weights: an ``nn.Module`` or a state dict already in memory.

Refs are views of the live tensors (detached, not copied): loading one later
returns its values at that moment. Callers that need a frozen snapshot while
training goes on must copy themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import SourceError
from ._state_dict import flatten_tensors, require_tensors, select_state_dict, tensor_refs
from .base import TensorRef, TensorSource


class MemorySource(TensorSource):
    """Tensors held in memory, in state-dict order.

    ``requires_grad`` maps every name to whether it is trainable (False for
    buffers and frozen parameters), so monitors can tell frozen layers apart.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], description: str) -> None:
        self.description = description
        self.requires_grad: dict[str, bool] = {name: bool(t.requires_grad) for name, t in tensors.items()}
        self._tensors: dict[str, torch.Tensor] | None = {name: t.detach() for name, t in tensors.items()}
        # Key on this object: two modules' pointers are never compared with each other.
        self._refs = tensor_refs(self._tensors, f"memory:{id(self):x}", self._load)

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> MemorySource:
        # keep_vars=True: the Parameters themselves (so requires_grad survives);
        # state_dict also brings persistent buffers and repeats tied weights
        # under each name, which storage_id then folds.
        description = f"nn.Module({type(module).__name__})"
        tensors = module.state_dict(keep_vars=True)
        _require_data(tensors, description)
        return cls(tensors, description)

    @classmethod
    def from_mapping(cls, obj: Mapping[str, Any]) -> MemorySource:
        tensors = flatten_tensors(select_state_dict(obj))
        require_tensors(tensors, "state dict", obj)
        description = f"state dict ({len(tensors)} tensors)"
        _require_data(tensors, description)
        return cls(tensors, description)

    def _load(self, name: str) -> torch.Tensor:
        if self._tensors is None:
            raise SourceError(f"{self.description}: source is closed")
        tensor = self._tensors[name]
        if tensor.is_meta:
            raise SourceError(f"{name} is on the meta device and has no data")
        # The contract promises CPU tensors; that is a copy only for GPU weights.
        return tensor if tensor.device.type == "cpu" else tensor.to("cpu")

    def refs(self) -> list[TensorRef]:
        return list(self._refs)

    def close(self) -> None:
        self._tensors = None


def _require_data(tensors: Mapping[str, torch.Tensor], description: str) -> None:
    """SourceError when every floating-point tensor is on the meta device: no values, nothing to scan.

    (A model built under ``with torch.device("meta")`` or ``init_empty_weights()``.) Only some on
    meta: the scan goes on, and their layers get an ``error`` entry saying so.
    """
    floats = [t for t in tensors.values() if t.is_floating_point()]
    if floats and all(t.is_meta for t in floats):
        raise SourceError(
            f"{description}: its weights are on the meta device and hold no data "
            f"({len(floats)} tensor(s)); load real weights into it first (e.g. to_empty() then load_state_dict)"
        )
