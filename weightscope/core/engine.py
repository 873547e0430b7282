"""The engine: which tensors, in what order, on how many threads, on which device.

Analyzers know nothing of this. Work items are closures that load their own
tensor, so at most ``num_workers`` tensors are in memory at any time, and the
largest go first so a big embedding does not finish last on one core.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from ..analyzers import analyze_tensor, methods_for, resolve_methods
from ..errors import WeightScopeError
from ..sources.base import TensorRef, TensorSource
from .device import resolve_device
from .results import ScanResults

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    """What the engine reports to; the CLI passes a rich progress bar."""

    def start(self, total: int, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: torch intra-op threads of every analysis task, sequential or parallel, on any machine.
#: BLAS/LAPACK and ATen's reductions split their sums by thread count, so the last bits of a
#: result depend on it (a 512x1536 tensor's condition number: 3.820837024417388 on 1 thread,
#: 3.8208370244173633 on 2). A fixed count makes every ``parallel``/``num_workers`` setting and
#: core count give bitwise-identical results; parallelism comes from concurrent tasks. One thread
#: is also the fastest on a loaded machine: with two, the many small chunked ops wait on
#: descheduled threads (measured 60x slower on 2 busy cores).
ANALYSIS_THREADS = 1


def _on_new_thread(fn: Callable[[], R]) -> R:
    out: list[R] = []
    t = threading.Thread(target=lambda: out.append(fn()), name="weightscope-threads")
    t.start()
    t.join()
    return out[0]


def _use_analysis_threads() -> None:
    """Give the calling thread ``ANALYSIS_THREADS`` intra-op threads.

    ``torch.set_num_threads`` is per thread (OpenMP and MKL) but ATen initialises a thread's count
    lazily, on its first parallel op, from a process-wide default: the ``get_num_threads`` call
    forces that initialisation first so it cannot later override the count set here.
    """
    torch.get_num_threads()
    torch.set_num_threads(ANALYSIS_THREADS)


# The process-wide default is shared by every scan in flight (a monitor's analysis thread and a
# user's scan, say): it is saved when the first one starts and put back when the last one ends,
# or overlapping scans would restore each other's temporary value.
_default_lock = threading.Lock()
_default_users = 0
_default_saved: int | None = None


@contextmanager
def _threads_restored():
    """Restore, on exit, the calling thread's torch thread count and the process-wide default
    that threads created later start with (``torch.set_num_threads`` on any thread sets both)."""
    global _default_users, _default_saved
    before = torch.get_num_threads()
    with _default_lock:
        if _default_users == 0:  # a fresh thread reads the default, changing nothing
            _default_saved = _on_new_thread(torch.get_num_threads)
        _default_users += 1
    try:
        yield
    finally:
        torch.set_num_threads(before)
        with _default_lock:
            _default_users -= 1
            saved = _default_saved
            if _default_users == 0 and saved is not None and _on_new_thread(torch.get_num_threads) != saved:
                _on_new_thread(lambda: torch.set_num_threads(saved))


def run_tasks(
    tasks: Sequence[T],
    fn: Callable[[T], R],
    *,
    weight: Callable[[T], int] = lambda _t: 0,
    parallel: bool = True,
    num_workers: int | None = None,
    on_done: Callable[[T, R], None] | None = None,
) -> list[R]:
    """Run ``fn`` over ``tasks``; results come back in task order whatever the schedule.

    In parallel mode the heaviest tasks are started first and at most
    ``num_workers`` run (and hold memory) at once. ``on_done`` runs on the
    calling thread as each task finishes.
    """
    workers = cpu_count() if num_workers is None else num_workers
    if workers < 1:
        raise WeightScopeError(f"num_workers must be at least 1, got {workers}")
    results: list[Any] = [None] * len(tasks)
    if not parallel or workers == 1 or len(tasks) <= 1:
        # One task at a time, on the calling thread.
        with _threads_restored():
            _use_analysis_threads()
            for i, task in enumerate(tasks):
                results[i] = fn(task)
                if on_done:
                    on_done(task, results[i])
        return results

    order = sorted(range(len(tasks)), key=lambda i: -weight(tasks[i]))
    # Each worker sets its own thread count; the calling thread's is left alone.
    with _threads_restored(), ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix="weightscope", initializer=_use_analysis_threads
    ) as pool:
        pending: dict[Future, int] = {}
        queue = iter(order)
        try:
            # Submitting lazily (not all at once) keeps cancellation cheap on error.
            for i in queue:
                pending[pool.submit(fn, tasks[i])] = i
                if len(pending) >= workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    results[i] = fut.result()
                    if on_done:
                        on_done(tasks[i], results[i])
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(fn, tasks[nxt])] = nxt
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return results


@dataclass
class Selection:
    """The tensors a scan will analyse, keyed by layer name, plus what it left out and why."""

    layers: list[tuple[str, TensorRef]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def layer_key(tensor_name: str) -> str:
    """The layer key is the tensor name without its trailing ``.weight``."""
    return tensor_name.removesuffix(".weight")


def compile_pattern(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise WeightScopeError(f"invalid {what} regex {pattern!r}: {exc}") from exc


def select_tensors(
    refs: Sequence[TensorRef],
    *,
    layers: str | None = None,
    exclude: str | None = None,
    include_vectors: bool = False,
) -> Selection:
    """Pick floating-point matrices (and vectors if asked), apply regexes, fold tied tensors."""
    include_re, exclude_re = compile_pattern(layers, "layers"), compile_pattern(exclude, "exclude")
    sel = Selection()
    by_storage: dict[Any, str] = {}
    for ref in refs:
        key = layer_key(ref.name)
        if include_re and not (include_re.search(key) or include_re.search(ref.name)):
            continue
        if exclude_re and (exclude_re.search(key) or exclude_re.search(ref.name)):
            continue
        if not ref.is_floating:
            sel.skipped[ref.name] = f"non-floating dtype {str(ref.dtype).removeprefix('torch.')}"
            continue
        if len(ref.shape) < 2 and not include_vectors:
            sel.skipped[ref.name] = "vector (pass include_vectors=True to analyse)"
            continue
        if ref.storage_id is not None:
            first = by_storage.setdefault(ref.storage_id, key)
            if first != key:
                sel.aliases[key] = first
                continue
        sel.layers.append((key, ref))
    return sel


def _analyze_ref(ref: TensorRef, methods: list[str], device: torch.device) -> dict[str, Any]:
    try:
        tensor = ref.load()
    except Exception as exc:  # a corrupt tensor sinks its layer, not the scan
        log.warning("could not load %s: %s", ref.name, exc)
        return {m: {"error": f"load failed: {exc}"} for m in methods_for(len(ref.shape), methods)}
    return analyze_tensor(tensor, methods, device=device)


def scan_source(
    source: TensorSource,
    methods: str | Sequence[str] | None = None,
    *,
    layers: str | None = None,
    exclude: str | None = None,
    include_vectors: bool = False,
    parallel: bool = True,
    num_workers: int | None = None,
    device: str | torch.device | None = "cpu",
    progress: Progress | None = None,
) -> ScanResults:
    """Scan every selected tensor of ``source`` with ``methods``."""
    chosen = resolve_methods(methods)
    dev = resolve_device(device)
    sel = select_tensors(source.refs(), layers=layers, exclude=exclude, include_vectors=include_vectors)
    if progress:
        progress.start(len(sel.layers), sum(ref.nbytes for _, ref in sel.layers))
    outputs = run_tasks(
        sel.layers,
        lambda item: _analyze_ref(item[1], chosen, dev),
        weight=lambda item: item[1].numel,
        parallel=parallel,
        num_workers=num_workers,
        on_done=(lambda item, _r: progress.advance(item[1].nbytes)) if progress else None,
    )
    return ScanResults(
        {key: out for (key, _), out in zip(sel.layers, outputs)},
        source=source.description,
        methods=chosen,
        aliases=sel.aliases,
        # Tensors the source itself could not offer (a dtype safetensors' torch side lacks, say) too.
        skipped={**getattr(source, "skipped", {}), **sel.skipped},
        stored_dtypes={key: str(ref.dtype).removeprefix("torch.") for key, ref in sel.layers},
        stored_shapes={key: list(ref.shape) for key, ref in sel.layers},
    )
