"""Heavy-tailed analysis of the empirical spectral density, WeightWatcher style.

The eigenvalues are lambda = sigma**2 of WᵀW for the raw (out, -1) matrix W,
not normalised by N: WeightWatcher's current default (its ``normalize`` option
is off, and its 1/N scaling is commented out), so ``alpha`` and
``log_spectral_norm`` compare directly with WeightWatcher's ``alpha`` and
``log_spectral_norm`` for dense layers. (For convolutions WeightWatcher fits
each kernel-position slice separately; here a 4-D tensor is flattened to
(out, -1) like every matrix method.)

The fit is WeightWatcher's own power-law fit (``WWFit``, the same as the
``powerlaw`` package for a continuous power law without xmax), see
``_powerlaw``. Eigenvalues that are zero by the numerical-rank tolerance are
left out (their log is -inf). With fewer than ``MIN_EIGENVALUES`` nonzero
eigenvalues (a LoRA factor of rank 8, a small or all-zero matrix) there is no
tail to fit: the fit's values are NaN ("could not be measured", so a filter such
as ``alpha < 2`` is False rather than a TypeError) and ``note`` says why;
``log_spectral_norm`` is still given when there is a nonzero eigenvalue. A
tensor with NaN/Inf weights (or none) gives NaN values, as ``spectral`` does.
"""

from __future__ import annotations

import math
from typing import Any

from ._powerlaw import fit_power_law
from .spectral import unavailable
from .view import TensorView, not_computed

MIN_EIGENVALUES = 10
KEYS = ("alpha", "alpha_weighted", "ks_distance", "xmin", "num_pl_spikes", "log_spectral_norm")


def analyze(view: TensorView) -> dict[str, Any]:
    note = unavailable(view)
    if note:
        return not_computed(KEYS, note)
    s = view.nonzero_singular_values  # descending
    if s.size < MIN_EIGENVALUES:
        return not_computed(KEYS, f"only {s.size} nonzero eigenvalues; a power-law fit needs {MIN_EIGENVALUES}",
                            log_spectral_norm=2 * math.log10(s[0]) if s.size else None)
    # The fit is scale-free (it sees only ratios), so it runs on lambda / lambda_max: no overflow
    # for float64 weights beyond 1e154, and xmin is scaled back once.
    lam = ((s / s[0]) ** 2)[::-1]  # ascending
    fit = fit_power_law(lam)
    log_norm = 2 * math.log10(s[0])
    return {
        "alpha": fit.alpha,
        "alpha_weighted": fit.alpha * log_norm,
        "ks_distance": fit.ks_distance,
        "xmin": fit.xmin * float(s[0]) * float(s[0]),  # float * float overflows to inf, never raises
        "num_pl_spikes": int((lam >= fit.xmin).sum()),
        "log_spectral_norm": log_norm,
    }
