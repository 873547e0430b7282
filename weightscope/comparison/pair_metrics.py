"""Element-wise comparison of two same-shaped tensors: pure functions, float64 accumulation.

Both tensors are walked in flat chunks upcast to float64 one chunk at a time,
so the extra memory is a few chunk-sized buffers whatever the tensor size and
a bf16 checkpoint is never down-cast or copied whole. The chunk is sized to
stay in a core's L2 cache, which makes the dozen passes per chunk cheap.
"""

from __future__ import annotations

import math
from typing import Any

import torch

#: Elements per chunk: 64 Ki float64 = 512 KiB per buffer.
CHUNK_ELEMENTS = 1 << 16

#: Keys :func:`diff_metrics` returns (floats, NaN where undefined); all None when tensors were not available.
DIFF_KEYS: tuple[str, ...] = (
    "l2_distance",
    "relative_l2_distance",
    "cosine_similarity",
    "mean_diff",
    "std_diff",
    "l2_norm_ratio",
    "max_abs_diff",
    "significant_change_percentage",
    "identical",
    "model1_l2_norm",
    "model2_l2_norm",
)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` have the same dtype, shape and bits (NaN payloads and -0.0 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.dtype.itemsize]
        return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
    return torch.equal(a, b)


def norm_ratio(num: float, den: float, zero_over_zero: float) -> float:
    """``num / den`` for finite norms (>= 0): ``zero_over_zero`` for 0/0, inf for x/0 with x > 0."""
    if den > 0:
        return num / den
    return zero_over_zero if num == 0 else math.inf


class _Moments:
    """Count, mean and sum of squared deviations, merged chunk by chunk (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, n: int, total: float, sumsq: float) -> None:
        mean_c = total / n
        m2_c = max(sumsq - total * mean_c, 0.0)
        delta = mean_c - self.mean
        new_n = self.n + n
        self.m2 += m2_c + delta * delta * self.n * n / new_n
        self.mean += delta * n / new_n
        self.n = new_n

    @property
    def std(self) -> float:
        # Population std (ddof=0), the convention of basic_stats, so std_diff agrees with saved scans.
        return math.sqrt(self.m2 / self.n) if self.n else 0.0


def moments(t: torch.Tensor, chunk_elements: int = CHUNK_ELEMENTS) -> tuple[float, float, float]:
    """``(mean, std, l2_norm)`` of one tensor in float64 chunks (population std, as basic_stats)."""
    flat = t.reshape(-1)
    mom, sumsq = _Moments(), 0.0
    with torch.no_grad():
        for start in range(0, flat.numel(), chunk_elements):
            x = flat[start : start + chunk_elements].to(torch.float64)
            xx = float(torch.dot(x, x))
            sumsq += xx
            mom.add(x.numel(), float(x.sum()), xx)
    return mom.mean, mom.std, math.sqrt(sumsq)


def diff_metrics(
    a: torch.Tensor,
    b: torch.Tensor,
    threshold: float = 0.01,
    *,
    device: torch.device | str | None = None,
    chunk_elements: int | None = None,
) -> dict[str, Any]:
    """Distances between ``a`` (model 1) and ``b`` (model 2) of the same shape.

    ``significant_change_percentage`` is the share of elements with
    ``|b - a| > threshold * |a|`` (so any change of an exact zero counts).

    Every numeric metric is a float, never None:

    - ‖A‖ = 0: ``relative_l2_distance`` and ``l2_norm_ratio`` are 0.0 and 1.0
      when B is all zeros too (nothing changed), ``inf`` otherwise (a layer
      that grew from zero, e.g. a zero-initialised LoRA B, changed the most).
    - ``cosine_similarity`` is 1.0 for two all-zero tensors and NaN when
      exactly one side is all zeros (no direction to compare).
    - NaN or Inf in either tensor: every pair metric is NaN (the weights are
      what is wrong, see ``basic_stats`` ``nan_count``/``inf_count``), so a
      test such as ``0.99 < ratio < 1.01`` is False rather than an error.
      ``identical`` is still bit equality; ``model1_l2_norm`` /
      ``model2_l2_norm`` are each side's own norm (NaN/inf as computed).
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    dev = torch.device(device) if device is not None else a.device
    if chunk_elements is None:
        # Per-chunk syncs cost little next to a GPU kernel only when chunks are big.
        chunk_elements = CHUNK_ELEMENTS if dev.type == "cpu" else 1 << 22
    fa, fb = a.reshape(-1), b.reshape(-1)
    n = fa.numel()
    saa = sbb = sab = sdd = 0.0
    max_abs = torch.zeros((), dtype=torch.float64, device=dev)
    significant = 0
    mom_a, mom_b = _Moments(), _Moments()
    with torch.no_grad():
        for start in range(0, n, chunk_elements):
            x = fa[start : start + chunk_elements].to(dev, torch.float64)
            y = fb[start : start + chunk_elements].to(dev, torch.float64)
            d = y - x
            xx, yy = float(torch.dot(x, x)), float(torch.dot(y, y))
            saa, sbb = saa + xx, sbb + yy
            sab += float(torch.dot(x, y))
            sdd += float(torch.dot(d, d))
            mom_a.add(x.numel(), float(x.sum()), xx)
            mom_b.add(y.numel(), float(y.sum()), yy)
            d.abs_()
            max_abs = torch.maximum(max_abs, d.max())  # propagates NaN, unlike max()
            # Not x.abs_(): for float64 input x is a view of the caller's tensor.
            significant += int(torch.count_nonzero(d > x.abs().mul_(threshold)))
    norm_a, norm_b, dist = math.sqrt(saa), math.sqrt(sbb), math.sqrt(sdd)
    identical = bitwise_equal(a, b)
    norms = {"identical": identical, "model1_l2_norm": norm_a, "model2_l2_norm": norm_b}
    if not (math.isfinite(saa) and math.isfinite(sbb)):
        # NaN/Inf weights (a NaN or Inf element makes its side's sum of squares NaN/Inf).
        return {**dict.fromkeys(DIFF_KEYS, math.nan), **norms}
    if identical or (sdd == 0.0 and norm_a > 0):
        cosine = 1.0  # the same values (maybe in another dtype): exactly, not 1 - 2 ulp from the division
    elif norm_a > 0 and norm_b > 0:
        # Rounding can push |cos| a hair past 1 for (anti)parallel tensors.
        cosine = max(-1.0, min(1.0, sab / (norm_a * norm_b)))
    else:
        cosine = 1.0 if norm_a == norm_b == 0 else math.nan
    return {
        "l2_distance": dist,
        "relative_l2_distance": norm_ratio(dist, norm_a, 0.0),  # ‖B − A‖ = 0: no change
        "cosine_similarity": cosine,
        "mean_diff": mom_b.mean - mom_a.mean,
        "std_diff": mom_b.std - mom_a.std,
        "l2_norm_ratio": norm_ratio(norm_b, norm_a, 1.0),  # both zero: same norm
        "max_abs_diff": float(max_abs),
        "significant_change_percentage": 100.0 * significant / n if n else 0.0,
        **norms,
    }
