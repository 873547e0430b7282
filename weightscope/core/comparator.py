"""Comparing two checkpoints (or saved scans) layer by layer.

Layers are paired by name (see :mod:`weightscope.comparison.matching`) and
each pair is one engine task: load both tensors, analyse each side with the
chosen methods, then the pair metrics. Only ``num_workers`` pairs are in
memory at once, so two whole models never are. The per-side results are kept
in the comparison (``model1_stats``/``model2_stats``) so that nothing has to
be scanned again to report on either model.

The comparison is a plain dict (differences are model 2 − model 1, ratios
model 2 / model 1; None where a value is unknown (no tensors, method not
run), NaN where it could not be measured (NaN/Inf weights, a failed pair),
inf for a ratio to a zero tensor)::

    format               "weightscope.compare/1"
    weightscope_version, model1, model2 (descriptions), methods, threshold
    mode                 "tensors" (both sides read) or "stats" (a side is saved results)
    summary              compared_layers, identical_layers, changed_layers (by value: equal in
                         float64), dtype_changed_layers, shape_mismatches, only_in_model1,
                         only_in_model2, errors (counts), score_metric,
                         global_l2_distance, global_relative_l2_distance,
                         global_cosine_similarity, by_block (every compared layer: its block,
                         else its module) / by_module:
                         {group: {layers, changed_layers, l2_distance, relative_l2_distance,
                                  cosine_similarity, mean_score, max_score}}
    layer_comparisons    {model-1 layer: {shape, dtype1, dtype2, tensors_compared,
                          l2_distance, relative_l2_distance, cosine_similarity, mean_diff,
                          std_diff, l2_norm_ratio, max_abs_diff, significant_change_percentage,
                          identical (bitwise), model1_l2_norm, model2_l2_norm, norm_change,
                          [spectral] condition_number_ratio, stable_rank_diff,
                          max_singular_value_ratio, update_stable_rank,
                          update_effective_rank, update_rank_90,
                          [quantization] extreme_outlier_percentage_diff, sqnr_db_diff,
                          [esd] alpha_diff, [on failure] error}}
    shape_mismatches     {model-1 layer: {shape1, shape2, dtype1, dtype2, tensors_compared,
                          mean_diff, std_diff, wasserstein_distance, l2_norm_ratio,
                          the method ratios/diffs above, [spectral] spectra: {model1, model2}}}
    only_in_model1, only_in_model2   sorted layer names without a partner
    name_mapping         {model-1 layer: model-2 layer} for pairs whose names differ
    aliases              {"model1": {alias: target}, "model2": {...}} tied weights
    model1_stats, model2_stats       {layer: {method: metrics}} as a scan returns them
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..analyzers import ALL_METHODS, analyze_tensor, methods_for, resolve_methods
from ..comparison import (
    bitwise_equal,
    diff_metrics,
    distribution_metrics,
    match_layers,
    normalize_name,
    summarize,
    unchanged,
    update_spectrum,
)
from ..comparison.entries import error_entry, layer_entry, mismatch_entry
from ..comparison.matching import Matching, prefix_forms, without_infixes
from ..comparison.ranking import find_most_changed_layers
from ..comparison.update_spectrum import zero_update_metrics
from ..errors import ConfigError, SourceError
from ..sources._state_dict import _has_tensor
from ..sources.base import TensorRef, TensorSource
from .device import resolve_device
from .engine import Progress, compile_pattern, layer_key, run_tasks, select_tensors
from .results import ScanResults

log = logging.getLogger(__name__)

COMPARE_FORMAT = "weightscope.compare/1"
#: Methods a comparison runs when none are named and tensors are read.
DEFAULT_METHODS: tuple[str, ...] = ("basic_stats",)

__all__ = ["COMPARE_FORMAT", "DEFAULT_METHODS", "compare_sources", "find_most_changed_layers"]


@dataclass
class _Side:
    """One model of the comparison: tensors to read, or saved results (then ``refs`` is empty).

    Both for the results of a live scan whose source could be read again: its
    tensors are read, its layers are the scanned ones, and its saved stats
    stand in for the analysis where they cover the methods (``reused``).
    """

    description: str
    source: TensorSource | None = None
    results: ScanResults | None = None
    owned: bool = False  # opened here, so closed here
    names: list[str] = field(default_factory=list)
    refs: dict[str, TensorRef] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)  # layer keys left out as non-float / vectors
    reused: dict[str, dict[str, Any]] = field(default_factory=dict)  # layer -> saved stats used as computed

    @property
    def has_tensors(self) -> bool:
        return self.source is not None

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def shape(self, name: str) -> tuple[int, ...] | None:
        key = self.canonical(name)
        if key in self.refs:
            return tuple(self.refs[key].shape)
        return self.results.layer_shape(key) if self.results is not None else None

    def dtype(self, name: str) -> str | None:
        key = self.canonical(name)
        if key in self.refs:
            return str(self.refs[key].dtype).removeprefix("torch.")
        return self.results.layer_dtype(key) if self.results is not None else None

    def methods_lacking(self, methods: list[str]) -> list[str]:
        """Of ``methods``, those this side's saved stats do not hold (stats mode only)."""
        if self.source is not None or not self.results:
            return []
        have = set(getattr(self.results, "methods", None) or ())
        have = have or {m for layer in self.results.values() if isinstance(layer, dict) for m in layer}
        return [m for m in methods if m not in have]

    def prepare_reuse(self, methods: list[str]) -> None:
        """Saved stats (of a re-read live scan) that cover ``methods`` without errors: not analysed again."""
        self.reused = {}
        if self.source is None or self.results is None:
            return
        for name in self.names:
            saved, ref = self.results.get(name), self.refs.get(name)
            if not isinstance(saved, dict) or ref is None:
                continue
            wanted = methods_for(len(ref.shape), methods)
            if not all(isinstance(saved.get(m), dict) and "error" not in saved[m] for m in wanted):
                continue
            shape = self.results.layer_shape(name)
            if shape is not None and shape != tuple(ref.shape):
                continue
            self.reused[name] = {m: copy.deepcopy(saved[m]) for m in wanted}


def _is_metric(value: Any) -> bool:
    """A value a scan result holds: a number, a string, None, or lists/dicts of them (never a tensor)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_metric(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_metric(v) for k, v in value.items())
    return False


def _looks_like_results(obj: dict[str, Any]) -> bool:
    """A scan file's layout, or ``layer -> method -> metrics`` with plain values at the leaves.

    A state dict, nested (``{"encoder": {"fc": {"weight": T}}}``) or not, holds tensors there
    instead, so it is never taken for results.
    """
    if _has_tensor(obj):
        return False
    if "format" in obj and "layers" in obj:
        return True  # ScanResults.from_json_dict says what is wrong with it, if anything
    return bool(obj) and all(
        isinstance(layer, dict) and layer
        and all(isinstance(metrics, dict) and metrics and _is_metric(metrics) for metrics in layer.values())
        for layer in obj.values()
    )


def _open_side(obj: Any, revision: str | None) -> _Side:
    from .scope import Scope  # scope imports this module lazily; import back the same way

    if isinstance(obj, ScanResults):
        return _reread(obj) or _Side(obj.source or "scan results", results=obj)
    if isinstance(obj, Scope):
        if obj.closed:
            raise SourceError(f"{obj.name}: this Scope is closed; open a new Scope to compare it")
        return _Side(obj.name, source=obj.source)
    if isinstance(obj, TensorSource):
        return _Side(obj.description, source=obj)
    if isinstance(obj, (str, os.PathLike)) and str(obj).lower().endswith(".json"):
        path = Path(obj).expanduser()
        if not path.is_file():
            raise SourceError(f"no such scan results file: {path}")
        return _Side(str(path), results=ScanResults.load(path))
    if isinstance(obj, dict) and not isinstance(obj, ScanResults) and _looks_like_results(obj):
        results = ScanResults.from_json_dict(obj, origin="scan results")
        return _Side(results.source, results=results)
    from ..sources import open_source

    source = open_source(obj, revision=revision)
    return _Side(source.description, source=source, owned=True)


def _reread(results: ScanResults) -> _Side | None:
    """The side for live-scan results whose source is still there and unchanged, else None (stats mode).

    Only results returned by ``Scope.scan`` hold a handle (``ScanResults._origin``); results read
    from a file never do, so they never silently read a file that may not be the one scanned.
    """
    handle = results._origin
    if handle is None:
        return None
    try:
        source, owned = handle.open()
    except SourceError as exc:
        if not handle.warned:  # once per results object: later comparisons stay quiet
            handle.warned = True
            log.warning("comparing the saved stats of %s only (mode 'stats'): %s",
                        results.source or "scan results", exc)
        return None
    return _Side(results.source or source.description, source=source, results=results, owned=owned)


def _name_forms(name: str) -> set[str]:
    """``name`` and every form it takes on the way to :func:`normalize_name` (wrappers stripped one by one).

    ``"model.transformer.h.0"`` -> ``{"model.transformer.h.0", "transformer.h.0", "h.0"}``.
    """
    return {*prefix_forms(name), *prefix_forms(without_infixes(name))}


def _filter_names(side: _Side) -> dict[str, set[str]]:
    """Layer key -> the names ``layers``/``exclude`` are tried on, for every layer the side holds."""
    if side.source is not None:
        out: dict[str, set[str]] = {}
        for ref in side.source.refs():
            key = layer_key(ref.name)
            out.setdefault(key, set()).update(_name_forms(key) | _name_forms(ref.name))
        return out
    results = side.results or ScanResults()
    return {key: _name_forms(key) for key in [*results, *results.aliases]}


def _filtered_layers(
    side1: _Side, side2: _Side, layers: str | None, exclude: str | None
) -> tuple[set[str] | None, set[str] | None]:
    """The layer keys each side keeps under ``layers``/``exclude``; (None, None) without a filter.

    The regexes are tried on each name as it is and with its wrapper prefixes removed
    (``model.``, ``module.``, ...), and on the names of both partners of a pair, so that
    the same layers are selected on both sides: ``layers=r"^transformer\.h\.0"`` selects a
    Lightning checkpoint's ``model.transformer.h.0.*`` along with a Hugging Face folder's
    ``transformer.h.0.*``, and a layer filtered out on one side is not "only in" the other.
    """
    include_re, exclude_re = compile_pattern(layers, "layers"), compile_pattern(exclude, "exclude")
    if include_re is None and exclude_re is None:
        return None, None

    def wanted(names: set[str]) -> bool:
        if include_re is not None and not any(include_re.search(n) for n in names):
            return False
        return exclude_re is None or not any(exclude_re.search(n) for n in names)

    names1, names2 = _filter_names(side1), _filter_names(side2)
    matching = match_layers(list(names1), list(names2))
    keep1 = {n for n in matching.only_in_model1 if wanted(names1[n])}
    keep2 = {n for n in matching.only_in_model2 if wanted(names2[n])}
    for n1, n2 in matching.pairs:
        if wanted(names1[n1] | names2[n2]):
            keep1.add(n1)
            keep2.add(n2)
    return keep1, keep2


def _select(side: _Side, keep: set[str] | None, include_vectors: bool) -> None:
    """The layers of a side to compare: ``keep`` (see :func:`_filtered_layers`; None: all) that are matrices
    (vectors too with ``include_vectors``), tied names folded into aliases."""
    if side.source is not None:
        refs = side.source.refs()
        if keep is not None:  # before folding, as a scan filters: a kept alias becomes a real layer
            refs = [r for r in refs if layer_key(r.name) in keep]
        sel = select_tensors(refs, include_vectors=include_vectors)
        # Re-read live results: the layers their scan covered, as when comparing their stats.
        scanned = None if side.results is None else set(side.results) | set(side.results.aliases)
        side.names = [k for k, _ in sel.layers if scanned is None or k in scanned]
        side.refs = {k: r for k, r in sel.layers if scanned is None or k in scanned}
        side.aliases = {a: c for a, c in sel.aliases.items() if c in side.refs}
        side.skipped = {layer_key(n) for n in sel.skipped}
        return
    results = side.results or ScanResults()

    def wanted(key: str) -> bool:
        if keep is not None and key not in keep:
            return False
        shape = side.shape(key)
        return include_vectors or shape is None or len(shape) >= 2

    side.names = [k for k in results if wanted(k)]
    side.aliases = {a: c for a, c in results.aliases.items() if c in set(side.names) and wanted(a)}


def _drop_skipped(side: _Side, other: _Side) -> None:
    """Saved results may hold layers the other side's scan leaves out (vectors, ints): not 'only in'."""
    if side.has_tensors or not other.skipped:
        return
    skipped = other.skipped | {normalize_name(k) for k in other.skipped}
    side.names = [k for k in side.names if k not in skipped and normalize_name(k) not in skipped]


@dataclass
class _Task:
    name1: str | None
    name2: str | None
    ref1: TensorRef | None  # None: that side has no tensor here (saved results, or only in the other)
    ref2: TensorRef | None
    spectral: bool
    threshold: float
    # False for a tied alias: its target's own task analyses that tensor.
    analyze1: bool = True
    analyze2: bool = True

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in (self.ref1, self.ref2) if r is not None)

    @property
    def numel(self) -> int:
        return sum(r.numel for r in (self.ref1, self.ref2) if r is not None)


@dataclass
class _Output:
    stats1: dict[str, Any] | None = None
    stats2: dict[str, Any] | None = None
    diff: dict[str, Any] | None = None
    update: dict[str, Any] | None = None
    distribution: dict[str, Any] | None = None
    error: str | None = None


def _run_task(task: _Task, methods: list[str], device: torch.device) -> _Output:
    out = _Output()
    try:
        a = task.ref1.load() if task.ref1 is not None else None
        b = task.ref2.load() if task.ref2 is not None else None
    except Exception as exc:  # one unreadable tensor must not sink the comparison
        log.warning("could not load %s / %s: %s", task.name1, task.name2, exc)
        out.error = f"load failed: {exc}"
        # As in a scan: the layer's stats say why they are missing.
        for side, ref, analyze in ((1, task.ref1, task.analyze1), (2, task.ref2, task.analyze2)):
            if ref is not None and analyze:
                failed = {m: {"error": out.error} for m in methods_for(len(ref.shape), methods)}
                setattr(out, f"stats{side}", failed)
        return out
    if a is not None and task.analyze1:
        out.stats1 = analyze_tensor(a, methods, device=device)
    if b is not None and task.analyze2:
        if out.stats1 is not None and bitwise_equal(a, b):
            out.stats2 = copy.deepcopy(out.stats1)  # same bits, same stats: skip the second analysis
        else:
            out.stats2 = analyze_tensor(b, methods, device=device)
    if a is None or b is None or task.name1 is None or task.name2 is None:
        return out
    try:
        if a.shape == b.shape:
            out.diff = diff_metrics(a, b, task.threshold, device=device)
        else:
            out.distribution = distribution_metrics(a, b)
    except Exception as exc:
        log.warning("comparing %s failed: %s", task.name1, exc)
        out.error = f"{type(exc).__name__}: {exc}"
        return out
    if out.diff is not None and task.spectral and a.ndim >= 2:
        # The update spectrum is extra: whatever happens to it, the diff above stands.
        from math import isfinite, nan

        from ..comparison.update_spectrum import UPDATE_KEYS

        if not isfinite(out.diff["l2_distance"]):
            # NaN/Inf weights make ΔW non-finite: no spectrum to take (eigh would not converge).
            # NaN, like the pair metrics of such a layer; the nan rule / basic_stats report the weights.
            out.update = {**dict.fromkeys(UPDATE_KEYS, nan),
                          "update_note": "non-finite weights (NaN/Inf); see basic_stats nan_count/inf_count"}
        elif unchanged(out.diff):  # ΔW = 0 (a lossless dtype change too): no spectrum to take
            out.update = zero_update_metrics()
        else:
            try:
                out.update = update_spectrum(a, b, device=device)
            except Exception as exc:
                log.warning("update spectrum of %s failed: %s", task.name1, exc)
                out.update = {**dict.fromkeys(UPDATE_KEYS, nan), "update_error": f"{type(exc).__name__}: {exc}"}
    return out


def _default_methods(side1: _Side, side2: _Side) -> list[str]:
    if side1.has_tensors or side2.has_tensors:
        return list(DEFAULT_METHODS)
    both = set(side1.results.methods if side1.results else []) & set(side2.results.methods if side2.results else [])
    return [m for m in ALL_METHODS if m in both] or list(DEFAULT_METHODS)


def compare_sources(
    a: Any,
    b: Any,
    methods: str | Sequence[str] | None = None,
    parallel: bool = True,
    num_workers: int | None = None,
    device: str | torch.device | None = "cpu",
    *,
    threshold: float = 0.01,
    layers: str | None = None,
    exclude: str | None = None,
    include_vectors: bool = False,
    progress: Progress | None = None,
    revision1: str | None = None,
    revision2: str | None = None,
) -> dict[str, Any]:
    """Compare model ``a`` (model 1, e.g. the base) with model ``b`` (model 2, e.g. the fine-tune).

    Either side may be a path or Hub id, a :class:`~weightscope.Scope`, a
    ``TensorSource``, an ``nn.Module`` or state dict, scan results (a
    ``ScanResults`` or its dict) or the path of a scan JSON file. ``methods``
    are run on every tensor of both sides in the same pass as the diff
    (default ``basic_stats``; with only saved results, the methods both have).
    ``threshold`` is the relative change that counts as significant
    (``|b − a| > threshold·|a|``). ``layers``/``exclude`` are regexes on layer
    names, as for a scan.

    Returns a JSON-serializable dict laid out as in this module's docs:
    ``layer_comparisons`` (layer -> metrics), ``summary``, ``shape_mismatches``,
    ``only_in_model1``, ``only_in_model2``, ``name_mapping``,
    ``model1_stats``/``model2_stats``. Rank it with :func:`find_most_changed_layers`.

    >>> import torch
    >>> base = {"fc.weight": torch.ones(4, 4)}
    >>> c = compare_sources(base, {"fc.weight": 2 * torch.ones(4, 4)})
    >>> c["layer_comparisons"]["fc"]["l2_norm_ratio"], c["layer_comparisons"]["fc"]["cosine_similarity"]
    (2.0, 1.0)
    """
    from .scope import _check_revision, check_engine_args  # scope imports this module lazily

    # Every argument is checked before either model is opened.
    check_engine_args(methods=methods, parallel=parallel, num_workers=num_workers, layers=layers,
                      exclude=exclude, include_vectors=include_vectors)
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not threshold >= 0:
        raise ConfigError(f"threshold must be a number >= 0, got {threshold!r}")
    threshold = float(threshold)
    _check_revision(revision1)
    _check_revision(revision2)
    if methods is not None:
        resolve_methods(methods)  # an unknown name fails now, not after both models are opened
    dev = resolve_device(device)
    side1 = _open_side(a, revision1)
    try:
        side2 = _open_side(b, revision2)
    except BaseException:
        if side1.owned and side1.source is not None:
            side1.source.close()
        raise
    try:
        chosen = resolve_methods(methods) if methods is not None else _default_methods(side1, side2)
        return _compare(side1, side2, chosen, dev, threshold, layers, exclude, include_vectors,
                        parallel, num_workers, progress)
    finally:
        for side in (side1, side2):
            if side.owned and side.source is not None:
                side.source.close()


def _compare(
    side1: _Side,
    side2: _Side,
    methods: list[str],
    device: torch.device,
    threshold: float,
    layers: str | None,
    exclude: str | None,
    include_vectors: bool,
    parallel: bool,
    num_workers: int | None,
    progress: Progress | None,
) -> dict[str, Any]:
    for side, keep in zip((side1, side2), _filtered_layers(side1, side2, layers, exclude)):
        _select(side, keep, include_vectors)
    _drop_skipped(side1, side2)
    _drop_skipped(side2, side1)
    matching = match_layers(side1.names, side2.names, side1.aliases, side2.aliases)
    if side1.names and side2.names and not matching.pairs:
        log.warning("no layer names in common between %s and %s", side1.description, side2.description)
    elif matching.mapping:
        log.info("%d layer(s) paired after removing wrapper prefixes", len(matching.mapping))

    spectral = "spectral" in methods
    for side in (side1, side2):
        side.prepare_reuse(methods)
    tasks = [
        _Task(n1, n2, side1.refs.get(side1.canonical(n1)), side2.refs.get(side2.canonical(n2)), spectral, threshold,
              analyze1=n1 not in side1.aliases and n1 not in side1.reused,
              analyze2=n2 not in side2.aliases and n2 not in side2.reused)
        for n1, n2 in matching.pairs
    ]
    # Unpaired layers are still analysed, so that each side's stats are a whole scan of it.
    tasks += [_Task(n, None, side1.refs[n], None, spectral, threshold)
              for n in matching.only_in_model1 if n in side1.refs and n not in side1.reused]
    tasks += [_Task(None, n, None, side2.refs[n], spectral, threshold)
              for n in matching.only_in_model2 if n in side2.refs and n not in side2.reused]
    tasks = [t for t in tasks if t.ref1 is not None or t.ref2 is not None]
    if progress and tasks:
        progress.start(len(tasks), sum(t.nbytes for t in tasks))
    outputs = run_tasks(
        tasks,
        lambda t: _run_task(t, methods, device),
        weight=lambda t: t.numel,
        parallel=parallel,
        num_workers=num_workers,
        on_done=(lambda t, _o: progress.advance(t.nbytes)) if progress else None,
    )
    return _assemble(side1, side2, methods, threshold, matching, list(zip(tasks, outputs)))


def _side_stats(side: _Side, computed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``layer -> method -> metrics`` for every selected layer of a side, in its own order."""
    if side.has_tensors:
        return {n: computed[n] if n in computed else side.reused[n]
                for n in side.names if n in computed or n in side.reused}
    results = side.results or {}
    return {n: results[n] for n in side.names}


def _assemble(
    side1: _Side,
    side2: _Side,
    methods: list[str],
    threshold: float,
    matching: Matching,
    done: list[tuple[_Task, _Output]],
) -> dict[str, Any]:
    computed1: dict[str, dict[str, Any]] = {}
    computed2: dict[str, dict[str, Any]] = {}
    per_pair: dict[tuple[str | None, str | None], _Output] = {}
    for task, out in done:
        per_pair[(task.name1, task.name2)] = out
        if task.name1 is not None and out.stats1 is not None:
            computed1[task.name1] = out.stats1
        if task.name2 is not None and out.stats2 is not None:
            computed2[task.name2] = out.stats2
    stats1, stats2 = _side_stats(side1, computed1), _side_stats(side2, computed2)

    for side, which in ((side1, "model 1"), (side2, "model 2")):
        lacking = side.methods_lacking(methods)
        if lacking:  # else their metrics would be None without a word
            log.warning("%s (%s) is saved stats without %s: those comparison metrics are None (scan it with "
                        "--methods %s, or compare its weights)", which, side.description, ", ".join(lacking),
                        " ".join(methods))
    layer_comparisons: dict[str, Any] = {}
    shape_mismatches: dict[str, Any] = {}
    for n1, n2 in matching.pairs:
        out = per_pair.get((n1, n2), _Output())
        s1, s2 = stats1.get(side1.canonical(n1)), stats2.get(side2.canonical(n2))
        shape1, shape2 = side1.shape(n1), side2.shape(n2)
        dtype1, dtype2 = side1.dtype(n1), side2.dtype(n2)
        if out.error is not None:
            layer_comparisons[n1] = error_entry(out.error, methods)
        elif shape1 is not None and shape2 is not None and shape1 != shape2:
            shape_mismatches[n1] = mismatch_entry(
                shape1=shape1, shape2=shape2, dtype1=dtype1, dtype2=dtype2, stats1=s1, stats2=s2,
                methods=methods, distribution=out.distribution,
            )
        else:
            layer_comparisons[n1] = layer_entry(
                shape=shape1 or shape2, dtype1=dtype1, dtype2=dtype2, stats1=s1, stats2=s2,
                methods=methods, diff=out.diff, update=out.update,
            )

    comparison: dict[str, Any] = {
        "format": COMPARE_FORMAT,
        "weightscope_version": __version__,
        "model1": side1.description,
        "model2": side2.description,
        "mode": "tensors" if side1.has_tensors and side2.has_tensors else "stats",
        "methods": list(methods),
        "threshold": threshold,
        "summary": {},
        "layer_comparisons": layer_comparisons,
        "shape_mismatches": shape_mismatches,
        "only_in_model1": list(matching.only_in_model1),
        "only_in_model2": list(matching.only_in_model2),
        "name_mapping": dict(matching.mapping),
        "aliases": {"model1": dict(side1.aliases), "model2": dict(side2.aliases)},
        "model1_stats": stats1,
        "model2_stats": stats2,
    }
    comparison["summary"] = summarize(comparison)
    return comparison
