"""Shared helpers: matrices with known singular values, and running one analyzer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from weightscope.analyzers import get_analyzer
from weightscope.analyzers.view import TensorView

try:  # optional: only used to keep the reference computations single-threaded
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None


@pytest.fixture(autouse=True)
def _one_thread():
    """Correctness does not depend on threads; one thread keeps these small tests fast even when
    other processes load the machine (tiny multi-threaded LAPACK calls then stall for whole
    scheduler ticks), and keeps numpy's BLAS pool from spinning against torch's."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with contextlib.ExitStack() as stack:
        if threadpool_limits is not None:
            stack.enter_context(threadpool_limits(1, user_api="blas"))
        yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n x k matrix with orthonormal columns (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def with_singular_values(rng: np.random.Generator, m: int, n: int, s: Sequence[float]) -> np.ndarray:
    """float64 m x n matrix U diag(s) Vᵀ with exactly the singular values s (len(s) == min(m, n))."""
    k = min(m, n)
    assert len(s) == k
    return (orthonormal(rng, m, k) * np.asarray(s, dtype=np.float64)) @ orthonormal(rng, n, k).T


def log_spaced(k: int, cond: float, top: float = 3.0) -> np.ndarray:
    """k singular values from top down to top/cond, log-spaced (descending)."""
    return top * np.logspace(0, -np.log10(cond), k)


class Matrices:
    """Constructors of test matrices, handed to tests by the ``mx`` fixture."""

    orthonormal = staticmethod(orthonormal)
    with_singular_values = staticmethod(with_singular_values)
    log_spaced = staticmethod(log_spaced)


@pytest.fixture
def mx() -> type[Matrices]:
    return Matrices


@pytest.fixture
def run() -> Callable[..., dict[str, Any]]:
    def _run(method: str, tensor: torch.Tensor | np.ndarray) -> dict[str, Any]:
        if isinstance(tensor, np.ndarray):
            tensor = torch.from_numpy(tensor)
        return get_analyzer(method)(TensorView(tensor))

    return _run


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force many tiny chunks/blocks so that chunk merging and block boundaries are exercised."""
    from weightscope.analyzers import _linalg, _stats, view

    monkeypatch.setattr(view, "CPU_CHUNK_ELEMENTS", 1000)
    monkeypatch.setattr(_linalg, "BLOCK_ELEMENTS", 3000)
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", 5000)
