"""Spectrum of the update ΔW = B − A: is it low-rank (LoRA-like) or full-rank?

The singular values come from the eigenvalues of the float64 Gram matrix on
the smaller side, built from row chunks of ΔW. That never materialises ΔW
(a chunk of rows at a time is upcast), needs only min(m, n)² memory, and one
GEMM plus ``eigvalsh`` is several times faster than ``svdvals``. Squaring
halves the usable precision, which float64 leaves ample for energy-based
ranks (σ down to ~1e-8 σ_max is resolved).
"""

from __future__ import annotations

import math
from typing import Any

import torch

UPDATE_KEYS: tuple[str, ...] = ("update_stable_rank", "update_effective_rank", "update_rank_90")

#: Rows of ΔW upcast at a time: bounds the float64 working set to ~4 MiB per operand row block.
_ROW_CHUNK_BYTES = 4 << 20


def _as_matrix(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def update_gram(a: torch.Tensor, b: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """float64 Gram of ΔW = b − a on its smaller side (ΔWᵀΔW or ΔWΔWᵀ); only its lower triangle is filled."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError("the update spectrum needs a matrix (2 or more dimensions)")
    dev = torch.device(device) if device is not None else a.device
    ma, mb = _as_matrix(a), _as_matrix(b)
    if ma.shape[0] < ma.shape[1]:
        # Wide: ΔWΔWᵀ is the small Gram; chunking the rows of ΔWᵀ keeps the same loop.
        ma, mb = ma.T, mb.T
    rows, cols = ma.shape
    step = max(1, _ROW_CHUNK_BYTES // (8 * cols))
    gram = torch.zeros(cols, cols, dtype=torch.float64, device=dev)
    blocks = _lower_blocks(cols)
    with torch.no_grad():
        for start in range(0, rows, step):
            d = mb[start : start + step].to(dev, torch.float64) - ma[start : start + step].to(dev, torch.float64)
            for rows_of, cols_of in blocks:
                gram[rows_of, cols_of].addmm_(d[:, rows_of].T, d[:, cols_of])
    return gram


def _lower_blocks(n: int) -> list[tuple[slice, slice]]:
    """Block pairs covering the lower triangle of an n×n matrix.

    torch has no SYRK; computing only the lower blocks of the symmetric Gram
    (eigvalsh reads just that triangle) saves about a third of the GEMM work
    on 4 blocks, while blocks of >= ~192 keep each GEMM efficient.
    """
    k = max(1, min(4, n // 192))
    edges = [round(i * n / k) for i in range(k + 1)]
    parts = [slice(edges[i], edges[i + 1]) for i in range(k)]
    return [(parts[i], parts[j]) for i in range(k) for j in range(i + 1)]


def spectrum_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Singular values (descending, float64, on the CPU) from a Gram matrix's lower triangle.

    Eigenvalues at round-off level become 0.
    """
    eig = torch.linalg.eigvalsh(gram, UPLO="L").flip(0).clamp_min(0.0).cpu()
    if eig.numel() and eig[0] > 0:
        # eigvalsh is accurate to ~n·eps·λ_max in absolute terms: anything below is noise, not rank.
        eig[eig < eig.numel() * torch.finfo(torch.float64).eps * eig[0]] = 0.0
    return eig.sqrt()


def zero_update_metrics() -> dict[str, Any]:
    """The metrics of ΔW = 0 (identical tensors), without computing a spectrum: undefined ranks are None."""
    return {"update_stable_rank": None, "update_effective_rank": None, "update_rank_90": 0}


def spectrum_metrics(sv: torch.Tensor, energy: float = 0.9) -> dict[str, Any]:
    """Ranks of a matrix from its singular values.

    - ``update_stable_rank``: ‖ΔW‖_F² / σ_max².
    - ``update_effective_rank``: exp of the entropy of σ / Σσ (Roy & Vetterli).
    - ``update_rank_90``: fewest singular values whose σ² hold ``energy`` of ‖ΔW‖_F².

    A zero update (no change at all) has ``update_rank_90`` 0 (no singular
    value is needed to hold its zero energy) and ``update_stable_rank`` /
    ``update_effective_rank`` None: both divide by σ_max² or Σσ, 0/0 there
    (see :func:`zero_update_metrics`).
    """
    sv = sv.double()
    if sv.numel() == 0 or float(sv[0]) == 0.0:
        return zero_update_metrics()
    sq = sv.square()
    total = float(sq.sum())
    p = sv / sv.sum()
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    cum = sq.cumsum(0)
    # Tolerance so that energy held exactly at the boundary (e.g. rank-1 with 0.9) is not missed by rounding.
    rank = int(torch.searchsorted(cum, torch.tensor(energy * total * (1 - 1e-12), dtype=torch.float64))) + 1
    return {
        "update_stable_rank": total / float(sq[0]),
        "update_effective_rank": math.exp(entropy),
        "update_rank_90": min(rank, sv.numel()),
    }


def update_spectrum(a: torch.Tensor, b: torch.Tensor, device: torch.device | str | None = None) -> dict[str, Any]:
    """Rank metrics of ΔW = b − a (see :func:`spectrum_metrics`)."""
    return spectrum_metrics(spectrum_from_gram(update_gram(a, b, device=device)))
