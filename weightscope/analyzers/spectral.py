"""Singular-value summary of the (out, -1) matrix: conditioning and ranks.

Conventions:
- Singular values at or below numpy.linalg.matrix_rank's default tolerance
  (sigma_max * max(M, N) * eps(float64)) count as exactly zero: then
  ``min_singular_value`` and ``singular_value_ratio`` are 0.0 and
  ``condition_number`` is inf (the JSON writer stores null).
- ``numerical_rank`` is what ``numpy.linalg.matrix_rank`` returns for the
  weights as stored: its tolerance uses the eps of the stored precision
  (float32's for float32 and narrower, float64's for float64), since
  singular values below the storage's rounding noise carry no information.
- ``effective_rank`` is exp(Shannon entropy of p = sigma / sum(sigma)) over the
  nonzero singular values (Roy & Vetterli, 2007).
- The zero matrix has ``numerical_rank`` 0 (numpy's ``matrix_rank`` of it),
  ``condition_number`` inf, ``max_singular_value``/``min_singular_value`` 0.0,
  and ``singular_value_ratio``, ``stable_rank`` and ``effective_rank`` None:
  each divides by sigma_max or by sum(sigma), 0/0 there, so none is defined
  (a 0 would read as "collapsed to rank 0" next to a real, tiny rank).
- A tensor with NaN/Inf weights has no spectrum: every number is NaN
  ("not measured", so ``cond > 1e6`` is False rather than a TypeError),
  ``top_singular_values`` None, and ``note`` says why (basic_stats counts
  the bad weights). An empty matrix likewise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .view import TensorView, not_computed

TOP_K = 10
KEYS = (
    "condition_number", "max_singular_value", "min_singular_value", "singular_value_ratio",
    "stable_rank", "effective_rank", "numerical_rank", "total_rank", "top_singular_values",
)  # fmt: skip


def unavailable(view: TensorView) -> str | None:
    """Why a spectrum cannot be computed for this tensor, or None. Shared with esd."""
    if view.numel == 0:
        return "empty tensor"
    if view.has_nonfinite:
        return "non-finite weights (NaN/Inf); see basic_stats nan_count/inf_count"
    return None


def _storage_tolerance(view: TensorView, smax: float) -> float:
    eps = float(torch.finfo(view.compute_dtype).eps)
    return smax * max(view.rows, view.cols) * eps


def analyze(view: TensorView) -> dict[str, Any]:
    note = unavailable(view)
    if note:
        return not_computed(KEYS, note, lists=("top_singular_values",), total_rank=min(view.rows, view.cols))
    nz = view.nonzero_singular_values
    s = np.where(view.singular_values > view.rank_tolerance, view.singular_values, 0.0)
    smax = float(s[0])
    smin = float(s[-1]) if nz.size == s.size else 0.0
    if smax == 0.0:
        cond, ratio, stable, eff = float("inf"), None, None, None  # 0/0: undefined
    else:
        cond = smax / smin if smin > 0 else float("inf")
        ratio = smin / smax
        stable = float(np.sum((s / smax) ** 2))  # scaled first: no overflow for huge weights
        p = nz / nz.sum()
        eff = float(np.exp(-np.sum(p * np.log(p))))
    return {
        "condition_number": cond,
        "max_singular_value": smax,
        "min_singular_value": smin,
        "singular_value_ratio": ratio,
        "stable_rank": stable,
        "effective_rank": eff,
        "numerical_rank": int(np.count_nonzero(s > _storage_tolerance(view, smax))),
        "total_rank": int(s.size),
        "top_singular_values": [float(v) for v in s[:TOP_K]],
    }
