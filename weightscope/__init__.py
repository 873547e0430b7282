"""WeightScope: look inside neural-network weights.

>>> from weightscope import Scope
>>> results = Scope("path/to/model").scan(methods=["spectral"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ComparisonError,
    ConfigError,
    DeviceError,
    SourceError,
    UnknownMethodError,
    UnsafeCheckpointError,
    WeightScopeError,
)

if TYPE_CHECKING:
    from .core.results import ScanResults
    from .core.scope import Scope, compare, scan
    from .run.trajectory import scan_run

# Heavy modules load on first use so `import weightscope` stays cheap.
_LAZY = {
    "Scope": ("core.scope", "Scope"),
    "scan": ("core.scope", "scan"),
    "compare": ("core.scope", "compare"),
    "ScanResults": ("core.results", "ScanResults"),
    "scan_run": ("run.trajectory", "scan_run"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'weightscope' has no attribute {name!r}")


__all__ = [
    "ComparisonError",
    "ConfigError",
    "DeviceError",
    "Scope",
    "ScanResults",
    "SourceError",
    "UnknownMethodError",
    "UnsafeCheckpointError",
    "WeightScopeError",
    "__version__",
    "compare",
    "scan",
    "scan_run",
]
