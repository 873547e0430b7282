"""Power-law fit of an eigenvalue spectrum, as WeightWatcher's ``WWFit`` does it.

For every candidate xmin = x_i (each sorted value but the largest) the
continuous MLE over the tail x_i..x_{n-1} is

    alpha_i = 1 + n_i / sum_{j>=i} ln(x_j / x_i),          n_i = n - i

and its Kolmogorov-Smirnov distance is

    D_i = max_{j>=i} | 1 - (x_j / x_i) ** (1 - alpha_i) - (j - i) / n_i |.

The fit keeps the first i with the smallest D_i. Candidates with alpha_i <= 1
(or undefined, e.g. a tail of equal values) get D_i = 1, as in WWFit.
All alpha_i come from one reverse cumulative sum; the D_i are computed in
vectorised blocks of candidates (O(n^2) arithmetic, no Python loop over n).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Elements of the (candidates x tail) block evaluated at once: bounds temporaries to ~8 MB each.
_BLOCK = 1 << 20


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    ks_distance: float
    index: int  # position of xmin in the sorted input


def fit_power_law(x: np.ndarray) -> PowerLawFit:
    """Fit sorted-ascending, strictly positive values ``x`` (at least 2 of them)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    logx = np.log(x)
    cand = n - 1  # the largest value is never an xmin: its tail has one point
    tail_n = (n - np.arange(cand)).astype(np.float64)
    tail_log_sum = np.cumsum(logx[::-1])[::-1][:cand]  # sum_{j>=i} ln x_j
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = 1.0 + tail_n / (tail_log_sum - tail_n * logx[:cand])
    valid = np.isfinite(alphas) & (alphas > 1.0)

    ds = np.ones(cand)
    step = max(1, _BLOCK // n)
    j = np.arange(n)
    for start in range(0, cand, step):
        idx = np.arange(start, min(start + step, cand))
        idx = idx[valid[idx]]
        if idx.size == 0:
            continue
        cols = j[start:]  # every tail in this block starts at or after `start`
        # ln(x_j / x_i), floored at 0 so that the masked j < i cannot overflow exp
        diff = np.maximum(logx[start:][None, :] - logx[idx][:, None], 0.0)
        theo = -np.expm1((1.0 - alphas[idx])[:, None] * diff)  # 1 - (x_j/x_i)^(1-alpha)
        emp = (cols[None, :] - idx[:, None]) / tail_n[idx][:, None]
        dev = np.abs(theo - emp)
        dev[cols[None, :] < idx[:, None]] = 0.0  # points below xmin are not in the tail
        ds[idx] = dev.max(axis=1)
    best = int(np.argmin(ds))
    return PowerLawFit(float(alphas[best]), float(x[best]), float(ds[best]), best)
