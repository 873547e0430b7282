"""What the background thread does with a snapshot: scan it, diff it, histogram it.

Plain functions of tensors, so a scan of saved checkpoints can call them too.
The scan is the analyzers' own (``analyze_tensor``) and the diffs are the
comparison's own (``diff_metrics``); nothing is recomputed here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analyzers import analyze_tensor
from ..comparison import diff_metrics
from ..core.engine import run_tasks

log = logging.getLogger(__name__)


def scan_tensors(
    tensors: Mapping[str, torch.Tensor],
    methods: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    num_workers: int = 1,
    own_threads: bool = False,
    pool_cpu: list[float] | None = None,
) -> dict[str, dict[str, Any]]:
    """``layer -> method -> metrics`` for tensors already in memory, in their order.

    Through the engine, like ``weightscope.scan``: one torch thread per tensor, so the
    numbers match a scan of the same weights bit for bit. ``own_threads=True`` (the
    monitor's analysis thread, sized by ``analysis_threads``) analyses one tensor at a
    time at the calling thread's own torch thread count instead.

    ``pool_cpu``, when given, receives the CPU seconds of each tensor analysed on another
    thread than the caller's, which the caller's own CPU clock does not see.
    """
    items = list(tensors.items())
    methods = list(methods)
    if own_threads:
        return {key: analyze_tensor(t, methods, device=device) for key, t in items}
    caller = threading.current_thread()

    def task(kv: tuple[str, torch.Tensor]) -> dict[str, Any]:
        t0 = time.thread_time()
        out = analyze_tensor(kv[1], methods, device=device)
        if pool_cpu is not None and threading.current_thread() is not caller:
            pool_cpu.append(time.thread_time() - t0)  # list.append is atomic: no lock needed
        return out

    outs = run_tasks(items, task, weight=lambda kv: kv[1].numel(), parallel=num_workers > 1, num_workers=num_workers)
    return {key: out for (key, _), out in zip(items, outs)}


def diff_layers(
    reference: Mapping[str, torch.Tensor] | None,
    current: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
) -> dict[str, dict[str, Any]]:
    """Pair metrics (``relative_l2_distance``, ``cosine_similarity``, ...) for layers present in both."""
    if not reference:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for key, cur in current.items():
        ref = reference.get(key)
        if ref is None or ref.shape != cur.shape:
            continue  # a layer that appeared or was resized has no drift to speak of
        try:
            out[key] = diff_metrics(ref, cur, device=device)
        except Exception as exc:  # one odd tensor must not cost the others their diffs
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def histogram_summary(tensor: torch.Tensor, bins: int = 64) -> dict[str, Any] | None:
    """Finite values binned: what TensorBoard's raw histogram and ``wandb.Histogram`` both take.

    On the CPU whatever the tensor's device: ``torch.histogram`` has no CUDA kernel.
    """
    flat = tensor.detach().reshape(-1).to("cpu", torch.float64)
    flat = flat[torch.isfinite(flat)]
    if flat.numel() == 0:
        return None
    lo, hi = float(flat.min()), float(flat.max())
    if lo == hi:
        hi = lo + 1e-12
    counts, edges = torch.histogram(flat, bins=bins, range=(lo, hi))
    return {
        "min": lo,
        "max": float(flat.max()),
        "num": int(flat.numel()),
        "sum": float(flat.sum()),
        "sum_squares": float(flat.dot(flat)),
        "edges": edges.tolist(),
        "counts": counts.tolist(),
    }


@dataclass
class Analysis:
    """One rank's share of one snapshot, analysed. Plain values only, so it pickles across ranks."""

    step: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    diff_prev: dict[str, dict[str, Any]] = field(default_factory=dict)
    diff_base: dict[str, dict[str, Any]] = field(default_factory=dict)
    histograms: dict[str, dict[str, Any]] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prev_step: int | None = None

    def merge(self, other: Analysis) -> None:
        for mine, theirs in ((self.results, other.results), (self.diff_prev, other.diff_prev),
                             (self.diff_base, other.diff_base), (self.histograms, other.histograms)):
            mine.update(theirs)
        self.frozen = sorted(set(self.frozen) | set(other.frozen))
        self.seconds = max(self.seconds, other.seconds)
