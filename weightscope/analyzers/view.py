"""TensorView: one tensor plus lazily computed, cached derived quantities.

Analyzers share expensive work (moments, singular values, order statistics)
through a view so that ``methods=all`` does not repeat an SVD or a pass over
the data. The view is created per tensor and thrown away after it, so
analyzers stay pure functions of the tensor.

Memory: the view never holds an upcast copy of the whole tensor. Element-wise
work goes through :meth:`TensorView.flat_chunks` / :meth:`TensorView.row_blocks`,
which upcast one small chunk at a time; reductions are accumulated in float64.

Chunks may alias the stored tensor (when it is already in the compute dtype):
never modify a chunk in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from . import _linalg, _stats

# A chunk plus its few temporaries stay in cache: the passes are memory bound.
# Measured on 2 cores, 2^18..2^19 was fastest; 2^21 took twice as long.
CPU_CHUNK_ELEMENTS = 1 << 19
DEVICE_CHUNK_ELEMENTS = 1 << 24  # accelerators want big launches


class cached_property:  # noqa: N801 - a drop-in for functools.cached_property
    """``functools.cached_property`` without its lock.

    Before Python 3.12 that lock is one per property for *all* instances, so
    the engine's worker threads computing, say, two views' singular values
    ran one after the other (measured: 2 workers no faster than 1). A view
    belongs to one thread, so no lock is needed.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: type | None = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


class TensorView:
    def __init__(self, tensor: torch.Tensor, device: torch.device | str = "cpu") -> None:
        self.tensor = tensor  # stored dtype, never down-cast
        self.device = torch.device(device)
        self.chunk_elements = CPU_CHUNK_ELEMENTS if self.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
        self._quantiles: dict[tuple[tuple[float, ...], bool], list[float]] = {}

    # --- metadata -----------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def dtype(self) -> str:
        return str(self.tensor.dtype).removeprefix("torch.")

    @property
    def numel(self) -> int:
        return self.tensor.numel()

    @cached_property
    def compute_dtype(self) -> torch.dtype:
        """float32 holds every value of a <=32-bit float exactly; float64 (and integers) stay float64."""
        t = self.tensor.dtype
        if t.is_floating_point and t.itemsize <= 4:
            return torch.float32
        return torch.float64

    @cached_property
    def matrix(self) -> torch.Tensor:
        """The tensor as a contiguous (out, -1) matrix in its stored dtype, on the device.

        1-D and 0-D tensors become one row. No copy when the tensor is already
        contiguous and on the device.
        """
        t = self.tensor.detach().to(self.device)
        rows = t.shape[0] if t.ndim >= 2 else 1
        return t.reshape(rows, math.prod(t.shape) // rows if rows else math.prod(t.shape[1:])).contiguous()

    @property
    def rows(self) -> int:
        return self.matrix.shape[0]

    @property
    def cols(self) -> int:
        return self.matrix.shape[1]

    # --- chunked access -----------------------------------------------------

    def flat_chunks(self) -> Iterator[torch.Tensor]:
        """1-D chunks of all values, in the compute dtype. May alias the tensor."""
        flat = self.matrix.reshape(-1)
        step = self.chunk_elements
        for i in range(0, flat.numel(), step):
            yield flat[i : i + step].to(self.compute_dtype)

    def row_blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, block of whole rows) in the compute dtype. May alias the tensor.

        A block holds at least one row, so a single row longer than the chunk
        size comes as one block.
        """
        step = max(1, self.chunk_elements // max(self.cols, 1))
        for r in range(0, self.rows, step):
            yield r, self.matrix[r : r + step].to(self.compute_dtype)

    def finite_chunks(self) -> Iterator[torch.Tensor]:
        """Like :meth:`flat_chunks`, without the non-finite values."""
        for x in self.flat_chunks():
            yield x[torch.isfinite(x)] if self.has_nonfinite else x

    # --- moments ------------------------------------------------------------

    @cached_property
    def moments(self) -> _stats.Moments:
        """Count, mean, central moments, extremes... of the finite values (float64)."""
        return _stats.moments(self.flat_chunks())

    @cached_property
    def has_nonfinite(self) -> bool:
        if "moments" in self.__dict__:
            m = self.moments
            return m.nan_count + m.inf_count > 0
        return any(not bool(torch.isfinite(x).all()) for x in self.flat_chunks())

    @property
    def finite_count(self) -> int:
        if not self.has_nonfinite:
            return self.numel
        return self.moments.count

    @cached_property
    def abs_max(self) -> float:
        """Largest finite magnitude (0.0 for an empty or all-non-finite tensor)."""
        m = self.moments
        return max(abs(m.min), abs(m.max)) if m.count else 0.0

    # --- order statistics -----------------------------------------------------

    def quantiles(self, qs: Sequence[float], absolute: bool = False) -> list[float]:
        """``numpy.percentile(v, 100*q)`` of the finite values v (or |v|), exactly, for each q.

        NaN when there are no finite values.
        """
        key = (tuple(qs), absolute)
        if key not in self._quantiles:
            self._quantiles[key] = _stats.quantiles(
                self.finite_chunks, self.finite_count, qs, absolute, lambda: self.histogram
            )
        return self._quantiles[key]

    @cached_property
    def histogram(self) -> torch.Tensor:
        """Counts of the finite values per 16-bit IEEE bin, shared by all quantile requests."""
        return _stats.histogram(self.finite_chunks())

    # --- spectrum -------------------------------------------------------------

    @cached_property
    def _svd(self) -> tuple[np.ndarray, str]:
        return _linalg.singular_values(self.matrix)

    @property
    def singular_values(self) -> np.ndarray:
        """All min(rows, cols) singular values of the (out, -1) matrix, float64, descending.

        Requires finite values (check :attr:`has_nonfinite` first).
        """
        return self._svd[0]

    @property
    def svd_route(self) -> str:
        """How the singular values were computed: "gram" (float64 Gram + eigvalsh) or "qr" (exact)."""
        return self._svd[1]

    @cached_property
    def rank_tolerance(self) -> float:
        """numpy.linalg.matrix_rank's default: sigma_max * max(rows, cols) * eps(float64).

        Singular values at or below it are treated as exactly zero.
        """
        s = self.singular_values
        return float(s[0]) * max(self.rows, self.cols) * float(np.finfo(np.float64).eps) if s.size else 0.0

    @cached_property
    def nonzero_singular_values(self) -> np.ndarray:
        s = self.singular_values
        return s[s > self.rank_tolerance]


def finite_or_none(x: float) -> float | None:
    """None for NaN (undefined); infinities are kept (the JSON writer maps them to null)."""
    return None if math.isnan(x) else float(x)


def not_computed(keys: Sequence[str], note: str, *, lists: Sequence[str] = (), **known: Any) -> dict[str, Any]:
    """The result of a method that cannot run on this tensor (empty, NaN/Inf weights, no finite values).

    Numbers are NaN, not None: "could not be measured", and a check such as
    ``cond > 1e6`` stays a valid comparison (False) instead of a TypeError.
    List-valued keys are None; ``known`` values (``total_rank``) are kept; ``note`` says why.
    """
    out: dict[str, Any] = {k: (None if k in lists else math.nan) for k in keys}
    return {**out, **known, "note": note}
