"""The contract every source meets: an ordered list of lazily loaded tensors."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True, eq=False)
class TensorRef:
    """Metadata of one tensor plus a way to load it.

    ``load()`` returns the tensor in its stored dtype, on the CPU, without
    copying where the format allows (memory-mapped safetensors). Nothing is
    read before ``load()`` is called.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    loader: Callable[[], torch.Tensor] = field(repr=False)
    # Equal for tensors that share their data (tied weights); None if unknown.
    storage_id: Hashable | None = None

    def load(self) -> torch.Tensor:
        return self.loader()

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def is_floating(self) -> bool:
        return self.dtype.is_floating_point


class TensorSource(ABC):
    """What the user named (file, folder, module, hub id) as a tensor stream."""

    #: Human-readable description, e.g. the path or ``nn.Module(GPT2LMHeadModel)``.
    description: str = ""
    #: The file or folder read, when there is one.
    path: Path | None = None

    @abstractmethod
    def refs(self) -> list[TensorRef]:
        """All tensors, in checkpoint order. Reads headers only, never data."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles / maps."""

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
