"""Comparing two tensors whose shapes differ (distillation, pruning, vocab resize).

Element-wise distances are meaningless there, so the weight *distributions*
are compared instead: moments and the Wasserstein-1 distance between the two
empirical distributions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .pair_metrics import moments

#: Up to this many elements per side the distance is scipy's, exact; above it, both sides are
#: compared through this many evenly spaced quantiles of their sorted values.
MAX_SAMPLES = 1 << 20


def _values(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).to(torch.float64).cpu().numpy()


def _quantile_grid(t: torch.Tensor, k: int) -> np.ndarray:
    """The values at the midpoints of ``k`` equal slices of ``t``'s sorted values (linear interpolation).

    Sorted in float32 for narrower dtypes (exact for them, half float64's memory); a quantile grid
    has no sampling noise, unlike a random subsample, which for two nearly equal distributions
    (a vocab resize) swamped the distance itself.
    """
    flat = t.detach().reshape(-1)
    flat = flat.to(torch.float64 if flat.dtype == torch.float64 else torch.float32).cpu()
    ordered = np.sort(flat.numpy())  # a new array: the tensor may be a read-only memory map
    n = ordered.size
    pos = (np.arange(k, dtype=np.float64) + 0.5) / k * (n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    return ordered[lo].astype(np.float64) * (1.0 - frac) + ordered[hi].astype(np.float64) * frac


def wasserstein(a: torch.Tensor, b: torch.Tensor, max_samples: int = MAX_SAMPLES) -> float:
    """Wasserstein-1 distance between the value distributions of ``a`` and ``b`` (scipy's definition).

    Exact (scipy) while both sides have at most ``max_samples`` elements; otherwise the mean
    absolute difference of the two sides' quantile grids (``max_samples`` points each), which
    is W1 between the quantile functions integrated by the midpoint rule.
    """
    if a.numel() <= max_samples and b.numel() <= max_samples:
        from scipy.stats import wasserstein_distance  # scipy.stats takes ~0.5 s to import: only when needed

        return float(wasserstein_distance(_values(a), _values(b)))
    qa = _quantile_grid(a, max_samples)
    qb = _quantile_grid(b, max_samples)
    return float(np.abs(qa - qb).mean())


def distribution_metrics(a: torch.Tensor, b: torch.Tensor, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """``mean_diff``, ``std_diff`` (b − a), ``l2_norm_ratio`` and ``wasserstein_distance``, any shapes."""
    if a.numel() == 0 or b.numel() == 0:
        return {"mean_diff": None, "std_diff": None, "l2_norm_ratio": None, "wasserstein_distance": None}
    (mean_a, std_a, norm_a), (mean_b, std_b, norm_b) = moments(a), moments(b)
    return {
        "mean_diff": mean_b - mean_a,
        "std_diff": std_b - std_a,
        # The same-shape rule: 0/0 is no change, x/0 grew from zero.
        "l2_norm_ratio": norm_b / norm_a if norm_a > 0 else (1.0 if norm_b == 0 else math.inf),
        "wasserstein_distance": wasserstein(a, b, max_samples),
    }
