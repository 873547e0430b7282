"""Independent references for the callback tests: statistics of a weight in numpy float64.

Non-finite entries are left out, as the scan documents for ``basic_stats`` and ``quantization``;
the spectrum of a matrix holding a NaN / Inf is undefined (``None`` here).
"""

from __future__ import annotations

import numpy as np


def _f64(w) -> np.ndarray:
    if hasattr(w, "detach"):
        w = w.detach().cpu().double().numpy()
    return np.asarray(w, dtype=np.float64)


def finite_values(w) -> np.ndarray:
    x = _f64(w).ravel()
    return x[np.isfinite(x)]


def l2_norm(w) -> float:
    return float(np.linalg.norm(finite_values(w)))


def std(w) -> float:
    return float(finite_values(w).std())  # population std (ddof=0), as the scan reports it


def condition_number(w) -> float | None:
    m = _f64(w)
    if not np.isfinite(m).all():
        return None
    s = np.linalg.svd(m.reshape(m.shape[0], -1), compute_uv=False)
    return float(s[0] / s[-1])


def extreme_outlier_percentage(w) -> float:
    """Share of finite values beyond Tukey's far fences, q1 - 3 IQR and q3 + 3 IQR (linear quantiles)."""
    x = finite_values(w)
    q1, q3 = np.quantile(x, [0.25, 0.75])
    iqr = q3 - q1
    return float(100.0 * np.count_nonzero((x < q1 - 3 * iqr) | (x > q3 + 3 * iqr)) / x.size)


def global_drift(prev: dict, cur: dict) -> float:
    """||W - W_prev|| / ||W_prev|| over the concatenation of all layers (not a mean of per-layer ratios)."""
    num = sum(np.linalg.norm(_f64(cur[k]) - _f64(prev[k])) ** 2 for k in prev)
    den = sum(np.linalg.norm(_f64(prev[k])) ** 2 for k in prev)
    return float(np.sqrt(num) / np.sqrt(den))


REFERENCES = {
    ("basic_stats", "l2_norm"): l2_norm,
    ("basic_stats", "std"): std,
    ("spectral", "condition_number"): condition_number,
    ("quantization", "extreme_outlier_percentage"): extreme_outlier_percentage,
}
