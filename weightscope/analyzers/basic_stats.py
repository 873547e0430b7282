"""Element statistics of one tensor: location, spread, extremes, norms, zeros, non-finite counts.

Conventions:
- ``std`` is the population standard deviation (ddof=0), numpy's default.
- Everything but ``nan_count``/``inf_count``/``numel`` is computed over the
  finite values only, so one NaN weight does not turn every statistic into
  NaN; ``zeros_percentage`` is relative to the finite values. Statistics of an
  empty set (empty tensor, or no finite value) are None.
"""

from __future__ import annotations

import math
from typing import Any

from .view import TensorView


def analyze(view: TensorView) -> dict[str, Any]:
    m = view.moments
    n = m.count
    return {
        "mean": m.mean if n else None,
        "std": math.sqrt(max(m.m2, 0.0) / n) if n else None,
        "min": m.min if n else None,
        "max": m.max if n else None,
        "abs_mean": m.abs_sum / n if n else None,
        "l2_norm": math.sqrt(m.sumsq) if n else None,
        "zeros_percentage": 100.0 * m.zeros / n if n else None,
        "nan_count": m.nan_count,
        "inf_count": m.inf_count,
        "numel": view.numel,
        "shape": list(view.shape),
        "dtype": view.dtype,
    }
