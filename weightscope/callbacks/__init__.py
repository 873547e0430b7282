"""Training callbacks. Each framework adapter is imported only when used.

>>> from weightscope.callbacks import WeightMonitor               # any loop, no framework needed
>>> from weightscope.callbacks import WeightScopeCallback        # doctest: +SKIP  (needs lightning)
>>> from weightscope.callbacks import WeightScopeTrainerCallback # doctest: +SKIP  (needs transformers)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..monitor import Alert, WeightMonitor

if TYPE_CHECKING:
    from .huggingface import WeightScopeTrainerCallback
    from .lightning import WeightScopeCallback

_LAZY = {
    "WeightScopeCallback": "lightning",
    "WeightScopeTrainerCallback": "huggingface",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Alert", "WeightMonitor", "WeightScopeCallback", "WeightScopeTrainerCallback"]
