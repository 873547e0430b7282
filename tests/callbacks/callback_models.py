"""Tiny models and data shared by the callback tests."""

from __future__ import annotations

import torch


def regression_data(n: int = 256, features: int = 8, seed: int = 0) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = x @ torch.randn(features, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


class TinyNet(torch.nn.Module):
    """Three trainable layers and one frozen one (requires_grad=False)."""

    def __init__(self, features: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(features, hidden)
        self.mid = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, 1)
        self.frozen = torch.nn.Linear(features, features, bias=False)
        self.frozen.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.frozen(x)
        return self.out(torch.tanh(self.mid(torch.tanh(self.inp(x)))))
