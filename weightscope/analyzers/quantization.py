"""Quantization readiness: Tukey outliers, tail shape, and simulated int8/int4 error.

Conventions:
- Computed over the finite values; non-finite weights are left out of every
  count, sum and percentage (basic_stats counts them). A tensor with no
  finite value (or none at all) gives NaN numbers, a None recommendation
  and a ``note``.
- Quartiles are numpy.percentile's default (linear interpolation) on the
  float64 values. Outliers lie strictly outside [Q1 - 1.5 IQR, Q3 + 1.5 IQR];
  extreme outliers outside [Q1 - 3 IQR, Q3 + 3 IQR].
- ``kurtosis`` is Fisher's excess kurtosis with population moments, like
  scipy.stats.kurtosis's defaults.
- Simulations are symmetric, round half to even (like numpy), and report
  aggregate SQNR = 10 log10(sum w^2 / sum (w - w_hat)^2) over the tensor:
  int8 per tensor (scale abs_max/127), int8 per output channel (one scale per
  row of the (out, -1) matrix), int4 with one scale absmax/7 per group of 128
  consecutive elements of a row (levels -8..7; the last group is zero-padded).
  SQNR is inf when the simulation is lossless and None when there is no
  signal (all zeros).
- ``recommendation``: "int8" when extreme outliers <= 1 %, "keep_fp16" up to
  5 %, "per_channel_or_smoothquant" above; "fix_nonfinite" when the tensor
  holds NaN/Inf (its finite values may look fine, but no format keeps it).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._stats import at_least, at_most
from .view import TensorView, finite_or_none, not_computed

INT4_GROUP = 128
KEYS = (
    "outlier_percentage", "outlier_count", "extreme_outlier_percentage", "extreme_outlier_count",
    "q1", "q3", "iqr", "kurtosis", "abs_max", "dynamic_range", "quantization_scale",
    "quantization_mse", "sqnr_db", "cosine_similarity", "sqnr_db_per_channel", "sqnr_db_int4_g128",
    "recommendation",
)  # fmt: skip


def analyze(view: TensorView) -> dict[str, Any]:
    n = view.finite_count
    if n == 0:
        return not_computed(KEYS, "empty tensor" if view.numel == 0 else "no finite values", recommendation=None)
    m = view.moments
    q1, q3 = view.quantiles((0.25, 0.75))
    iqr = q3 - q1
    fences = (q1 - 3 * iqr, q1 - 1.5 * iqr, q3 + 1.5 * iqr, q3 + 3 * iqr)
    abs_max = view.abs_max
    scale = abs_max / 127
    acc = _simulate(view, fences, scale)
    outliers, extreme = acc["outliers"], acc["extreme"]
    if view.has_nonfinite:  # non-finite values were zeroed for the pass: take back their count
        n_bad = view.numel - n
        outliers -= n_bad * (0 < fences[1] or 0 > fences[2])
        extreme -= n_bad * (0 < fences[0] or 0 > fences[3])
    extreme_pct = 100.0 * extreme / n
    signal = m.sumsq
    mean_abs = m.abs_sum / n
    return {
        "outlier_percentage": 100.0 * outliers / n,
        "outlier_count": int(outliers),
        "extreme_outlier_percentage": extreme_pct,
        "extreme_outlier_count": int(extreme),
        "q1": q1,
        "q3": q3,
        "iqr": iqr,
        "kurtosis": finite_or_none(n * m.m4 / (m.m2 * m.m2) - 3.0) if m.m2 > 0 else None,
        "abs_max": abs_max,
        "dynamic_range": abs_max / mean_abs if mean_abs > 0 else None,
        "quantization_scale": scale,
        "quantization_mse": acc["err"] / n,
        "sqnr_db": _sqnr(signal, acc["err"]),
        "cosine_similarity": _cosine(acc["dot"], signal, acc["qq"]),
        "sqnr_db_per_channel": _sqnr(signal, acc["err_channel"]),
        "sqnr_db_int4_g128": _sqnr(signal, acc["err_int4"]),
        "recommendation": _recommend(extreme_pct, view.has_nonfinite),
    }


def _recommend(extreme_pct: float, has_nonfinite: bool) -> str:
    if has_nonfinite:
        return "fix_nonfinite"
    return "int8" if extreme_pct <= 1.0 else "keep_fp16" if extreme_pct <= 5.0 else "per_channel_or_smoothquant"


def _simulate(view: TensorView, fences: tuple[float, ...], scale: float) -> dict[str, float]:
    """One pass over row blocks: fence counts and the three simulations' error sums (float64).

    Counting and max-abs run on the compute-dtype block (exact, and half the memory traffic of
    float64); the quantizers run in float64 so that their rounding decisions match a float64
    reference bit for bit.
    """
    lo3, lo15 = (at_least(f, view.compute_dtype) for f in fences[:2])
    hi15, hi3 = (at_most(f, view.compute_dtype) for f in fences[2:])
    sums = torch.zeros(7, dtype=torch.float64, device=view.device)
    for _, xc in view.row_blocks():
        if view.has_nonfinite:
            xc = torch.nan_to_num(xc, nan=0.0, posinf=0.0, neginf=0.0)
        outl = (xc < lo15).sum() + (xc > hi15).sum()
        ext = (xc < lo3).sum() + (xc > hi3).sum()
        a = xc.abs()
        row_max = a.amax(dim=1, keepdim=True).to(torch.float64)
        group_max = _groups(a, INT4_GROUP).amax(dim=2, keepdim=True).to(torch.float64)
        del a
        x = xc.to(torch.float64)
        flat = x.reshape(-1)
        # int8, one scale for the tensor
        if scale > 0:
            q = _fake_quant(flat, scale, -127, 127)
            dot, qq = torch.dot(flat, q), torch.dot(q, q)
            q -= flat
            err = torch.dot(q, q)
        else:  # all zero: lossless
            dot = qq = err = flat.new_zeros(())
        # int8, one scale per row
        err_ch = _sq_err(x, row_max / 127, -127, 127)
        # int4, one scale per 128 consecutive elements of a row
        err_4 = _sq_err(_groups(x, INT4_GROUP), group_max / 7, -8, 7)
        sums += torch.stack([outl.to(sums.dtype), ext.to(sums.dtype), dot, qq, err, err_ch, err_4])
    keys = ("outliers", "extreme", "dot", "qq", "err", "err_channel", "err_int4")
    vals = sums.tolist()
    return {k: (int(v) if k in ("outliers", "extreme") else v) for k, v in zip(keys, vals, strict=True)}


def _fake_quant(x: torch.Tensor, scale: float | torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """round(x / scale) clamped to [qmin, qmax], times scale (a new tensor)."""
    q = x / scale
    return q.round_().clamp_(qmin, qmax).mul_(scale)


def _sq_err(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Sum of squared fake-quantization errors with broadcast per-row/group scales."""
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row/group is exact
    e = _fake_quant(x, scale, qmin, qmax).sub_(x).reshape(-1)
    return torch.dot(e, e)


def _groups(x: torch.Tensor, size: int) -> torch.Tensor:
    """(rows, groups, size) view of row blocks, zero-padding each row to a multiple of size."""
    rows, cols = x.shape
    pad = -cols % size
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(rows, -1, size)


def _sqnr(signal: float, err: float) -> float | None:
    if signal <= 0:
        return None
    if err <= 0:
        return math.inf
    return 10.0 * math.log10(signal / err)


def _cosine(dot: float, a2: float, b2: float) -> float | None:
    if a2 <= 0 or b2 <= 0:
        return None
    return finite_or_none(max(-1.0, min(1.0, dot / math.sqrt(a2 * b2))))
