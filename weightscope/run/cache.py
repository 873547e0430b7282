"""Per-checkpoint results kept between runs, so a re-run scans only new checkpoints.

One JSON file per (checkpoint identity, scan options) in ``.weightscope-cache/``
inside the run folder, or in the folder the user names. A file holds the
scan results (methods merge: asking for one more method scans only that
one), the comparisons of this checkpoint with earlier ones, keyed by the
earlier checkpoint's identity, and its weight histograms once asked for.
Non-finite floats are tagged rather than dropped, because a NaN *is* the
finding: ``{"$float": "nan"}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.results import ScanResults
from ..errors import WeightScopeError
from ..sinks.files import read_json, write_json

log = logging.getLogger(__name__)

CACHE_DIRNAME = ".weightscope-cache"
CACHE_FORMAT = "weightscope.run-cache/1"
_FLOAT_TAG = "$float"


def encode_floats(obj: Any) -> Any:
    """Replace NaN/inf with ``{"$float": "nan"|"inf"|"-inf"}`` so strict JSON keeps them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT_TAG: repr(obj)}
    if isinstance(obj, dict):
        return {str(k): encode_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_floats(v) for v in obj]
    return obj


def decode_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and _FLOAT_TAG in obj:
            return float(obj[_FLOAT_TAG])
        return {k: decode_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_floats(v) for v in obj]
    return obj


@dataclass
class CacheEntry:
    """What is known about one checkpoint: its scan, and comparisons with earlier ones."""

    identity: str
    results: ScanResults | None = None
    #: earlier checkpoint's identity -> ``layer -> pair metrics`` (the monitor's diff of the two).
    pairs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``{"bins": n, "layers": {layer: histogram}}`` once a replay asked for histograms.
    histograms: dict[str, Any] | None = None

    def histograms_for(self, bins: int) -> dict[str, dict[str, Any]] | None:
        """The cached histograms with ``bins`` bins, or None."""
        if self.histograms is None or self.histograms.get("bins") != bins:
            return None
        return self.histograms.get("layers")

    def results_for(self, methods: list[str]) -> ScanResults | None:
        """The cached scan restricted to ``methods``; None unless all of them are cached."""
        if self.results is None or not set(methods) <= set(self.results.methods):
            return None
        return subset_methods(self.results, methods)


def subset_methods(results: ScanResults, methods: list[str]) -> ScanResults:
    """``results`` with only ``methods``, in the order given (a fresh scan's order)."""
    return ScanResults(
        {layer: {m: per[m] for m in methods if m in per} for layer, per in results.items()},
        source=results.source,
        methods=[m for m in methods if m in results.methods],
        aliases=results.aliases,
        skipped=results.skipped,
        stored_dtypes=results.stored_dtypes,
        stored_shapes=results.stored_shapes,
    )


def merge_methods(old: ScanResults | None, new: ScanResults) -> ScanResults:
    """``new`` plus the methods ``old`` had that ``new`` did not scan."""
    if old is None:
        return new
    layers = {layer: {**old.get(layer, {}), **per} for layer, per in new.items()}
    methods = list(dict.fromkeys([*old.methods, *new.methods]))
    return ScanResults(layers, source=new.source, methods=methods, aliases=new.aliases, skipped=new.skipped,
                       stored_dtypes={**old.stored_dtypes, **new.stored_dtypes},
                       stored_shapes={**old.stored_shapes, **new.stored_shapes})


class RunCache:
    """Reads and writes cache entries; a cache that cannot be written only warns."""

    def __init__(self, folder: Path | None, options: dict[str, Any]) -> None:
        self.folder = folder
        # The analyzers' numbers can change between versions: a new version starts afresh.
        self._salt = json.dumps({"options": options, "version": __version__}, sort_keys=True)
        self._warned = False

    def _path(self, identity: str) -> Path:
        assert self.folder is not None
        name = hashlib.sha256(f"{identity}\n{self._salt}".encode()).hexdigest()[:40]
        return self.folder / f"{name}.json"

    def load(self, identity: str) -> CacheEntry:
        """The entry for ``identity``; an empty one on a miss or an unreadable file."""
        if self.folder is None:
            return CacheEntry(identity)
        path = self._path(identity)
        if not path.is_file():
            return CacheEntry(identity)
        try:
            data = decode_floats(read_json(path))
            if data.get("format") != CACHE_FORMAT or data.get("identity") != identity:
                raise WeightScopeError("not an entry for this checkpoint")
            results = data.get("results")
            return CacheEntry(
                identity,
                ScanResults.from_json_dict(results, origin=str(path)) if results else None,
                dict(data.get("pairs") or {}),
                data.get("histograms"),
            )
        except (WeightScopeError, AttributeError, TypeError, ValueError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
            return CacheEntry(identity)

    def store(self, entry: CacheEntry, checkpoint: str) -> None:
        if self.folder is None:
            return
        data = {
            "format": CACHE_FORMAT,
            "identity": entry.identity,
            "checkpoint": checkpoint,
            "results": entry.results.to_json_dict() if entry.results is not None else None,
            "pairs": entry.pairs,
            "histograms": entry.histograms,
        }
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # ScanResults.to_json_dict makes NaN None; encode from the raw values instead.
            if entry.results is not None:
                data["results"]["layers"] = dict(entry.results)
            write_json(self._path(entry.identity), encode_floats(data), indent=None)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot write the run cache in %s (%s); results will not be reused", self.folder, exc)
                self._warned = True
