"""``scan_run``: a folder of training checkpoints seen the way the live callbacks see a run.

Every checkpoint becomes the monitor's own :class:`~weightscope.monitor.SnapshotRecord`
(scan results, drift from the previous and from the first checkpoint, alerts
from the same rules, the same run-wide summary), so a replay into TensorBoard
or W&B goes through the very sink code the callbacks use.

>>> import weightscope
>>> traj = weightscope.scan_run("runs/exp1/", methods=["spectral"])  # doctest: +SKIP
>>> traj.steps, traj[1000], traj.drift[1000]["previous"], traj.alerts  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from .._version import __version__
from ..analyzers import resolve_methods
from ..comparison.pair_metrics import DIFF_KEYS
from ..comparison.ranking import find_most_changed_layers
from ..core.device import resolve_device
from ..core.engine import Progress
from ..core.results import ScanResults, flatten_metrics
from ..errors import ConfigError, SourceError, WeightScopeError
from ..monitor.alerts import DEFAULT_DEDUP_SNAPSHOTS, Alert, AlertState, evaluate_alerts, resolve_rules
from ..monitor.config import ALWAYS, DEFAULT_METHODS
from ..monitor.naming import DRIFT_BASE_PREFIX, DRIFT_PREFIX
from ..monitor.record import SnapshotRecord, summarize
from ..sinks.files import check_output_path, is_table_path, write_json, write_table
from ..sources import open_source
from ..sources.base import TensorSource
from .analyse import RunOptions, diff_checkpoint, histogram_checkpoint, scan_checkpoint
from .cache import CACHE_DIRNAME, CacheEntry, RunCache, merge_methods
from .discovery import Checkpoint, discover_run, select_checkpoints
from .identity import IncompleteCheckpoint, checkpoint_identity

log = logging.getLogger(__name__)

RUN_FORMAT = "weightscope.run/1"


class UnknownNameError(WeightScopeError, KeyError):
    """A step, layer, method or metric that the run does not have (a ``KeyError`` too)."""

    def __str__(self) -> str:  # KeyError's own would quote the whole message
        return str(self.args[0]) if self.args else ""


def _unknown(kind: str, name: str, known: Sequence[str], shown: int = 8) -> UnknownNameError:
    """``no <kind> 'x' in this run``, with the nearest names first, then a few of the others."""
    near = [k for k in known if name and name in k]
    near = near or difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    rest = [k for k in known if k not in near]
    listed = [*near[:shown], *rest[: max(0, shown - len(near))]]
    more = f" ... ({len(known)} in all)" if len(known) > len(listed) else ""
    hint = f"did you mean {', '.join(map(repr, near[:shown]))}? " if near else ""
    return UnknownNameError(f"no {kind} {name!r} in this run; {hint}{kind}s: {', '.join(listed) or 'none'}{more}")


class RunProgress(Progress, Protocol):
    """What :func:`scan_run` reports to: checkpoints, and the engine's tensors within each."""

    def begin_run(self, checkpoints: int) -> None: ...

    def begin_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def end_checkpoint(self, checkpoint: Checkpoint, scanned: bool) -> None: ...


@dataclass
class Trajectory:
    """A run's checkpoints, in step order, as snapshot records.

    ``traj[step]`` is that checkpoint's :class:`ScanResults`; ``drift[step]``
    holds ``previous`` / ``first`` (``layer -> pair metrics``) and the steps
    they compare with; ``alerts`` are the callbacks' alerts, in step order.
    ``scanned``/``compared`` count the work this call did (the rest came
    from the cache); ``skipped`` names checkpoints left out (still being
    written, unreadable) and why.
    """

    folder: Path
    methods: list[str]
    checkpoints: list[Checkpoint]
    records: list[SnapshotRecord]
    skipped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    scanned: list[int] = field(default_factory=list)
    compared: int = 0
    cache_dir: Path | None = None

    # -- views --------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return [r.step for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[int]:
        return iter(self.steps)

    def __contains__(self, step: object) -> bool:
        return step in self.steps

    def __getitem__(self, step: int) -> ScanResults:
        return self.record(step).results  # type: ignore[return-value]

    def record(self, step: int) -> SnapshotRecord:
        for r in self.records:
            if r.step == step:
                return r
        raise UnknownNameError(f"no checkpoint at step {step}; steps: {', '.join(map(str, self.steps)) or 'none'}")

    @property
    def drift(self) -> dict[int, dict[str, Any]]:
        """step -> ``{"previous", "previous_step", "first", "first_step"}`` (empty dicts at the first step)."""
        return {
            r.step: {"previous": dict(r.diff_prev), "previous_step": r.prev_step,
                     "first": dict(r.diff_base), "first_step": r.base_step}
            for r in self.records
        }

    @property
    def alerts(self) -> list[Alert]:
        return [a for r in self.records for a in r.alerts]

    @property
    def layers(self) -> list[str]:
        """Every layer scanned at some step, in model order (first seen first)."""
        return list(dict.fromkeys(layer for r in self.records for layer in r.results))

    def series(self, layer: str, method: str, key: str) -> list[float | None]:
        """One scan metric of one layer across the run, a value per step.

        None where the value is missing at a step or undefined (e.g. ``stable_rank`` of a zero matrix).
        A layer, method or key the run does not have at all raises :class:`UnknownNameError` (a
        ``KeyError``) naming the ones it has: a typo never reads as a metric that is always missing.
        """
        if layer not in self.layers:
            raise _unknown("layer", layer, self.layers)
        if method not in self.methods:
            raise _unknown("method", method, self.methods)
        seen: dict[str, list[Any]] = {}
        for r in self.records:
            for metrics in r.results.values():
                res = metrics.get(method)
                if isinstance(res, dict):
                    for k, v in res.items():
                        seen.setdefault(k, []).append(v)
        seen.pop("error", None)
        seen.pop("note", None)
        # Every layer failed this method at every step: no key is known, so none is refused.
        if seen and key not in seen:
            raise _unknown(f"{method} metric", key, [k for k, vs in seen.items() if _scalar(vs)])
        if seen and not _scalar(seen[key]):
            raise UnknownNameError(f"{method} {key!r} is not a single number per step; numeric {method} metrics: "
                                   f"{', '.join(k for k, vs in seen.items() if _scalar(vs))}")
        return [_number((r.results.get(layer, {}).get(method) or {}).get(key)) for r in self.records]

    def drift_series(
        self, layer: str, metric: str = "relative_l2_distance", *, from_first: bool = False
    ) -> list[float | None]:
        """One drift metric of one layer across the run (None at the first step and where missing).

        An unknown layer or metric raises :class:`UnknownNameError` (a ``KeyError``), as in :meth:`series`.
        """
        diffs = [r.diff_base if from_first else r.diff_prev for r in self.records]
        layers = list(dict.fromkeys([*self.layers, *(layer for d in diffs for layer in d)]))
        if layer not in layers:
            raise _unknown("layer", layer, layers)
        metrics = dict.fromkeys([*DIFF_KEYS, *(k for d in diffs for m in d.values() for k in m)])
        metrics.pop("error", None)
        if metric not in metrics:
            raise _unknown("drift metric", metric, list(metrics))
        return [_number((d.get(layer) or {}).get(metric)) for d in diffs]

    def most_drifting_layers(self, top_k: int | None = 10, by: str | None = None) -> list[tuple[str, Any, dict]]:
        """Layers ranked by how far the last checkpoint is from the first (``find_most_changed_layers``)."""
        last = self.records[-1].diff_base if self.records else {}
        return find_most_changed_layers({"layer_comparisons": dict(last), "mode": "tensors"}, top_k=top_k, by=by)

    # -- tables and files ----------------------------------------------------
    def rows(self) -> Iterator[tuple[int, str, str, float]]:
        """``(step, layer, metric, value)`` for every number: ``method.metric`` of the scan,
        ``drift_<metric>`` / ``drift_from_start_<metric>`` of the comparisons (the charts' prefixes)."""
        for r in self.records:
            for layer, methods in r.results.items():
                yield from _numbers(r.step, layer, flatten_metrics(methods))
            for prefix, diff in ((DRIFT_PREFIX, r.diff_prev), (DRIFT_BASE_PREFIX, r.diff_base)):
                for layer, metrics in diff.items():
                    yield from _numbers(r.step, layer, {f"{prefix}{k}": v for k, v in metrics.items()})

    def to_dataframe(self) -> Any:
        """The long table: columns ``step``, ``layer``, ``metric``, ``value`` (pandas)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ConfigError("to_dataframe() needs pandas: pip install 'weightscope[pandas]'") from exc
        return pd.DataFrame(list(self.rows()), columns=["step", "layer", "metric", "value"])

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": RUN_FORMAT,
            "weightscope_version": __version__,
            "run": str(self.folder),
            "methods": self.methods,
            "checkpoints": [
                {"step": r.step, "path": str(cp.path), "step_from": cp.step_from, "summary": r.summary,
                 "layers": dict(r.results)}
                for cp, r in zip(self.checkpoints, self.records)
            ],
            "drift": [
                {"step": r.step, "previous_step": r.prev_step, "first_step": r.base_step,
                 "previous": dict(r.diff_prev), "first": dict(r.diff_base)}
                for r in self.records
            ],
            "alerts": [a.to_dict() for a in self.alerts],
            "skipped": self.skipped,
            "ignored": self.ignored,
        }

    def save(self, path: str | Path) -> Path:
        """Strict JSON (``weightscope.run/1``), or the long table for ``.csv`` / ``.parquet``; atomic."""
        check_output_path(path)  # another extension is an error, as on the command line
        if is_table_path(path):
            return write_table(path, self.to_dataframe())
        return write_json(path, self.to_json_dict())

    def replay(self, *sinks: Any) -> None:
        """Write every record, in step order, to sinks with ``write(record)``
        (``TensorBoardSink``, ``WandbSink``, ``JsonlSink``: the callbacks' own), then flush them."""
        for sink in sinks:
            for r in self.records:
                sink.write(r)
            flush = getattr(sink, "flush", None)
            if flush:
                flush()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _scalar(values: list[Any]) -> bool:
    """True unless a metric's values are lists, dicts or strings (not charted, not a series)."""
    return not any(isinstance(v, (dict, list, tuple, str)) for v in values)


def _numbers(step: int, layer: str, flat: dict[str, Any]) -> Iterator[tuple[int, str, str, float]]:
    for metric, value in flat.items():
        if isinstance(value, (int, float)):  # bools included: identical -> 0/1
            yield step, layer, metric, float(value)


def run_methods(methods: str | Iterable[str] | None) -> list[str]:
    """The monitor's defaults and rule: ``basic_stats`` always, since the NaN rule reads it."""
    chosen = resolve_methods(methods, default=DEFAULT_METHODS)
    return chosen if ALWAYS in chosen else resolve_methods([ALWAYS, *chosen])


class _OpenSources:
    """Sources opened on demand and kept while they are the base, the previous or the current one."""

    def __init__(self) -> None:
        self._open: dict[Path, TensorSource] = {}

    def get(self, cp: Checkpoint) -> TensorSource:
        if cp.path not in self._open:
            self._open[cp.path] = open_source(cp.path)
        return self._open[cp.path]

    def keep_only(self, *keep: Checkpoint | None) -> None:
        wanted = {cp.path for cp in keep if cp is not None}
        for path in [p for p in self._open if p not in wanted]:
            self._open.pop(path).close()

    def close(self) -> None:
        self.keep_only()


def scan_run(
    folder: str | Path,
    methods: str | Sequence[str] | None = None,
    parallel: bool = True,
    num_workers: int | None = None,
    *,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    last: int | None = None,
    layers: str | None = None,
    exclude: str | None = None,
    include_vectors: bool = False,
    device: str | torch.device | None = "cpu",
    cache: bool | str | Path = True,
    alerts: Any = None,
    alert_window: int = DEFAULT_DEDUP_SNAPSHOTS,
    histograms: bool = False,
    histogram_bins: int = 64,
    progress: RunProgress | None = None,
) -> Trajectory:
    """Scan every checkpoint of the training run in ``folder``; see :class:`Trajectory`.

    ``methods`` default to the callbacks' (``basic_stats spectral quantization``);
    ``basic_stats`` is always added. ``steps`` / ``every`` / ``last`` pick
    checkpoints (see :func:`~weightscope.run.discovery.select_checkpoints`).
    ``cache``: True keeps per-checkpoint results in ``<folder>/.weightscope-cache``,
    a path keeps them there, False keeps none. ``alerts`` / ``alert_window``
    configure the alert rules as for the callbacks. ``histograms=True`` adds
    each layer's weight histogram (``histogram_bins`` bins) to the records,
    for a replay into TensorBoard or W&B, as ``log_histograms`` does live.
    """
    chosen = run_methods(methods)
    rules = resolve_rules(alerts)
    if isinstance(alert_window, bool) or not isinstance(alert_window, int) or alert_window < 1:
        raise ConfigError(f"alert_window must be an integer >= 1, got {alert_window!r}")
    if isinstance(histogram_bins, bool) or not isinstance(histogram_bins, int) or histogram_bins < 2:
        raise ConfigError(f"histogram_bins must be an integer >= 2, got {histogram_bins!r}")
    if isinstance(steps, int):
        steps = [steps]
    opts = RunOptions(tuple(chosen), layers, exclude, include_vectors, parallel, num_workers, resolve_device(device))
    listing = discover_run(folder)
    picked = select_checkpoints(listing.checkpoints, steps=steps, every=every, last=last)
    cache_dir = None if cache is False else (listing.folder / CACHE_DIRNAME if cache is True else Path(cache))
    store = RunCache(cache_dir, opts.selection())

    traj = Trajectory(Path(folder), chosen, [], [], cache_dir=cache_dir,
                      ignored={str(p): why for p, why in listing.ignored.items()})
    ready = _whole(picked, traj.skipped)
    if progress:
        progress.begin_run(len(ready))
    sources = _OpenSources()
    state = AlertState()
    base: tuple[Checkpoint, str] | None = None
    prev: tuple[Checkpoint, str] | None = None
    try:
        for cp, ident in ready:
            if progress:
                progress.begin_checkpoint(cp)
            entry = store.load(ident)
            try:
                results, diff_prev, diff_base, did_scan, changed = _analyse(
                    cp, entry, chosen, base, prev, sources, opts, progress, traj)
                hists = entry.histograms_for(histogram_bins) if histograms else {}
                if hists is None:
                    hists = histogram_checkpoint(sources.get(cp), histogram_bins, opts, progress)
                    entry.histograms = {"bins": histogram_bins, "layers": hists}
                    changed = True
            except SourceError as exc:
                log.warning("skipping %s: %s", cp.path, exc)
                traj.skipped[str(cp.path)] = str(exc)
                if progress:
                    progress.end_checkpoint(cp, False)
                continue
            if changed:
                store.store(entry, str(cp.path))
            # What the live monitor does with a finished analysis (WeightMonitor._finish).
            new_alerts = evaluate_alerts(cp.step, results, diff_prev, diff_base, state, rules,
                                         dedup_snapshots=alert_window)
            traj.records.append(SnapshotRecord(
                step=cp.step, kind="periodic" if base else "baseline", results=results,
                diff_prev=diff_prev, diff_base=diff_base, alerts=new_alerts,
                summary=summarize(results, diff_prev, diff_base, new_alerts, state.layers_alerting),
                # The baseline is its own base, as the live monitor records it.
                prev_step=prev[0].step if prev else None, base_step=(base or (cp,))[0].step,
                methods=list(chosen), histograms=hists,
            ))
            traj.checkpoints.append(cp)
            if did_scan:
                traj.scanned.append(cp.step)
            prev = (cp, ident)
            base = base or prev
            sources.keep_only(base[0], prev[0])
            if progress:
                progress.end_checkpoint(cp, did_scan)
    finally:
        sources.close()
    return traj


def _whole(picked: list[Checkpoint], skipped: dict[str, str]) -> list[tuple[Checkpoint, str]]:
    """``(checkpoint, identity)`` of those that are whole; the others go to ``skipped``, for next time."""
    ready = []
    for cp in picked:
        try:
            ready.append((cp, checkpoint_identity(cp)))
        except IncompleteCheckpoint as exc:
            log.warning("skipping %s (incomplete, will be picked up next time): %s", cp.path, exc)
            skipped[str(cp.path)] = f"incomplete: {exc}"
    return ready


def _analyse(
    cp: Checkpoint,
    entry: CacheEntry,
    methods: list[str],
    base: tuple[Checkpoint, str] | None,
    prev: tuple[Checkpoint, str] | None,
    sources: _OpenSources,
    opts: RunOptions,
    progress: Progress | None,
    traj: Trajectory,
) -> tuple[ScanResults, dict, dict, bool, bool]:
    """This checkpoint's results and diffs: from ``entry`` where cached, else computed (and put in ``entry``).

    Returns ``(results, diff_prev, diff_base, scanned, entry_changed)``.
    """
    results = entry.results_for(methods)
    did_scan = results is None
    if results is None:
        have = set(entry.results.methods) if entry.results is not None else set()
        missing = [m for m in methods if m not in have]
        fresh = scan_checkpoint(sources.get(cp), missing, opts, progress)
        entry.results = merge_methods(entry.results, fresh)
        results = entry.results_for(methods)
        assert results is not None
    want_prev = prev is not None and prev[1] not in entry.pairs
    # The first checkpoint after the base: its base diff *is* its previous diff.
    want_base = base is not None and base is not prev and base[1] not in entry.pairs
    if want_prev or want_base:
        diff_prev, diff_base = diff_checkpoint(
            sources.get(cp),
            sources.get(prev[0]) if want_prev and prev else None,
            sources.get(base[0]) if want_base and base else None,
            opts, progress,
        )
        if diff_prev is not None and prev:
            entry.pairs[prev[1]] = diff_prev
            traj.compared += 1
        if diff_base is not None and base:
            entry.pairs[base[1]] = diff_base
            traj.compared += 1
    diff_prev = entry.pairs.get(prev[1], {}) if prev else {}
    if base is None:
        diff_base = {}
    elif base is prev:
        diff_base = {k: dict(v) for k, v in diff_prev.items()}
    else:
        diff_base = entry.pairs.get(base[1], {})
    return results, diff_prev, diff_base, did_scan, did_scan or want_prev or want_base
