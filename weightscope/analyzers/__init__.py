"""Analyzer registry: method name -> pure function ``TensorView -> flat dict``.

Adding a method means adding one module with an ``analyze(view)`` function
and one entry in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import UnknownMethodError
from .view import TensorView

# Order here is the order of methods in results and reports.
_MODULES: dict[str, str] = {
    "basic_stats": "basic_stats",
    "spectral": "spectral",
    "esd": "esd",
    "quantization": "quantization",
    "sparsity": "sparsity",
}
#: Methods that also run on 1-D tensors (biases, norm scales).
VECTOR_METHODS = frozenset({"basic_stats"})
ALL_METHODS: tuple[str, ...] = tuple(_MODULES)

Analyzer = Callable[[TensorView], dict[str, Any]]


def get_analyzer(name: str) -> Analyzer:
    if name not in _MODULES:
        raise UnknownMethodError(_unknown(name))
    return importlib.import_module(f".{_MODULES[name]}", __name__).analyze


def _unknown(name: str) -> str:
    return f"unknown method {name!r}; valid methods: {', '.join(ALL_METHODS)}, all"


def resolve_methods(methods: str | Iterable[str] | None, default: Iterable[str] = ALL_METHODS) -> list[str]:
    """Normalise a user's ``methods`` argument to registered names, in canonical order.

    Accepts a single string (``"spectral"``, ``"all"``, or ``"a,b"``), a list whose
    items may themselves be ``"a,b"`` (the CLI's ``--methods a,b`` arrives as
    ``["a,b"]``), or None (the default set). Raises UnknownMethodError naming the
    valid ones.
    """
    if methods is None:
        wanted = list(default)
    else:
        items = [methods] if isinstance(methods, str) else [str(m) for m in methods]
        wanted = [name for item in items for name in item.replace(",", " ").split()]
    if not wanted:
        raise UnknownMethodError(f"no methods given; valid methods: {', '.join(ALL_METHODS)}, all")
    chosen: set[str] = set()
    for m in wanted:
        if m == "all":
            chosen.update(ALL_METHODS)
        elif m in _MODULES:
            chosen.add(m)
        else:
            raise UnknownMethodError(_unknown(m))
    return [m for m in ALL_METHODS if m in chosen]


def methods_for(ndim: int, methods: list[str]) -> list[str]:
    """The subset of ``methods`` that applies to a tensor of ``ndim`` dimensions."""
    return methods if ndim >= 2 else [m for m in methods if m in VECTOR_METHODS]


def analyze_tensor(
    tensor: torch.Tensor, methods: list[str], device: torch.device | str = "cpu"
) -> dict[str, dict[str, Any]]:
    """Run ``methods`` on one tensor. A failing method yields ``{"error": ...}``; the others still run."""
    view = TensorView(tensor, device=device)
    out: dict[str, dict[str, Any]] = {}
    for m in methods_for(tensor.ndim, methods):
        try:
            out[m] = get_analyzer(m)(view)
        except Exception as exc:  # one bad tensor must never sink a scan
            out[m] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


__all__ = [
    "ALL_METHODS",
    "VECTOR_METHODS",
    "TensorView",
    "analyze_tensor",
    "get_analyzer",
    "methods_for",
    "resolve_methods",
]
