"""The work done on one checkpoint: its scan, its drift from earlier checkpoints, its histograms.

The scan is ``scan_source``, exactly what ``weightscope scan`` runs on that
checkpoint. The drift is the live monitor's own ``diff_layers`` (pairs by
layer key, same shapes only, ``diff_metrics`` per pair), run one layer per
engine task so that the pool bounds memory and uses every core; the current
tensor is read once for both comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.engine import Progress, scan_source, select_tensors, run_tasks
from ..core.results import ScanResults
from ..monitor.analysis import diff_layers, histogram_summary
from ..sources.base import TensorRef, TensorSource

Diff = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class RunOptions:
    """How every checkpoint of a run is read and analysed."""

    methods: tuple[str, ...]
    layers: str | None = None
    exclude: str | None = None
    include_vectors: bool = False
    parallel: bool = True
    num_workers: int | None = None
    device: torch.device = torch.device("cpu")

    def selection(self) -> dict[str, Any]:
        """What decides *which* tensors a result covers (so it is part of the cache key)."""
        return {"layers": self.layers, "exclude": self.exclude, "include_vectors": self.include_vectors}


def scan_checkpoint(
    source: TensorSource, methods: Sequence[str], opts: RunOptions, progress: Progress | None = None
) -> ScanResults:
    return scan_source(
        source, list(methods), **opts.selection(), parallel=opts.parallel, num_workers=opts.num_workers,
        device=opts.device, progress=progress,
    )


def _refs(source: TensorSource | None, opts: RunOptions) -> dict[str, TensorRef]:
    if source is None:
        return {}
    return dict(select_tensors(source.refs(), **opts.selection()).layers)


def _one(refs: dict[str, TensorRef], key: str) -> dict[str, torch.Tensor]:
    return {key: refs[key].load()} if key in refs else {}


def diff_checkpoint(
    current: TensorSource,
    previous: TensorSource | None,
    base: TensorSource | None,
    opts: RunOptions,
    progress: Progress | None = None,
) -> tuple[Diff | None, Diff | None]:
    """``(diff vs previous, diff vs base)``, each ``layer -> pair metrics``; None where that side is None.

    Pass ``base=None`` when the base diff is not needed (cached, or the base
    is the previous checkpoint: then it is the same numbers).
    """
    cur_refs = list(_refs(current, opts).items())
    prev_refs, base_refs = _refs(previous, opts), _refs(base, opts)

    def task(item: tuple[str, TensorRef]) -> tuple[Diff, Diff]:
        key, ref = item
        try:
            cur = {key: ref.load()}
            dp = diff_layers(_one(prev_refs, key), cur, device=opts.device) if previous is not None else {}
            db = diff_layers(_one(base_refs, key), cur, device=opts.device) if base is not None else {}
        except Exception as exc:  # an unreadable tensor costs its own layer only, as in a scan
            err = {key: {"error": f"load failed: {exc}"}}
            return (err if previous is not None else {}), (err if base is not None else {})
        return dp, db

    if progress and cur_refs:
        progress.start(len(cur_refs), sum(r.nbytes for _, r in cur_refs))
    outs = run_tasks(
        cur_refs, task, weight=lambda item: item[1].numel, parallel=opts.parallel, num_workers=opts.num_workers,
        on_done=(lambda item, _o: progress.advance(item[1].nbytes)) if progress else None,
    )
    diff_prev: Diff = {}
    diff_base: Diff = {}
    for dp, db in outs:
        diff_prev.update(dp)
        diff_base.update(db)
    return (diff_prev if previous is not None else None), (diff_base if base is not None else None)


def histogram_checkpoint(
    source: TensorSource, bins: int, opts: RunOptions, progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """``layer -> histogram`` of the selected tensors: the live monitor's own ``histogram_summary``."""
    refs = list(_refs(source, opts).items())

    def task(item: tuple[str, TensorRef]) -> dict[str, dict[str, Any]]:
        key, ref = item
        try:
            hist = histogram_summary(ref.load(), bins)
        except Exception:  # an unreadable tensor already shows as a scan error; no histogram for it
            return {}
        return {key: hist} if hist is not None else {}

    if progress and refs:
        progress.start(len(refs), sum(r.nbytes for _, r in refs))
    outs = run_tasks(
        refs, task, weight=lambda item: item[1].numel, parallel=opts.parallel, num_workers=opts.num_workers,
        on_done=(lambda item, _o: progress.advance(item[1].nbytes)) if progress else None,
    )
    return {key: hist for out in outs for key, hist in out.items()}
