"""STUB: to be implemented."""
from __future__ import annotations
from typing import Any
from .view import TensorView

def analyze(view: TensorView) -> dict[str, Any]:
    m = view.matrix.double()
    return {"mean": float(m.mean()), "numel": m.numel(), "shape": list(view.shape), "dtype": view.dtype}
