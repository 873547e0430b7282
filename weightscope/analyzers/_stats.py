"""Streaming statistics over tensor chunks: moments and exact order statistics.

Both work on a sequence of 1-D chunks so that no analyzer ever needs a float64
copy of a whole tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Moments:
    """Moments of the finite values of a tensor, plus counts of the others.

    ``m2``/``m3``/``m4`` are central sums (``sum((x - mean) ** k)``), merged
    chunk by chunk with Pébay's pairwise update so that they stay accurate
    when the mean is large compared with the spread (e.g. LayerNorm scales).
    """

    count: int = 0  # finite elements
    nan_count: int = 0
    inf_count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    abs_sum: float = 0.0
    zeros: int = 0

    @property
    def sumsq(self) -> float:
        return self.m2 + self.count * self.mean * self.mean

    def merge(self, o: Moments) -> Moments:
        na, nb = self.count, o.count
        if nb == 0 or na == 0:
            base = self if nb == 0 else o
            return Moments(
                base.count, self.nan_count + o.nan_count, self.inf_count + o.inf_count,
                base.mean, base.m2, base.m3, base.m4, min(self.min, o.min), max(self.max, o.max),
                self.abs_sum + o.abs_sum, self.zeros + o.zeros,
            )  # fmt: skip
        n = na + nb
        d = o.mean - self.mean
        dn = d / n
        m2 = self.m2 + o.m2 + d * dn * na * nb
        m3 = self.m3 + o.m3 + d * dn * dn * na * nb * (na - nb) + 3 * dn * (na * o.m2 - nb * self.m2)
        m4 = (
            self.m4 + o.m4
            + d * dn * dn * dn * na * nb * (na * na - na * nb + nb * nb)
            + 6 * dn * dn * (na * na * o.m2 + nb * nb * self.m2)
            + 4 * dn * (na * o.m3 - nb * self.m3)
        )  # fmt: skip
        return Moments(
            n, self.nan_count + o.nan_count, self.inf_count + o.inf_count,
            self.mean + dn * nb, m2, m3, m4, min(self.min, o.min), max(self.max, o.max),
            self.abs_sum + o.abs_sum, self.zeros + o.zeros,
        )  # fmt: skip


def chunk_moments(x: torch.Tensor) -> Moments:
    """Moments of one 1-D chunk, accumulated in float64 (one host sync for a finite chunk)."""
    x = x.to(torch.float64)
    if x.numel() == 0:
        return Moments()
    m = _finite_chunk_moments(x)
    if math.isfinite(m.mean) and math.isfinite(m.m2):
        return m
    # A NaN/Inf (or float64 overflow) poisoned the sums: redo over the finite values only.
    finite = torch.isfinite(x)
    nan_count = int(torch.isnan(x).sum())
    inf_count = x.numel() - int(finite.sum()) - nan_count
    x = x[finite]
    m = _finite_chunk_moments(x) if x.numel() else Moments()
    return replace(m, nan_count=nan_count, inf_count=inf_count)


def _finite_chunk_moments(x: torch.Tensor) -> Moments:
    n = x.numel()
    mean = x.sum() / n  # stays on the device: a single host sync, below
    d = x - mean
    d2 = d * d
    mn, mx = torch.aminmax(x)
    vals = torch.stack(
        [mean, d2.sum(), torch.dot(d2, d), torch.dot(d2, d2), mn, mx,
         torch.linalg.vector_norm(x, 1), torch.count_nonzero(x).to(torch.float64)]
    ).tolist()  # fmt: skip
    mean_, m2, m3, m4, lo, hi, abs_sum, nonzero = vals
    return Moments(n, 0, 0, mean_, m2, m3, m4, lo, hi, abs_sum, n - int(nonzero))


def moments(chunks: Iterable[torch.Tensor]) -> Moments:
    total = Moments()
    for x in chunks:
        total = total.merge(chunk_moments(x))
    return total


# --- comparisons on float32 chunks -------------------------------------------


def at_least(v: float, dtype: torch.dtype) -> float:
    """The smallest ``dtype`` value >= v: for x of that dtype, ``x < v`` exactly when ``x < it``.

    torch rounds a Python scalar to the tensor's dtype before comparing, which can move a
    float64 threshold across a float32 value; thresholds go through this (or ``at_most``).
    """
    if dtype != torch.float32:
        return v
    with np.errstate(over="ignore"):
        f = np.float32(v)
    return float(np.nextafter(f, np.float32(np.inf)) if float(f) < v else f)  # compared in float64


def at_most(v: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value <= v: for x of that dtype, ``x > v`` exactly when ``x > it``
    (and ``x <= v`` exactly when ``x <= it``)."""
    if dtype != torch.float32:
        return v
    with np.errstate(over="ignore"):
        f = np.float32(v)
    return float(np.nextafter(f, np.float32(-np.inf)) if float(f) > v else f)


# --- order statistics -------------------------------------------------------


def linear_quantile_positions(n: int, q: float) -> tuple[int, int, float]:
    """(lower rank, upper rank, weight) exactly as numpy's default 'linear' method computes them."""
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    lo = math.floor(virtual)
    return lo, lo + 1, virtual - lo


def lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp``: the two-sided form keeps the result monotone and exact at t=0 and 1."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def kth_values(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    """Values of the given 0-based ranks of a 1-D tensor that the caller owns (it is reordered)."""
    if values.device.type == "cpu":
        a = values.numpy()
        a.partition(sorted(set(ranks)))  # introselect: O(n), no sort
        return [float(a[k]) for k in ranks]
    s = torch.sort(values).values  # a device sort is fast; a host round trip of big data is not
    return s[torch.tensor(list(ranks), device=values.device)].tolist()


# Up to this many values one partition of a copy beats two passes (measured, one thread: a
# 768x256 matrix takes 2.6 ms direct, 1.0 ms through the histogram).
DIRECT_LIMIT = 1 << 14
_NBINS = 1 << 16
_SHIFT = {torch.float32: 16, torch.float64: 48}
_INT = {torch.float32: torch.int32, torch.float64: torch.int64}


def _bin_keys(x: torch.Tensor, absolute: bool) -> torch.Tensor:
    """The top 16 bits of each value's IEEE pattern: a bin id, monotone in |x| within a sign.

    A float32 bin spans 1/128 of a binade, so a bin holding a quantile of a weight tensor holds
    about 1 % of the values or less. Masking the sign bit bins |x| without computing |x|.
    """
    k = (x.view(_INT[x.dtype]) >> _SHIFT[x.dtype]) & (0x7FFF if absolute else 0xFFFF)
    return k if x.device.type == "cpu" else k.long()  # CUDA bincount wants int64


def _ascending_bins(device: torch.device) -> torch.Tensor:
    """Bin ids in ascending value order: negative bins by decreasing magnitude, then positive ones."""
    neg = torch.arange(_NBINS - 1, _NBINS // 2 - 1, -1, device=device)
    return torch.cat([neg, torch.arange(_NBINS // 2, device=device)])


def histogram(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Counts per 16-bit bin (see ``_bin_keys``) of float32/float64 values; |values| bins derive
    from it, so one histogram serves signed and magnitude quantiles."""
    hist: torch.Tensor | None = None
    for x in chunks:
        h = torch.bincount(_bin_keys(x, False), minlength=_NBINS)
        hist = h if hist is None else hist.add_(h)
    assert hist is not None
    return hist


def select_ranks(
    chunks: Callable[[], Iterable[torch.Tensor]],
    n: int,
    ranks: Sequence[int],
    absolute: bool = False,
    hist: Callable[[], torch.Tensor] | None = None,
) -> list[float]:
    """Exact values at ``ranks`` (0-based, ascending order) of the n values (or |values|) that
    ``chunks()`` yields, as float32 or float64 chunks.

    Large inputs take two cheap passes and no sort: a histogram over the 65536 top-bit bins
    (``hist()`` when given, to share it) locates the bin of every wanted rank; the second pass
    keeps only the values in those bins, and the ranks are selected among the kept values.
    Exact by construction; the cost does not grow with the number of ranks.
    """
    if n <= DIRECT_LIMIT:
        return _direct(chunks, ranks, absolute)
    counts = hist() if hist is not None else histogram(chunks())
    device = counts.device
    if absolute:  # a magnitude bin is the sign-masked bin id: fold the two signs together
        counts = counts[: _NBINS // 2] + counts[_NBINS // 2 :]
        order = torch.arange(_NBINS // 2, device=device)
    else:
        order = _ascending_bins(device)
    cum = counts[order].cumsum(0).cpu().numpy()
    order_np = order.cpu().numpy()
    pos = np.searchsorted(cum, np.asarray(ranks), side="right")  # first bin with cumulative count > k
    wanted = torch.zeros(counts.numel(), dtype=torch.bool, device=device)
    wanted[torch.from_numpy(order_np[pos]).to(device)] = True

    # One buffer sized from the histogram: many small kept pieces interleaved with the chunk
    # temporaries would fragment the heap (measured: +100 MB peak on a 150 MB tensor).
    total = int(counts[wanted].sum())
    vals: torch.Tensor | None = None
    filled = 0
    for x in chunks():
        if vals is None:
            vals = torch.empty(total, dtype=x.dtype, device=x.device)
        part = x[wanted.index_select(0, _bin_keys(x, absolute))]  # 3x faster than wanted[keys]
        vals[filled : filled + part.numel()] = part
        filled += part.numel()
    assert vals is not None and filled == total
    keys = _bin_keys(vals, absolute)
    if absolute:
        vals = vals.abs()
    out: dict[int, float] = {}
    for p in sorted(set(pos.tolist())):
        ks = [k for k, q in zip(ranks, pos, strict=True) if q == p]
        before = int(cum[p - 1]) if p > 0 else 0
        out.update(zip(ks, kth_values(vals[keys == int(order_np[p])], [k - before for k in ks]), strict=True))
    return [out[k] for k in ranks]


def _direct(chunks: Callable[[], Iterable[torch.Tensor]], ranks: Sequence[int], absolute: bool) -> list[float]:
    parts = [x.abs() if absolute else x for x in chunks()]
    values = torch.cat(parts)  # always a fresh copy, safe to reorder
    del parts
    return kth_values(values, ranks)


def quantiles(
    chunks: Callable[[], Iterable[torch.Tensor]],
    n: int,
    qs: Sequence[float],
    absolute: bool = False,
    hist: Callable[[], torch.Tensor] | None = None,
) -> list[float]:
    """Quantiles (fractions in [0, 1]) equal to ``numpy.percentile(values, 100*q)`` on the float64
    values (|values| when ``absolute``). ``chunks()`` yields the n finite values, float32/float64."""
    if n == 0:
        return [math.nan] * len(qs)
    pos = [linear_quantile_positions(n, q) for q in qs]
    ranks = sorted({r for lo, hi, _ in pos for r in (lo, hi)})
    vals = dict(zip(ranks, select_ranks(chunks, n, ranks, absolute, hist), strict=True))
    return [lerp(vals[lo], vals[hi], t) for lo, hi, t in pos]
