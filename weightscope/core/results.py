"""ScanResults: a plain ``layer -> method -> metric -> value`` dict with helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import WeightScopeError
from ..sinks.files import check_output_path, is_table_path, read_json, to_strict, write_json, write_table

SCAN_FORMAT = "weightscope.scan/1"


def flatten_metrics(methods: dict[str, Any], sep: str = ".") -> dict[str, Any]:
    """``{"spectral": {"condition_number": 3}} -> {"spectral.condition_number": 3}``; dicts nest, lists stay."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", methods)
    return flat


class ScanResults(dict):
    """Per-layer results of one scan. It *is* the dict users ``json.dump``.

    Extra information lives in attributes (not keys) so that iterating the
    dict yields layers only: ``source``, ``methods``, ``aliases`` (tied
    layer -> the layer analysed in its place), ``skipped`` (tensor name ->
    reason), ``stored_dtypes`` (layer -> the dtype it is stored in, e.g.
    ``"bfloat16"``) and ``stored_shapes`` (layer -> its shape as a list),
    both whatever the methods: a comparison of saved scans needs them even
    when ``basic_stats`` (which also holds them) was not run.

    Results returned by :meth:`Scope.scan <weightscope.Scope.scan>` of a file
    or folder also keep a private handle on it (a weak reference and a
    fingerprint: never tensors), so that a comparison can read the tensors
    again while the files are unchanged (see :func:`weightscope.compare`);
    results of in-memory models do not (their tensors change in place). The handle is not saved:
    results read back from JSON (:meth:`load`, :meth:`from_json_dict`), from a
    pickle or from a copy compare from their stats only. :meth:`forget_source`
    drops it by hand.
    """

    #: How a live scan's tensors can be read again (a ``weightscope.core.scope.SourceHandle``);
    #: None for results read from a file, unpickled or built by hand. A class default, so that
    #: pickles written before it existed load unchanged.
    _origin: Any = None

    def __init__(
        self,
        layers: dict[str, dict[str, Any]] | None = None,
        *,
        source: str = "",
        methods: list[str] | None = None,
        aliases: dict[str, str] | None = None,
        skipped: dict[str, str] | None = None,
        stored_dtypes: dict[str, str] | None = None,
        stored_shapes: dict[str, list[int]] | None = None,
    ) -> None:
        super().__init__(layers or {})
        self.source = source
        self.methods = list(methods or [])
        self.aliases = dict(aliases or {})
        self.skipped = dict(skipped or {})
        self.stored_dtypes = dict(stored_dtypes or {})
        self.stored_shapes = {k: [int(n) for n in v] for k, v in (stored_shapes or {}).items()}

    # -- the scanned source ---------------------------------------------------
    @property
    def rereadable(self) -> bool:
        """Whether these results still hold a handle on the tensors they were scanned from.

        True does not promise that reading works: a comparison checks that the
        source is unchanged first and falls back to the saved stats if not.
        """
        return self._origin is not None

    def forget_source(self) -> ScanResults:
        """Drop the handle on the scanned source: comparisons then use the saved stats only."""
        self._origin = None
        return self

    def __getstate__(self) -> dict[str, Any]:
        # The handle holds weak references (not picklable) to this process's objects; an unpickled
        # result is like one read from a file. Leaving it out keeps the pickle layout as before.
        state = dict(self.__dict__)
        state.pop("_origin", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in ("stored_dtypes", "stored_shapes"):  # pickled before they existed
            self.__dict__.setdefault(name, {})

    # -- views -------------------------------------------------------------
    def metric(self, layer: str, method: str, key: str, default: Any = None) -> Any:
        return self.get(layer, {}).get(method, {}).get(key, default)

    def _basic_stat(self, layer: str, key: str) -> Any:
        stats = self.get(layer)
        basic = stats.get("basic_stats") if isinstance(stats, dict) else None
        return basic.get(key) if isinstance(basic, dict) else None

    def layer_shape(self, layer: str) -> tuple[int, ...] | None:
        """The shape of a layer as scanned: from ``basic_stats``, else ``stored_shapes`` (None if neither)."""
        shape = self._basic_stat(layer, "shape")
        if not isinstance(shape, (list, tuple)):
            shape = self.stored_shapes.get(layer)
        return tuple(int(n) for n in shape) if isinstance(shape, (list, tuple)) else None

    def layer_dtype(self, layer: str) -> str | None:
        """The stored dtype of a layer: from ``basic_stats``, else ``stored_dtypes`` (None if neither)."""
        dtype = self._basic_stat(layer, "dtype")
        if not isinstance(dtype, str):
            dtype = self.stored_dtypes.get(layer)
        return dtype if isinstance(dtype, str) else None

    def errors(self) -> dict[str, dict[str, str]]:
        """``layer -> method -> error message`` for every method that failed."""
        out: dict[str, dict[str, str]] = {}
        for layer, methods in self.items():
            for m, res in methods.items():
                if isinstance(res, dict) and "error" in res:
                    out.setdefault(layer, {})[m] = res["error"]
        return out

    def to_dataframe(self) -> Any:
        """One row per layer, in scan order: a ``layer`` column, then ``method.metric`` columns (pandas).

        The index is a plain range: ``layer`` is a column only, so ``groupby("layer")``,
        ``sort_values("layer")`` and ``reset_index()`` work (a column that is also the
        index's name makes pandas refuse them). ``.set_index("layer")`` gives lookups by name.
        """
        try:
            import pandas as pd
        except ImportError as exc:  # optional extra
            raise WeightScopeError("to_dataframe() needs pandas: pip install 'weightscope[pandas]'") from exc
        rows = [{"layer": layer, **flatten_metrics(methods)} for layer, methods in self.items()]
        # An empty scan still has its ``layer`` column, so code that selects it does not break.
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["layer"])

    # -- persistence -------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return to_strict(
            {
                "format": SCAN_FORMAT,
                "source": self.source,
                "methods": self.methods,
                "weightscope_version": __version__,
                "aliases": self.aliases,
                "skipped": self.skipped,
                "stored_dtypes": self.stored_dtypes,
                "stored_shapes": self.stored_shapes,
                "layers": dict(self),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write strict JSON, or a flattened table for ``.csv`` / ``.parquet``, atomically."""
        check_output_path(path)  # another extension is an error, as on the command line
        if is_table_path(path):
            return write_table(path, self.to_dataframe())
        return write_json(path, self.to_json_dict())

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], origin: str = "scan results") -> ScanResults:
        """Accept the ``weightscope.scan/1`` file layout or a bare ``layer -> method`` dict."""
        if not isinstance(data, dict):
            raise WeightScopeError(f"{origin} is not a scan result (expected a JSON object)")
        if not data:
            # A bare {} would otherwise pass as "zero layers" and compare as nothing, silently.
            raise WeightScopeError(f"{origin} is not a WeightScope scan file: it is an empty JSON object "
                                   "(write one with `weightscope scan --output FILE.json`)")
        if "layers" in data and "format" in data:
            if not str(data["format"]).startswith("weightscope.scan/"):
                raise WeightScopeError(f"{origin} has format {data['format']!r}, expected {SCAN_FORMAT}")
            return cls(
                data["layers"],
                source=data.get("source", origin),
                methods=data.get("methods"),
                aliases=data.get("aliases"),
                skipped=data.get("skipped"),
                stored_dtypes=data.get("stored_dtypes"),  # absent from older files: {}
                stored_shapes=data.get("stored_shapes"),
            )
        if all(isinstance(v, dict) for v in data.values()):
            methods = sorted({m for v in data.values() for m in v})
            return cls(data, source=getattr(data, "source", origin), methods=getattr(data, "methods", methods),
                       aliases=getattr(data, "aliases", None), skipped=getattr(data, "skipped", None),
                       stored_dtypes=getattr(data, "stored_dtypes", None),
                       stored_shapes=getattr(data, "stored_shapes", None))
        raise WeightScopeError(f"{origin} is not a scan result (expected layer -> method -> metrics)")

    @classmethod
    def load(cls, path: str | Path) -> ScanResults:
        return cls.from_json_dict(read_json(path), origin=str(path))
