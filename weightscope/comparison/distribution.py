"""Comparing two tensors whose shapes differ (distillation, pruning, vocab resize).

Element-wise distances are meaningless there, so the weight *distributions*
are compared instead: moments and the Wasserstein-1 distance between the two
empirical distributions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .pair_metrics import moments

#: Above this many elements a side is subsampled (deterministically) for the Wasserstein distance.
MAX_SAMPLES = 1 << 20


def _values(t: torch.Tensor, max_samples: int, seed: int) -> np.ndarray:
    flat = t.reshape(-1)
    if flat.numel() > max_samples:
        # Random, not strided, indices: a stride can line up with a row length and pick one column.
        gen = torch.Generator().manual_seed(seed)
        flat = flat[torch.randint(0, flat.numel(), (max_samples,), generator=gen)]
    return flat.to(torch.float64).numpy()


def wasserstein(a: torch.Tensor, b: torch.Tensor, max_samples: int = MAX_SAMPLES, seed: int = 0) -> float:
    """Wasserstein-1 distance between the value distributions of ``a`` and ``b`` (scipy's definition)."""
    from scipy.stats import wasserstein_distance  # scipy.stats takes ~0.5 s to import: only when needed

    return float(wasserstein_distance(_values(a, max_samples, seed), _values(b, max_samples, seed + 1)))


def distribution_metrics(a: torch.Tensor, b: torch.Tensor, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """``mean_diff``, ``std_diff`` (b − a), ``l2_norm_ratio`` and ``wasserstein_distance``, any shapes."""
    if a.numel() == 0 or b.numel() == 0:
        return {"mean_diff": None, "std_diff": None, "l2_norm_ratio": None, "wasserstein_distance": None}
    (mean_a, std_a, norm_a), (mean_b, std_b, norm_b) = moments(a), moments(b)
    return {
        "mean_diff": mean_b - mean_a,
        "std_diff": std_b - std_a,
        "l2_norm_ratio": norm_b / norm_a if norm_a > 0 else None,
        "wasserstein_distance": wasserstein(a, b, max_samples),
    }
