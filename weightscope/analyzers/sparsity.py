"""Sparsity: near-zero fractions, dead rows/columns, magnitude percentiles.

Conventions:
- ``sparsity_levels`` maps a threshold (as a string key) to the percentage of
  weights with |w| <= threshold.
- A row / column of the (out, -1) matrix is dead when all its |w| <= 1e-6.
  A row or column holding a NaN/Inf is not dead.
- Percentages and percentiles are over the finite values (numpy.percentile's
  default linear interpolation of |w|); non-finite weights are left out.
"""

from __future__ import annotations

from typing import Any

import torch

from ._stats import at_most
from .view import TensorView

THRESHOLDS = {"0": 0.0, "1e-06": 1e-6, "0.0001": 1e-4, "0.01": 1e-2}
DEAD = 1e-6
PERCENTILES = {"p10": 0.10, "p25": 0.25, "p50": 0.50, "p75": 0.75, "p90": 0.90}


def analyze(view: TensorView) -> dict[str, Any]:
    rows, cols = view.rows, view.cols
    if view.numel == 0:
        return {
            "sparsity_levels": dict.fromkeys(THRESHOLDS), "dead_rows": 0, "dead_columns": 0,
            "dead_rows_percentage": None, "dead_columns_percentage": None,
            "magnitude_percentiles": dict.fromkeys(PERCENTILES), "note": "empty tensor",
        }  # fmt: skip
    n = view.finite_count
    counts, dead_rows, dead_cols = _scan(view)
    pct = view.quantiles(tuple(PERCENTILES.values()), absolute=True) if n else [None] * len(PERCENTILES)
    return {
        "sparsity_levels": {k: 100.0 * c / n if n else None for k, c in zip(THRESHOLDS, counts, strict=True)},
        "dead_rows": dead_rows,
        "dead_columns": dead_cols,
        "dead_rows_percentage": 100.0 * dead_rows / rows if rows else None,
        "dead_columns_percentage": 100.0 * dead_cols / cols if cols else None,
        "magnitude_percentiles": dict(zip(PERCENTILES, pct, strict=True)),
    }


def _scan(view: TensorView) -> tuple[list[int], int, int]:
    """One pass: threshold counts over finite |w|, and per-row / per-column max |w|."""
    cd = view.compute_dtype
    thresholds = [at_most(t, cd) for t in THRESHOLDS.values()]
    dead = at_most(DEAD, cd)
    counts = torch.zeros(len(THRESHOLDS), dtype=torch.int64, device=view.device)
    col_max = torch.zeros(view.cols, dtype=cd, device=view.device)
    dead_rows = torch.zeros((), dtype=torch.int64, device=view.device)
    for _, x in view.row_blocks():
        a = x.abs()
        if view.has_nonfinite:
            a = torch.nan_to_num(a, nan=torch.inf)  # a NaN/Inf row or column can never be dead
            fin = torch.isfinite(a)
            counts += torch.stack([((a <= t) & fin).sum() for t in thresholds])
        else:
            counts += torch.stack([(a <= t).sum() for t in thresholds])
        dead_rows += (a.amax(dim=1) <= dead).sum()
        torch.maximum(col_max, a.amax(dim=0), out=col_max)
    return counts.tolist(), int(dead_rows), int((col_max <= dead).sum())
