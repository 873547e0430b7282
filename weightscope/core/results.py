"""ScanResults: a plain ``layer -> method -> metric -> value`` dict with helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import WeightScopeError
from ..sinks.files import is_table_path, read_json, to_strict, write_json, write_table

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
    reason) and ``stored_dtypes``.
    """

    def __init__(
        self,
        layers: dict[str, dict[str, Any]] | None = None,
        *,
        source: str = "",
        methods: list[str] | None = None,
        aliases: dict[str, str] | None = None,
        skipped: dict[str, str] | None = None,
    ) -> None:
        super().__init__(layers or {})
        self.source = source
        self.methods = list(methods or [])
        self.aliases = dict(aliases or {})
        self.skipped = dict(skipped or {})

    # -- views -------------------------------------------------------------
    def metric(self, layer: str, method: str, key: str, default: Any = None) -> Any:
        return self.get(layer, {}).get(method, {}).get(key, default)

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
                "layers": dict(self),
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write strict JSON, or a flattened table for ``.csv`` / ``.parquet``, atomically."""
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
            )
        if all(isinstance(v, dict) for v in data.values()):
            methods = sorted({m for v in data.values() for m in v})
            return cls(data, source=getattr(data, "source", origin), methods=getattr(data, "methods", methods),
                       aliases=getattr(data, "aliases", None))
        raise WeightScopeError(f"{origin} is not a scan result (expected layer -> method -> metrics)")

    @classmethod
    def load(cls, path: str | Path) -> ScanResults:
        return cls.from_json_dict(read_json(path), origin=str(path))
