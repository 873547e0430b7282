"""TensorView: one tensor plus lazily computed, cached derived quantities.

Analyzers share expensive work (upcasts, singular values, order statistics)
through a view so that ``methods=all`` does not repeat an SVD. The view is
created per tensor and thrown away after it, so analyzers stay pure functions
of the tensor.
"""

from __future__ import annotations

from functools import cached_property

import torch


class TensorView:
    def __init__(self, tensor: torch.Tensor, device: torch.device | str = "cpu") -> None:
        self.tensor = tensor  # stored dtype, never down-cast
        self.device = torch.device(device)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def dtype(self) -> str:
        return str(self.tensor.dtype).removeprefix("torch.")

    @cached_property
    def matrix(self) -> torch.Tensor:
        """The tensor as (out, -1), upcast to at least float32, on the device."""
        t = self.tensor.to(self.device)
        if t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)
