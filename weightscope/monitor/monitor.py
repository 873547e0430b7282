"""``WeightMonitor``: snapshots, background analysis, alerts and sinks for any training loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.device import pinned_to_current
from ..core.engine import cpu_count
from ..errors import ConfigError
from ..sinks.jsonl import HISTORY_NAME, JsonlSink
from .alerts import Alert, AlertState, evaluate_alerts
from .analysis import Analysis, diff_layers, histogram_summary, scan_tensors
from .config import DEFAULT_ANALYSIS_BUDGET, MonitorConfig, parse_sink
from .distributed import Collectives, ranks_on_this_node, split_layers
from .outputs import MonitorStats, Once, open_sink
from .record import SnapshotRecord, summarize
from .snapshot import BufferPool, Selector, Snapshot, sharding_kind, take_snapshot
from .worker import AnalysisWorker

log = logging.getLogger("weightscope.monitor")

STATE_VERSION = 1
# Module-level so tests can drive them: wall time between snapshots, CPU time of the analysis thread.
_wall_clock = time.monotonic
_cpu_clock = time.thread_time
_process_clock = time.process_time  # all threads of the process: training's CPU use
BASELINE_NAME = "weightscope_baseline"
#: full_scan_every="auto" never thins full analyses cheaper than this (CPU seconds).
ALWAYS_FULL_BELOW_S = 0.05


@dataclass
class _Job:
    snapshot: Snapshot
    kind: str
    full: bool
    emit: bool = True
    charged: float = 0.0  # CPU seconds charged to the budget when the job was decided (an estimate)
    #: The final record of weights already analysed as a thinned periodic snapshot: only the
    #: methods it lacked are new; its drift is the periodic record's.
    completes: bool = False
    #: Analysed on the training thread (see ``_analyse_here``), while training waits for it.
    inline: bool = False
    #: CPU seconds of its scan spent on pool threads, which the calling thread's CPU clock misses.
    pool_cpu: list[float] = field(default_factory=list)


class WeightMonitor:
    """Weight health and drift for any training loop: call :meth:`step` after each optimizer step.

    Every ``every_n_steps`` steps the selected weights are copied (the only
    thing the loop waits for) and a background thread scans the copy, diffs
    it against the previous snapshot and the first one (the baseline), runs
    the alert rules and hands a :class:`SnapshotRecord` to the sinks, which
    are written from the thread that calls :meth:`step`. The final snapshot,
    and the baseline when the weights are on the CPU, are analysed on the
    calling thread instead (see :meth:`_analyse_here`). A JSONL history is
    always written to ``output_dir``. Nothing monitoring does can stop
    training, except ``stop_on`` (see :attr:`should_stop`).

    Example::

        >>> import tempfile, torch
        >>> from weightscope.callbacks import WeightMonitor
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> # max_pending=4: this toy trains faster than it is analysed; queue instead of skipping
        >>> monitor = WeightMonitor(every_n_steps=5, max_pending=4, output_dir=tempfile.mkdtemp())
        >>> monitor.start(model, 0)
        >>> for step in range(1, 21):
        ...     loss = model(torch.randn(4, 8)).pow(2).mean()
        ...     opt.zero_grad(); loss.backward(); opt.step()
        ...     monitor.step(model, step)
        >>> monitor.close(model, 20)
        >>> [r.step for r in monitor.records]
        [0, 5, 10, 15, 20]

    Arguments are those of the callbacks (see ``docs/monitoring.md``), plus
    ``sinks`` (``"tensorboard[:DIR]"``, ``"wandb"``, ``"jsonl[:PATH]"`` or
    objects with ``write(record)``) and ``output_dir``.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        methods: str | Iterable[str] | None = None,
        *,
        layers: str | None = None,
        exclude: str | None = None,
        alerts: Any = None,
        log_histograms: bool = False,
        background: bool = True,
        max_pending: int = 1,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        sinks: Iterable[Any] | None = None,
        output_dir: str | Path = "weightscope-logs",
        on_alert: Callable[[Alert], None] | None = None,
        stop_on: str | Iterable[str] = (),
        distributed: str = "rank0",
        full_scan_every: int | str = "auto",
        analysis_budget: float = DEFAULT_ANALYSIS_BUDGET,
        alert_window: int = 10,
        histogram_bins: int = 64,
        save_baseline: bool = True,
        analysis_threads: int = 1,
        priority: str = "low",
    ) -> None:
        self.config = MonitorConfig.build(
            every_n_steps, methods, layers=layers, exclude=exclude, alerts=alerts, log_histograms=log_histograms,
            background=background, max_pending=max_pending, device=device, num_workers=num_workers,
            distributed=distributed, stop_on=stop_on, on_alert=on_alert, full_scan_every=full_scan_every,
            analysis_budget=analysis_budget, alert_window=alert_window, histogram_bins=histogram_bins,
            save_baseline=save_baseline, analysis_threads=analysis_threads, priority=priority, sinks=sinks,
        )
        self._sink_specs = list(self.config.sinks)
        if not isinstance(output_dir, (str, Path)):
            raise ConfigError(f"output_dir must be a path, got {type(output_dir).__name__}")
        self.output_dir = Path(output_dir)
        self.stats = MonitorStats()
        self.alerts: list[Alert] = []
        self.records: list[SnapshotRecord] = []  # the last few, newest last (see keep_records)
        self.keep_records = 8
        self.should_stop = False
        self.sinks: list[Any] = []
        self._once = Once(log)
        self._worker = AnalysisWorker(self._handle, threads=self.config.analysis_threads,
                                      priority=self.config.priority)
        self._done: queue.Queue[SnapshotRecord] = queue.Queue()
        self._pool = BufferPool()
        self._selector_cache: Selector | None = None
        self._sharding: dict[int, str | None] = {}
        self._state_lock = threading.Lock()
        self._alert_state = AlertState()
        self._prev: Snapshot | None = None
        self._base: Snapshot | None = None
        self._last_step: int | None = None  # last due step seen (taken or skipped), same on every rank
        self._last_taken: int | None = None  # last step snapshotted, same on every rank
        self._base_step: int | None = None
        self._baseline_path: Path | None = None
        self._restored: dict[str, Any] | None = None
        self._periodic = 0  # periodic snapshots taken, for full_scan_every=k
        self._last_full = True  # whether the last snapshot taken got every method
        self._last_analysis: Analysis | None = None  # of the last snapshot (analysis thread), for _complete_last
        self._cores = cpu_count()
        self._full_cost: float | None = None  # CPU seconds of the last full analysis (analysis thread)
        # The budget as a bucket, in CPU seconds: earned (training thread) and spent on full analyses
        # (charged when decided, corrected by the analysis thread when the real cost is known).
        self._earned = 0.0
        self._spent = 0.0
        self._usage_mark: tuple[float, float, float] | None = None  # (wall, process CPU, analysis CPU) then
        self._coll: Collectives | None = None
        self._started = False
        self._closed = False
        self._device = self.config.device  # pinned to the training thread's GPU in start()

    # -- public -------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self._coll.rank if self._coll else 0

    @property
    def is_logging_rank(self) -> bool:
        return self.rank == 0

    @property
    def closed(self) -> bool:
        """True after :meth:`close`; a closed monitor ignores further calls."""
        return self._closed

    def add_sink(self, sink: Any) -> None:
        """A sink object (``write(record)``, optional ``flush()``/``close()``) or a sink string."""
        self._sink_specs.append(parse_sink(sink))
        if self._started:
            self._open_sinks()

    def start(self, model: torch.nn.Module, step: int = 0) -> None:
        """Take the baseline snapshot (or, after :meth:`load_state_dict`, the resume snapshot).

        Under ``torch.distributed`` every rank must call this (it creates process groups).
        """
        if self._started or self._closed:
            return
        self._started = True
        self._device = pinned_to_current(self.config.device)  # on the training thread: its GPU
        try:
            self._coll = Collectives()
        except Exception as exc:
            self._once.warn("groups", "weightscope: could not create process groups (%s); monitoring rank 0 only",
                            exc)
            self._coll = None
        if self.is_logging_rank:
            self._open_sinks()
        restored, self._restored = self._restored, None
        if self.is_logging_rank:
            self._rewind_history(int(step), resumed=bool(restored))
        if restored and self._load_baseline(restored):
            kind = "resume"
        else:
            kind = "baseline"
        self._snapshot(model, int(step), kind)

    def step(self, model: torch.nn.Module, step: int, *, last: bool = False) -> None:
        """Call after every optimizer step; snapshots when ``step`` is a multiple of ``every_n_steps``.

        ``last=True`` (the callbacks pass it when the trainer's step limit is
        reached) takes the final snapshot now, analysed in full. Should this
        step's periodic snapshot have been taken already, thinned to
        ``basic_stats``, a final record completes it: the same step again,
        with every method (:meth:`close` with ``model`` and ``step`` does the same).
        """
        if self._closed:
            return
        self._drain()
        if not self._started:
            self.start(model, step)
            return
        if last:
            if step != self._last_taken:
                self._snapshot(model, int(step), "final")
            else:
                self._complete_last(int(step))
            return
        if step % self.config.every_n_steps or (self._last_step is not None and step <= self._last_step):
            return
        self._snapshot(model, int(step), "periodic")

    def snapshot(self, model: torch.nn.Module, step: int) -> bool:
        """Snapshot now, whatever the step; False if it was skipped because analysis is behind."""
        if not self._started:
            self.start(model, step)
            return True
        return self._snapshot(model, int(step), "periodic")

    def flush(self, timeout: float | None = None) -> None:
        """Wait for pending analysis and write its records (blocks the caller)."""
        self._worker.join(timeout)
        self._drain()
        for sink in self.sinks:
            self._safely(sink, "flush")

    def close(self, model: torch.nn.Module | None = None, step: int | None = None) -> None:
        """Final snapshot (when ``model`` and ``step`` are given), wait for analysis, close own sinks."""
        if self._closed:
            return
        try:
            if model is not None and step is not None and self._started:
                if step != self._last_taken:
                    self._snapshot(model, int(step), "final")
                else:
                    self._complete_last(int(step))
            t0 = time.perf_counter()
            self.flush()
            self.stats.close_wait_s = time.perf_counter() - t0
        finally:
            self._closed = True
            self._worker.stop(timeout=30)
            for sink in self.sinks:
                self._safely(sink, "close")
            for snap in {id(s): s for s in (self._prev, self._base) if s is not None}.values():
                snap.release()
            self._prev = self._base = None
            if self._coll is not None:
                self._coll.destroy()

    def _complete_last(self, step: int) -> None:
        """Training ended at a step whose periodic snapshot was thinned: analyse those weights in full
        now, as the final record, rather than leave the run's last record without spectra."""
        self._worker.join()
        self._drain()
        last = self._last_analysis
        need = not self._last_full and self._prev is not None and last is not None and last.step == step
        split = self.config.distributed == "split" and self._coll is not None and self._coll.active
        if split:  # a collective follows: every rank must agree to take part
            (need,) = self._coll.any_flags(need)
        if not need:
            return
        if self._prev is None or last is None or last.step != step:  # nothing here, but gather all the same
            self._coll.gather_to_zero(Analysis(step))
            return
        self._handle(_Job(self._prev, "final", True, completes=True, inline=True))
        self._last_full = True
        self._drain()

    def _rewind_history(self, step: int, *, resumed: bool) -> None:
        """Set aside the history records this run replaces: those after a resume's step (its own
        record is kept and not emitted again), or from a fresh start's step on (records of an
        earlier run in the same folder, which would otherwise mix with this one's)."""
        after = step if resumed else step - 1
        for sink in self.sinks:
            if isinstance(sink, JsonlSink):
                try:
                    moved = sink.rewind(after)
                except Exception as exc:  # a damaged history must not stop training
                    self._once.warn("rewind", "weightscope: could not rewind %s to step %d: %s", sink.path, step, exc)
                    continue
                if moved and resumed:
                    log.warning("weightscope: resumed at step %d; moved %d history records of later steps from %s "
                                "to %s", step, moved, sink.path, sink.superseded_path.name)
                elif moved:
                    log.warning("weightscope: %s held %d records of an earlier run from step %d on; moved them to %s "
                                "(pass another output_dir to keep runs apart)", sink.path, moved, step,
                                sink.superseded_path.name)

    def abort(self) -> None:
        """Stop without a final snapshot (the trainer raised); what was analysed is still written."""
        self.close()

    # -- resume ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Last snapshot step, the rules' running state (drift medians, ...) and where the baseline lives."""
        with self._state_lock:
            alert_state = self._alert_state.to_dict()
        return {
            "version": STATE_VERSION,
            "last_step": self._last_taken,
            "base_step": self._base_step,
            "baseline_path": str(self._baseline_path) if self._baseline_path else None,
            "alert_state": alert_state,
            "snapshots": self.stats.snapshots,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore before :meth:`start`; the baseline weights are read back from ``baseline_path``."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            self._once.warn("state", "weightscope: ignoring monitor state of an unknown version: %r",
                            None if not isinstance(state, dict) else state.get("version"))
            return
        with self._state_lock:
            self._alert_state = AlertState.from_dict(state.get("alert_state"))
        self._last_step = self._last_taken = state.get("last_step")
        self._restored = state

    def _load_baseline(self, state: dict[str, Any]) -> bool:
        path = state.get("baseline_path")
        if self.config.distributed == "split" and path:
            path = str(self._rank_path(Path(path)))
        if not path:
            self._once.warn("baseline", "weightscope: the checkpoint's run kept no baseline weights "
                            "(save_baseline=False); drift from start is measured from the resumed weights")
            return False
        if not Path(path).is_file():
            self._once.warn("baseline", "weightscope: baseline weights %s not found; the resume snapshot becomes "
                            "the new baseline", path)
            return False
        try:
            from safetensors.torch import load_file

            tensors = load_file(path, device=str(self._device))
        except Exception as exc:
            self._once.warn("baseline", "weightscope: could not read baseline %s (%s); starting a new one", path, exc)
            return False
        self._base = Snapshot(int(state.get("base_step") or 0), tensors)
        self._base_step = self._base.step
        self._baseline_path = Path(state["baseline_path"])
        return True

    # -- snapshots (training thread) -------------------------------------------
    def _selector(self) -> Selector:
        if self._selector_cache is None:
            self._selector_cache = self._new_selector()
        return self._selector_cache

    def _new_selector(self) -> Selector:
        share = None
        if self.config.distributed == "split" and self._coll and self._coll.active:
            rank, world = self._coll.rank, self._coll.world
            share = lambda sizes: split_layers(sizes, world)[rank]  # noqa: E731
        return Selector(self.config.layers, self.config.exclude, share=share)

    def _snapshot(self, model: torch.nn.Module, step: int, kind: str) -> bool:
        # Every rank records the step, taken or not, so all ranks agree on which steps are due.
        # A resume at the very step last logged would chart that step twice: analyse it, do not emit it.
        emit = not (kind == "resume" and self._last_taken == step)
        if kind == "baseline":
            # Known here, on the training thread, so a checkpoint saved before the analysis thread
            # has written the file still points at it.
            self._base_step = step
            self._baseline_path = self._baseline_file() if self.config.save_baseline else None
        self._last_step = step
        coll = self._coll
        split = self.config.distributed == "split" and coll is not None and coll.active
        if id(model) not in self._sharding:  # fixed for a model's life; looking costs a walk over it
            try:
                self._sharding[id(model)] = sharding_kind(model)
            except Exception:  # a wrapper without .modules(): treat as plain
                self._sharding[id(model)] = None
        sharding = self._sharding[id(model)]
        sharded = sharding is not None
        takes_part = self.is_logging_rank or split or sharded
        busy = takes_part and self._worker.pending >= self.config.max_pending
        if coll is not None and coll.active:
            busy, stop = coll.any_flags(busy, self.should_stop)
            self.should_stop = self.should_stop or stop
        if busy and kind == "periodic":
            self.stats.skipped += 1
            if self.is_logging_rank:
                self._once.warn("behind", "weightscope: analysis is behind; skipped the snapshot at step %d (raise "
                                "every_n_steps or max_pending, or pass cheaper methods)", step)
            return False
        if busy:
            self._worker.join()  # the baseline/final snapshot must not be skipped
        self._last_taken = step
        if not takes_part:
            return False
        keep = self.is_logging_rank or split
        try:
            snap = take_snapshot(model, step, self._selector(), target=self._device, pool=self._pool, keep=keep,
                                 sharding=sharding)
        except Exception as exc:
            self._once.warn("copy", "weightscope: could not copy the weights at step %d: %s", step, exc)
            return False
        if snap is None:
            return False
        self.stats.snapshots += 1
        self.stats.blocking_s.append(snap.blocking_s)
        self.stats.snapshot_bytes = snap.nbytes
        full, charged = self._full_due(kind)
        self._last_full = full
        job = _Job(snap, kind, full, emit=emit, charged=charged)
        if self.config.background and not self._analyse_here(job):
            self._worker.submit(job)
        else:
            t0 = time.perf_counter()
            if kind in ("baseline", "resume"):
                log.info("weightscope: analysing the %s snapshot (%.0f MB) before the first step", kind,
                         snap.nbytes / 2**20)
            job.inline = True
            self._worker.join()  # earlier jobs first, so records stay in step order
            self._handle(job)
            self._drain()
            if kind in ("baseline", "resume"):
                self.stats.start_wait_s += time.perf_counter() - t0
        return True

    @staticmethod
    def _analyse_here(job: _Job) -> bool:
        """Whether a snapshot is analysed on the training thread rather than the analysis thread.

        The final one always: training is over, close() would wait for it anyway,
        and this thread has training's torch threads and priority (measured: 0.17 s
        on the analysis thread, 0.13 s here). The baseline too when the weights are
        on the CPU: training then keeps every core busy, and analysis beside it
        costs it about a wall second per CPU second, twice what the same analysis
        costs done first on training's own threads (measured in-run on 2 cores:
        0.34 s vs 0.16 s for this repository's benchmark model). With weights on a
        GPU the cores are idle and the baseline goes to the analysis thread.
        """
        return job.kind == "final" or (job.kind in ("baseline", "resume") and not job.snapshot.from_gpu)

    def _full_due(self, kind: str) -> tuple[bool, float]:
        """Whether this snapshot gets every method or only ``basic_stats`` (+ drift), and the CPU
        seconds charged to the budget for it.

        ``full_scan_every="auto"``: the budget is a bucket. It earns
        ``analysis_budget`` of the CPU time of the cores training left idle
        (at least one core's) and pays for every full analysis, the baseline's
        included; a periodic snapshot is full when the bucket holds the last
        full analysis's cost. It never holds more than that, so a thinned
        stretch is not followed by a burst. Cheap models thus get every
        snapshot full; a model whose spectra take minutes gets them every so
        often, while NaN checks and drift run at every snapshot. A full
        analysis under ``ALWAYS_FULL_BELOW_S`` of CPU is never thinned, so
        small models give the same records run after run.
        """
        cfg = self.config
        now = _wall_clock()
        cost = self._full_cost
        if self._usage_mark is not None:
            with self._state_lock:
                self._earned = min(self._earned + (now - self._usage_mark[0]) * cfg.analysis_budget
                                   * self._spare_cores(now), self._spent + (cost or 0.0))
        self._usage_mark = (now, _process_clock(), self.stats.analysis_cpu_s)
        if kind == "periodic":
            self._periodic += 1
            if cfg.full_scan_every == "auto":
                with self._state_lock:
                    full = cost is None or cost < ALWAYS_FULL_BELOW_S or self._earned - self._spent >= cost
            else:
                full = self._periodic % int(cfg.full_scan_every) == 0
        else:
            full = True  # baseline, resume and final are always complete
        charged = (cost or 0.0) if full else 0.0
        if charged:
            with self._state_lock:
                self._spent += charged
        return full, charged

    def _spare_cores(self, now: float) -> float:
        """Cores training left idle since the last snapshot decision, at least one.

        Training on CPU keeps every core busy (torch's intra-op threads), so
        each CPU second of analysis costs it about a second of wall time, and
        the budget is then a share of one core: the slowdown it allows. With
        GPU training most cores sit idle and the analysis may use their time.
        The process's CPU time, less the analysis thread's, is training's use.
        """
        mark = self._usage_mark
        if mark is None or now <= mark[0]:
            return 1.0
        wall0, cpu0, analysis0 = mark
        busy = (_process_clock() - cpu0 - (self.stats.analysis_cpu_s - analysis0)) / (now - wall0)
        return min(max(self._cores - busy, 1.0), float(self._cores))

    # -- analysis (background thread) ------------------------------------------
    def _handle(self, job: _Job) -> None:
        snap = job.snapshot
        analysis = Analysis(snap.step)
        cpu0 = _cpu_clock()
        try:
            analysis = self._analyse(job)
        except Exception as exc:
            self._once.warn(f"analysis:{type(exc).__name__}", "weightscope: analysis of step %d failed: %r",
                            snap.step, exc)
        finally:
            self.stats.analysis_cpu_s += _cpu_clock() - cpu0 + sum(job.pool_cpu)
        split = self.config.distributed == "split" and self._coll is not None and self._coll.active
        if split:
            try:
                parts = self._coll.gather_to_zero(analysis)
            except Exception as exc:
                self._once.warn("gather", "weightscope: gathering results failed: %r", exc)
                return
            if parts is None:
                return
            for part in parts[1:]:
                analysis.merge(part)
        if self.is_logging_rank and job.emit and analysis.results:
            try:
                self._finish(job, analysis)
            except Exception as exc:
                self._once.warn(f"finish:{type(exc).__name__}", "weightscope: alerts/summary at step %d failed: %r",
                                snap.step, exc)

    def _analyse(self, job: _Job) -> Analysis:
        snap = job.snapshot
        if job.completes:
            return self._analyse_rest(job)
        snap.wait()
        t0, cpu0 = time.perf_counter(), _cpu_clock()
        cfg = self.config
        methods = cfg.methods_for(job.full)
        results = self._scan(job, snap.tensors, methods)
        prev, base = self._prev, self._base
        diff_prev = diff_layers(prev.tensors if prev else None, snap.tensors, device=self._device)
        if base is None:
            diff_base: dict[str, Any] = {}
        elif base is prev:
            diff_base = {k: dict(v) for k, v in diff_prev.items()}
        else:
            diff_base = diff_layers(base.tensors, snap.tensors, device=self._device)
        hists = {}
        if cfg.log_histograms:  # optional: a failure here must not cost the snapshot its records
            try:
                hists = {k: h for k, t in snap.tensors.items() if (h := histogram_summary(t, cfg.histogram_bins))}
            except Exception as exc:
                self._once.warn("histograms", "weightscope: weight histograms failed (%r); the rest goes on", exc)
        if base is None:
            self._base, self._base_step = snap, snap.step
            if cfg.save_baseline:
                self._save_baseline(snap)
        if prev is not None and prev is not self._base:
            prev.release()
        self._prev = snap
        if job.full and snap.tensors:
            self._full_cost = _cpu_clock() - cpu0 + sum(job.pool_cpu)
            with self._state_lock:
                self._spent += self._full_cost - job.charged  # the real cost, not the estimate
        # The next snapshot's buffers, allocated and touched here rather than on the training loop's clock.
        self._pool.reserve(snap.specs)
        self._last_analysis = Analysis(snap.step, results, diff_prev, diff_base, hists, sorted(snap.frozen),
                                       time.perf_counter() - t0, prev.step if prev else None)
        return self._last_analysis

    def _scan(self, job: _Job, tensors: dict[str, torch.Tensor], methods: list[str]) -> dict[str, dict[str, Any]]:
        """Scan with ``num_workers`` when set. Unset: every core for a job analysed on the training
        thread, which waits for it anyway (2 cores took 0.098 s for this repository's benchmark model,
        against 0.107 s for one tensor at a time at training's 2 torch threads), and the analysis
        thread alone, at its ``analysis_threads``, beside training."""
        cfg = self.config
        # Every rank of a node analyses its final snapshot at once: share the cores, not multiply them.
        world = self._coll.world if self._coll is not None and self._coll.active else 1
        workers = cfg.num_workers or (max(1, self._cores // ranks_on_this_node(world)) if job.inline else 1)
        own = not job.inline and workers == 1
        return scan_tensors(tensors, methods, device=self._device, num_workers=workers, own_threads=own,
                            pool_cpu=job.pool_cpu)

    def _analyse_rest(self, job: _Job) -> Analysis:
        """Every method on weights analysed before with ``basic_stats`` only; the drift (and the
        histograms, already logged at this step) are the earlier analysis's."""
        snap = job.snapshot
        t0 = time.perf_counter()
        last = self._last_analysis
        if last is None or last.step != snap.step:
            raise RuntimeError(f"no earlier analysis of step {snap.step} to complete")
        cfg = self.config
        results = self._scan(job, snap.tensors, cfg.methods_for(True))
        return Analysis(snap.step, results, last.diff_prev, last.diff_base, {}, last.frozen,
                        time.perf_counter() - t0, last.prev_step)

    def _rank_path(self, path: Path) -> Path:
        if self._coll is not None and self._coll.active and self.config.distributed == "split":
            return path.with_name(f"{path.stem}.rank{self._coll.rank}{path.suffix}")
        return path

    def _baseline_file(self) -> Path:
        return (self.output_dir / f"{BASELINE_NAME}.safetensors").resolve()

    def _save_baseline(self, snap: Snapshot) -> None:
        try:
            from safetensors.torch import save_file

            from ..sinks.files import atomic_write

            self.output_dir.mkdir(parents=True, exist_ok=True)
            tensors = {k: t.detach().cpu().contiguous() for k, t in snap.tensors.items()}
            # Atomic: a resume must never read half a baseline.
            atomic_write(self._rank_path(self._baseline_file()), lambda p: save_file(tensors, str(p)))
        except Exception as exc:
            self._once.warn("save-baseline", "weightscope: could not save the baseline weights (%r); a resumed run "
                            "will start a new baseline", exc)

    def _finish(self, job: _Job, a: Analysis) -> None:
        cfg = self.config
        # A completing record's drift was fed to the rules with the periodic record: not twice.
        diff_prev, diff_base, frozen = ({}, {}, []) if job.completes else (a.diff_prev, a.diff_base, a.frozen)
        with self._state_lock:
            alerts = evaluate_alerts(a.step, a.results, diff_prev, diff_base, self._alert_state, cfg.rules,
                                     frozen=frozen, dedup_snapshots=cfg.alert_window, completes=job.completes)
            layers_alerting = self._alert_state.layers_alerting
        summary = summarize(a.results, a.diff_prev, a.diff_base, alerts, layers_alerting)
        self.stats.analysis_s.append(a.seconds)
        record = SnapshotRecord(
            step=a.step, kind=job.kind, results=a.results, diff_prev=a.diff_prev, diff_base=a.diff_base,
            alerts=alerts, summary=summary, histograms=a.histograms,
            prev_step=a.prev_step, base_step=self._base_step,
            methods=cfg.methods_for(job.full),
            timing={"blocking_s": job.snapshot.blocking_s, "analysis_s": a.seconds},
        )
        self._done.put(record)

    # -- sinks (training thread) -------------------------------------------------
    def _open_sinks(self) -> None:
        opened = {id(s) for s in self.sinks}
        specs, self._sink_specs = self._sink_specs, []
        has_jsonl = any(isinstance(s, JsonlSink) for s in self.sinks)
        for spec in specs:
            try:
                sink = open_sink(spec, self.output_dir, histograms=self.config.log_histograms)
            except Exception as exc:
                self._once.warn(f"sink:{spec}", "weightscope: sink %r unavailable: %s", spec, exc)
                continue
            if id(sink) not in opened:
                self.sinks.append(sink)
                has_jsonl = has_jsonl or isinstance(sink, JsonlSink)
        if not has_jsonl:
            try:
                self.sinks.append(JsonlSink(self.output_dir / HISTORY_NAME))
            except OSError as exc:
                self._once.warn("jsonl", "weightscope: cannot write the JSONL history in %s: %s", self.output_dir, exc)

    def _drain(self) -> None:
        while True:
            try:
                record = self._done.get_nowait()
            except queue.Empty:
                return
            t0 = time.perf_counter()
            self.records = (self.records + [record])[-self.keep_records:]
            for sink in self.sinks:
                self._safely(sink, "write", record)
            for alert in record.alerts:
                self._raise_alert(alert)
            self.stats.logging_s.append(time.perf_counter() - t0)

    def _raise_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        log.log(logging.ERROR if alert.level == "ERROR" else logging.WARNING, "%s: %s", alert.title, alert.message)
        if alert.rule in self.config.stop_on:
            self.should_stop = True
        if self.config.on_alert is not None:
            try:
                self.config.on_alert(alert)
            except Exception as exc:
                self._once.warn("on_alert", "weightscope: on_alert raised %r", exc)

    def _safely(self, sink: Any, method: str, *args: Any) -> None:
        fn = getattr(sink, method, None)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:
            self._once.warn(f"{type(sink).__name__}.{method}", "weightscope: %s.%s failed: %r",
                            type(sink).__name__, method, exc)
