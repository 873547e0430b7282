"""Training callbacks. Each framework adapter is imported only when used.

>>> from weightscope.callbacks import WeightMonitor               # any loop, no framework needed
>>> from weightscope.callbacks import WeightScopeCallback        # doctest: +SKIP  (needs lightning)
>>> from weightscope.callbacks import WeightScopeTrainerCallback # doctest: +SKIP  (needs transformers)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..monitor import Alert, WeightMonitor

if TYPE_CHECKING:
    from .huggingface import WeightScopeTrainerCallback
    from .lightning import WeightScopeCallback

_LAZY = {
    "WeightScopeCallback": "lightning",
    "WeightScopeTrainerCallback": "huggingface",
}


def _raise_if_missing(exc: ImportError, module: str, extra: str, what: str) -> None:
    """Importing an adapter's framework failed: when the framework itself is missing, raise with the install
    hint; otherwise return, and the caller re-raises ``exc`` (a broken install is not cured by the hint)."""
    if (exc.name or "").split(".")[0] == module:
        raise ModuleNotFoundError(f"{what} needs {module}, which is not installed: pip install 'weightscope[{extra}]'",
                                  name=exc.name) from exc


def _check_monitor_kwargs(owner: type, kwargs: Mapping[str, Any]) -> None:
    """Reject keywords that neither ``owner`` nor :class:`WeightMonitor` takes, naming ``owner`` (not the monitor)."""
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    monitor = inspect.signature(WeightMonitor.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in monitor.values()):
        return  # the monitor takes any keyword: let it judge
    own = inspect.signature(owner.__init__).parameters
    valid = [n for n, p in own.items() if n != "self" and p.kind not in variadic]
    valid += [n for n in monitor if n != "self" and n not in valid]
    for key in kwargs:
        if key not in monitor:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{owner.__name__} got an unexpected keyword argument {key!r}{hint}; "
                              f"valid: {', '.join(valid)}")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Alert", "WeightMonitor", "WeightScopeCallback", "WeightScopeTrainerCallback"]
