"""The analysis thread: one at a time, in order, at low priority, with one torch thread.

On a small machine the analysis competes with training for the same cores.
Two things keep it out of the way: the thread lowers its own scheduling
priority (Linux ``SCHED_IDLE``, per thread), so the kernel gives training the
cores first and analysis the idle time between ops; and it runs torch with
``analysis_threads`` intra-op threads. ``torch.set_num_threads`` is per thread
for OpenMP and MKL but also sets the default every *new* thread starts with,
so the creating thread puts that default back once the worker is up (after
the worker has pinned its own count: see ``_run``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

_STOP = object()


PRIORITIES = ("idle", "low", "normal")


def lower_priority(priority: str) -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread; elsewhere a no-op).

    ``idle``: SCHED_IDLE, the thread runs only on a core nothing else wants and
    is preempted at once when training needs it back (falls back to ``low``).
    ``low``: niceness 10. ``normal``: unchanged.
    """
    tid = threading.get_native_id()
    if priority == "idle" and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError as exc:
            log.debug("SCHED_IDLE refused (%s); using niceness", exc)
    if priority in ("idle", "low") and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 10)
        except OSError as exc:
            log.debug("could not lower the analysis thread's priority: %s", exc)


class AnalysisWorker:
    """Runs ``handle(job)`` for submitted jobs on one daemon thread; counts what is still to do."""

    def __init__(self, handle: Callable[[Any], None], *, threads: int = 1, priority: str = "low",
                 name: str = "weightscope-monitor") -> None:
        self._handle = handle
        self._threads = threads
        self._priority = priority
        self._name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet finished (the one in analysis included)."""
        with self._lock:
            return self._pending

    def submit(self, job: Any) -> None:
        with self._lock:
            self._pending += 1
        self._ensure_started()
        self._queue.put(job)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job is done; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._thread = None

    def _ensure_started(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        ready = threading.Event()
        caller_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self._name, daemon=True)
        self._thread.start()
        ready.wait(5.0)
        # The worker's set_num_threads also changed the default for threads created from now on.
        torch.set_num_threads(caller_threads)

    def _run(self, ready: threading.Event) -> None:
        try:
            lower_priority(self._priority)
            # ATen initialises a thread's OpenMP thread count lazily, on its first parallel op, from the
            # process-wide default, which the creating thread restores below; initialise it now so
            # the count set next is the one that sticks. Two OpenMP teams on a small machine slow
            # training far beyond the analysis's own CPU time (libgomp throttles every team's spinning).
            torch.get_num_threads()
            torch.set_num_threads(max(1, self._threads))
        finally:
            ready.set()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._handle(job)
            except Exception:  # handle() isolates its own failures; this is the last net
                log.exception("weightscope: analysis failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
