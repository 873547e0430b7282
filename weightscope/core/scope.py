"""``Scope``: the front door of the Python API."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checks import positive_int, regex
from ..errors import ConfigError, SourceError
from ..sources import (
    FolderSource,
    SafetensorsFileSource,
    TensorSource,
    TorchPickleSource,
    open_source,
    resolve_weight_files,
)
from .device import resolve_device
from .engine import Progress, scan_source
from .results import ScanResults

log = logging.getLogger(__name__)

_FILE_SOURCES = (SafetensorsFileSource, TorchPickleSource, FolderSource)


def _files_fingerprint(path: Path) -> tuple[Any, ...]:
    """Identity, size and mtime of every file a file/folder source reads (index included)."""
    if path.is_dir():
        found = resolve_weight_files(path)
        files = [*found.files, *([found.index] if found.index is not None else [])]
    else:
        files = [path]
    out = []
    for f in files:
        st = os.stat(f)  # follows links: Hub cache snapshots link to blobs
        out.append((str(Path(f).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _is_open(source: TensorSource) -> bool:
    if isinstance(source, FolderSource):
        return all(_is_open(s) for s in source._sources)
    if isinstance(source, SafetensorsFileSource):
        return source._handle is not None
    if isinstance(source, TorchPickleSource):
        return source._tensors is not None
    return True  # another TensorSource: it says nothing, so it is trusted while it lives


def check_engine_args(
    *,
    methods: Any = None,
    parallel: Any = True,
    num_workers: Any = None,
    layers: Any = None,
    exclude: Any = None,
    include_vectors: Any = False,
) -> None:
    """ConfigError for a wrong-typed argument of a scan or comparison, before any work starts.

    ``methods`` names are checked later (UnknownMethodError); here only its type.
    """

    if methods is not None and not isinstance(methods, str) and (
        not isinstance(methods, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in methods)
    ):
        raise ConfigError(f"methods must be a method name, a list of method names or None, got {methods!r}")
    for name, value in (("parallel", parallel), ("include_vectors", include_vectors)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    if num_workers is not None:
        positive_int("num_workers", num_workers)
    regex("layers", layers)
    regex("exclude", exclude)


def _check_revision(revision: Any) -> None:
    if revision is not None and not isinstance(revision, str):
        raise ConfigError(f"revision must be a Hub branch, tag or commit (a string) or None, got {revision!r}")


def _require_open(scope: Scope) -> None:
    if scope.closed:
        raise SourceError(f"{scope.name}: this Scope is closed; open a new Scope to read it again")


class SourceHandle:
    """How the results of a live scan of a file or folder can read its tensors again: never the
    tensors themselves.

    Kept (privately) by the :class:`ScanResults` that :meth:`Scope.scan` returns; a comparison
    calls :meth:`open`. It holds a weak reference to the source the scan read (used while it is
    open), the path that reopens it, and a fingerprint of what was scanned: ``(device, inode,
    size, mtime)`` of every file read. In-memory sources (an ``nn.Module``, a state dict) get no
    handle: nothing reliable tells that their tensors were not changed in place since (a fused
    optimizer step does not even bump a tensor's version counter), and reading the trained
    weights against the stats of the untrained ones would report "no change". Once it fails it
    stays failed (``stale`` says why).
    """

    def __init__(self, source: TensorSource, description: str, fingerprint: Any) -> None:
        self.description = description
        self.fingerprint = fingerprint
        self.path: Path = source.path
        self._source = weakref.ref(source)
        self.stale: str | None = None
        self.warned = False  # the comparator warns once per handle

    @staticmethod
    def fingerprint_of(path: Path) -> Any:
        return _files_fingerprint(path)

    def open(self) -> tuple[TensorSource, bool]:
        """``(source, owned)`` holding the scanned tensors, unchanged; SourceError saying why not.

        ``owned``: opened here, so the caller closes it.
        """
        if self.stale is not None:
            raise SourceError(self.stale)
        try:
            source, owned = self._reopen()
        except (SourceError, OSError) as exc:
            self.stale = f"cannot read {self.description} again ({exc})"
            raise SourceError(self.stale) from None
        try:
            now = self.fingerprint_of(self.path)
        except (SourceError, OSError) as exc:
            now, why = None, str(exc)
        else:
            why = self._what_changed(now)
        if why is not None:
            if owned:
                source.close()
            self.stale = f"{self.description} changed since it was scanned ({why})"
            raise SourceError(self.stale)
        return source, owned

    def _reopen(self) -> tuple[TensorSource, bool]:
        live = self._source()
        if live is not None and _is_open(live):
            return live, False
        if not self.path.exists():
            raise SourceError(f"{self.path} no longer exists")
        return open_source(self.path), True

    def _what_changed(self, now: Any) -> str | None:
        if now == self.fingerprint:
            return None
        files_before = {f[0]: f for f in self.fingerprint}
        files_now = {f[0]: f for f in now}
        if set(files_before) != set(files_now):
            return "its set of weight files differs"
        name = next(f for f in files_now if files_now[f] != files_before[f])
        where = "" if len(files_now) == 1 else f"{name}: "
        return f"{where}size, modification time or inode differs"


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
        _check_revision(revision)
        self.device = resolve_device(device)
        self._closed = False
        self.source: TensorSource = source if isinstance(source, TensorSource) else open_source(source, revision=revision)
        self.name = self.source.description
        self.last_results: ScanResults | None = None
        self._opened_fingerprint: Any = None  # the files as opened, for the re-read handle of results
        if self._file_path() is not None:
            try:
                self._opened_fingerprint = SourceHandle.fingerprint_of(self._file_path())
            except OSError as exc:  # best effort: results without a handle compare from their stats
                log.debug("%s: results of this scope will not re-read it: %s", self.name, exc)

    def _file_path(self) -> Path | None:
        return self.source.path if isinstance(self.source, _FILE_SOURCES) else None

    def _handle(self, before: Any) -> SourceHandle | None:
        """A handle on the files the scan just read, if they were the same before and after."""
        path = self._file_path()
        if path is None or before is None:
            return None
        try:
            after = SourceHandle.fingerprint_of(path)
        except OSError as exc:
            log.debug("%s: no re-read handle: %s", self.name, exc)
            return None
        if after != before:
            log.info("%s changed while it was scanned: comparisons will use the saved stats", self.name)
            return None
        return SourceHandle(self.source, self.name, after)

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
        While what was scanned is unchanged, comparing these results reads its
        tensors again (reusing these stats); see :meth:`compare_with`.
        A wrong-typed argument raises ConfigError, a closed Scope SourceError.
        """
        check_engine_args(methods=methods, parallel=parallel, num_workers=num_workers, layers=layers,
                          exclude=exclude, include_vectors=include_vectors)
        _require_open(self)
        before = self._opened_fingerprint
        results = scan_source(
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
        results._origin = self._handle(before)
        self.last_results = results
        return results

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

        Results returned by :meth:`scan` (here or on another Scope) are compared
        by their tensors (``mode == "tensors"``), read again from the scanned
        file, folder, module or state dict, reusing their saved stats where they
        cover ``methods``, as long as it is unchanged since the scan (files: same
        inode, size and mtime; in-memory tensors: not modified in place or
        replaced). If it changed or cannot be read, the comparison uses the
        saved stats (``mode == "stats"``) and a warning says why, once per
        results object. Results read back from a file (:meth:`ScanResults.load`,
        a JSON path, a dict) always compare from their stats: pass the model's
        path to compare its tensors.

        ``device`` defaults to this Scope's; the other keyword arguments
        (``device``, ``threshold``, ``layers``, ``exclude``, ``include_vectors``,
        ``progress``, ``revision2``) are those of
        :func:`~weightscope.core.comparator.compare_sources`.
        """
        from .comparator import compare_sources

        _require_open(self)
        kwargs.setdefault("device", self.device)
        return compare_sources(self, other, methods=methods, parallel=parallel, num_workers=num_workers, **kwargs)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (or the source it was given was closed): nothing left to read."""
        return self._closed or not _is_open(self.source)

    def close(self) -> None:
        self._closed = True
        self.source.close()

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Scope({self.name!r}, device={str(self.device)!r})"


_ENGINE_ARGS = ("parallel", "num_workers", "layers", "exclude", "include_vectors")


def scan(source: Any, methods: str | Sequence[str] | None = None, **kwargs: Any) -> ScanResults:
    """One-call form: ``weightscope.scan("model.safetensors", methods="spectral")``.

    Keyword arguments go to :class:`Scope` (``device``, ``revision``) or :meth:`Scope.scan`.
    """
    scope_kw = {k: kwargs.pop(k) for k in ("device", "revision") if k in kwargs}
    # Checked before the source is opened: a wrong argument fails before any file is read.
    check_engine_args(methods=methods, **{k: v for k, v in kwargs.items() if k in _ENGINE_ARGS})
    with Scope(source, **scope_kw) as scope:
        return scope.scan(methods, **kwargs)


def compare(a: Any, b: Any, methods: str | Sequence[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """One-call form of :meth:`Scope.compare_with`; ``a`` may also be scan results."""
    from .comparator import compare_sources

    return compare_sources(a, b, methods=methods, **kwargs)


def is_results_path(obj: Any) -> bool:
    return isinstance(obj, (str, Path)) and str(obj).lower().endswith(".json") and Path(obj).is_file()
