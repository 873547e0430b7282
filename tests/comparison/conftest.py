"""Shared by the comparison tests: an in-memory source that counts loads, and numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weightscope.sources.base import TensorRef, TensorSource


class CountingSource(TensorSource):
    """A real TensorSource over a dict that records every tensor it hands out.

    ``storage`` maps names to a shared key, which is how sources mark tied weights.
    ``broken`` names raise on load, like a corrupt tensor in a file.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], storage: dict | None = None, broken=(),
                 description: str = "counting") -> None:
        self.tensors = tensors
        self.storage = storage or {}
        self.broken = set(broken)
        self.description = description
        self.loads: list[str] = []

    def refs(self) -> list[TensorRef]:
        def loader(name: str):
            def load() -> torch.Tensor:
                self.loads.append(name)
                if name in self.broken:
                    raise OSError(f"corrupt tensor {name}")
                return self.tensors[name]
            return load

        return [TensorRef(n, tuple(t.shape), t.dtype, loader(n), self.storage.get(n)) for n, t in self.tensors.items()]


def _f64(t: torch.Tensor) -> np.ndarray:
    """The exact values of a tensor (any float dtype) as numpy float64."""
    return t.detach().to(torch.float64).numpy()


def _reference_diff(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.01) -> dict:
    """Independent numpy float64 reference for the element-wise comparison metrics."""
    x, y = _f64(a).ravel(), _f64(b).ravel()
    d = y - x
    na, nb = np.linalg.norm(x), np.linalg.norm(y)
    return {
        "l2_distance": np.linalg.norm(d),
        "relative_l2_distance": np.linalg.norm(d) / na,
        "cosine_similarity": float(x @ y / (na * nb)),
        "mean_diff": y.mean() - x.mean(),
        "std_diff": y.std() - x.std(),
        "l2_norm_ratio": nb / na,
        "max_abs_diff": np.abs(d).max(),
        "significant_change_percentage": 100.0 * np.mean(np.abs(d) > threshold * np.abs(x)),
    }


# Helpers reach the test modules as fixtures: tests/ has no packages to import them from.
@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def f64():
    return _f64


@pytest.fixture
def reference_diff():
    return _reference_diff


@pytest.fixture
def counting_source():
    return CountingSource
