"""``Scope``: the front door of the Python API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..sources import TensorSource, open_source
from .device import resolve_device
from .engine import Progress, scan_source
from .results import ScanResults


class Scope:
    """A checkpoint to look into.

    ``source`` is a path (HF folder, ``.safetensors``, ``.bin``/``.pt``/``.pth``,
    Lightning ``.ckpt``), a Hub id, an ``nn.Module`` or a state dict. Only
    headers are read here; tensors are streamed one at a time by :meth:`scan`.

    >>> import torch
    >>> scope = Scope(torch.nn.Linear(8, 4), device="cpu")
    >>> results = scope.scan(methods="spectral")
    >>> sorted(results)
    ['weight']
    """

    def __init__(self, source: Any, device: str | torch.device | None = "cpu", *, revision: str | None = None) -> None:
        self.device = resolve_device(device)
        self.source: TensorSource = source if isinstance(source, TensorSource) else open_source(source, revision=revision)
        self.name = self.source.description
        self.last_results: ScanResults | None = None

    def scan(
        self,
        methods: str | Sequence[str] | None = None,
        parallel: bool = True,
        num_workers: int | None = None,
        *,
        layers: str | None = None,
        exclude: str | None = None,
        include_vectors: bool = False,
        progress: Progress | None = None,
    ) -> ScanResults:
        """Analyse every floating-point matrix; ``methods`` defaults to all of them.

        Returns ``layer -> method -> metric -> value`` (a :class:`ScanResults`).
        """
        self.last_results = scan_source(
            self.source,
            methods,
            layers=layers,
            exclude=exclude,
            include_vectors=include_vectors,
            parallel=parallel,
            num_workers=num_workers,
            device=self.device,
            progress=progress,
        )
        return self.last_results

    def compare_with(
        self,
        other: Any,
        methods: str | Sequence[str] | None = None,
        parallel: bool = True,
        num_workers: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Compare this checkpoint (model 1) with ``other`` (model 2), layer by layer.

        ``other``: a path or Hub id, another Scope, an ``nn.Module`` or state dict,
        scan results, or the path of a scan JSON file.
        """
        from .comparator import compare_sources

        return compare_sources(
            self, other, methods=methods, parallel=parallel, num_workers=num_workers, device=self.device, **kwargs
        )

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scope({self.name!r}, device={str(self.device)!r})"


def scan(source: Any, methods: str | Sequence[str] | None = None, **kwargs: Any) -> ScanResults:
    """One-call form: ``weightscope.scan("model.safetensors", methods="spectral")``.

    Keyword arguments go to :class:`Scope` (``device``, ``revision``) or :meth:`Scope.scan`.
    """
    scope_kw = {k: kwargs.pop(k) for k in ("device", "revision") if k in kwargs}
    with Scope(source, **scope_kw) as scope:
        return scope.scan(methods, **kwargs)


def compare(a: Any, b: Any, methods: str | Sequence[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """One-call form of :meth:`Scope.compare_with`; ``a`` may also be scan results."""
    from .comparator import compare_sources

    return compare_sources(a, b, methods=methods, **kwargs)


def is_results_path(obj: Any) -> bool:
    return isinstance(obj, (str, Path)) and str(obj).lower().endswith(".json") and Path(obj).is_file()
