"""``Scope``: the front door of the Python API."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, SourceError
from ..sources import (
    FolderSource,
    MemorySource,
    SafetensorsFileSource,
    TensorSource,
    TorchPickleSource,
    open_source,
    resolve_weight_files,
)
from ..sources._state_dict import flatten_tensors, select_state_dict
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


def _tensor_signature(t: torch.Tensor) -> tuple[Any, ...]:
    # _version counts in-place writes (optimizer steps, copy_, load_state_dict), and detached
    # views share it with their parameter; data_ptr changes when ``.data`` is replaced.
    ptr = 0 if t.is_meta or t.layout != torch.strided else t.data_ptr()
    return (tuple(t.shape), t.dtype, str(t.device), ptr, t._version)


def _is_open(source: TensorSource) -> bool:
    if isinstance(source, FolderSource):
        return all(_is_open(s) for s in source._sources)
    if isinstance(source, SafetensorsFileSource):
        return source._handle is not None
    if isinstance(source, (TorchPickleSource, MemorySource)):
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
    from ..monitor.config import _positive_int, _regex  # the monitor's own checks: one wording

    if methods is not None and not isinstance(methods, str) and (
        not isinstance(methods, (list, tuple, set, frozenset)) or not all(isinstance(m, str) for m in methods)
    ):
        raise ConfigError(f"methods must be a method name, a list of method names or None, got {methods!r}")
    for name, value in (("parallel", parallel), ("include_vectors", include_vectors)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")
    if num_workers is not None:
        _positive_int("num_workers", num_workers)
    _regex("layers", layers)
    _regex("exclude", exclude)


def _check_revision(revision: Any) -> None:
    if revision is not None and not isinstance(revision, str):
        raise ConfigError(f"revision must be a Hub branch, tag or commit (a string) or None, got {revision!r}")


def _require_open(scope: Scope) -> None:
    if scope.closed:
        raise SourceError(f"{scope.name}: this Scope is closed; open a new Scope to read it again")


class SourceHandle:
    """How the results of a live scan can read the scanned tensors again: never the tensors themselves.

    Kept (privately) by the :class:`ScanResults` that :meth:`Scope.scan` returns; a comparison
    calls :meth:`open`. It holds a weak reference to the source the scan read (used while it is
    open), what reopens it when that is closed or gone (the path of a file or folder; weak
    references to the tensors of an ``nn.Module`` or state dict), and a fingerprint of what was
    scanned: ``(device, inode, size, mtime)`` of every file read; shape, dtype, address and
    in-place version counter of every in-memory tensor; names, shapes and dtypes for any other
    ``TensorSource``. Once it fails it stays failed (``stale`` says why).
    """

    def __init__(self, source: TensorSource, description: str, fingerprint: Any,
                 originals: Mapping[str, weakref.ref] | None) -> None:
        self.description = description
        self.fingerprint = fingerprint
        self.path: Path | None = source.path if isinstance(source, _FILE_SOURCES) else None
        self._source = weakref.ref(source)
        self._originals = originals
        self.stale: str | None = None
        self.warned = False  # the comparator warns once per handle

    @staticmethod
    def fingerprint_of(source: TensorSource, path: Path | None) -> Any:
        if path is not None:
            return ("files", _files_fingerprint(path))
        if isinstance(source, MemorySource):
            tensors = source._tensors
            if tensors is None:
                raise SourceError(f"{source.description}: source is closed")
            return ("memory", tuple((n, *_tensor_signature(t)) for n, t in tensors.items()))
        return ("refs", tuple((r.name, tuple(r.shape), str(r.dtype)) for r in source.refs()))

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
            now = self.fingerprint_of(source, self.path)
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
        if self.path is not None:
            if not self.path.exists():
                raise SourceError(f"{self.path} no longer exists")
            return open_source(self.path), True
        if self._originals is not None:
            tensors = {n: r() for n, r in self._originals.items()}
            gone = [n for n, t in tensors.items() if t is None]
            if gone:
                raise SourceError(f"its tensors were freed ({gone[0]!r}{' and more' if len(gone) > 1 else ''})")
            return MemorySource(tensors, self.description), True  # type: ignore[arg-type]
        raise SourceError("the source was closed or garbage-collected")

    def _what_changed(self, now: Any) -> str | None:
        if now == self.fingerprint:
            return None
        kind, before = self.fingerprint
        if kind == "files":
            files_before = {f[0]: f for f in before}
            files_now = {f[0]: f for f in now[1]}
            if set(files_before) != set(files_now):
                return "its set of weight files differs"
            name = next(f for f in files_now if files_now[f] != files_before[f])
            where = "" if len(files_now) == 1 else f"{name}: "
            return f"{where}size, modification time or inode differs"
        sig_before = {entry[0]: entry for entry in before}
        sig_now = {entry[0]: entry for entry in now[1]}
        if set(sig_before) != set(sig_now):
            return "its tensor names differ"
        name = next(n for n in sig_now if sig_now[n] != sig_before[n])
        return f"tensor {name!r} was modified or replaced"


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
        self._originals: dict[str, weakref.ref] | None = None
        self._opened_fingerprint: Any = None
        try:
            self._remember_origin(source)
        except Exception as exc:  # best effort: results without a handle compare from their stats
            log.debug("%s: results of this scope will not re-read it: %s", self.name, exc)

    def _remember_origin(self, obj: Any) -> None:
        """What lets results re-read this source later: weak references and a fingerprint at open time."""
        if isinstance(self.source, MemorySource):
            if isinstance(obj, torch.nn.Module):
                originals = obj.state_dict(keep_vars=True)
            elif isinstance(obj, Mapping):
                originals = flatten_tensors(select_state_dict(obj))
            else:  # a MemorySource passed as is: its own tensors, alive while it is
                originals = self.source._tensors or {}
            # The user's objects, not the detached views, so a closed scope does not end them.
            self._originals = {n: weakref.ref(t) for n, t in originals.items()}
        elif isinstance(self.source, _FILE_SOURCES) and self.source.path is not None:
            self._opened_fingerprint = SourceHandle.fingerprint_of(self.source, self.source.path)

    def _handle(self, before: Any) -> SourceHandle | None:
        """A handle on what the scan just read, if it was the same before and after."""
        try:
            path = self.source.path if isinstance(self.source, _FILE_SOURCES) else None
            after = SourceHandle.fingerprint_of(self.source, path)
        except Exception as exc:
            log.debug("%s: no re-read handle: %s", self.name, exc)
            return None
        if before is None or after != before:
            log.info("%s changed while it was scanned: comparisons will use the saved stats", self.name)
            return None
        return SourceHandle(self.source, self.name, after, self._originals)

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
        if before is None:
            try:
                path = self.source.path if isinstance(self.source, _FILE_SOURCES) else None
                before = SourceHandle.fingerprint_of(self.source, path)
            except Exception:
                before = None
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
