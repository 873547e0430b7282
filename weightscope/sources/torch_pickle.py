"""``torch.save`` files: ``.pt``/``.pth``/``.bin`` state dicts and Lightning ``.ckpt``.

Loaded with ``weights_only=True`` only, so nothing in the file can run code.
Classes and functions the file references (a config object in a Lightning
``.ckpt``'s ``hyper_parameters``, say) are replaced by inert placeholders
when the weights lie outside them; files whose weights need code (a whole
module saved with ``torch.save(model)``) are refused with
:class:`UnsafeCheckpointError`. The
zip format (torch >= 1.6) is memory-mapped, so "loading" the dict reads the
pickle only and tensor data stays file-backed until used.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import SourceError, UnsafeCheckpointError
from ._state_dict import flatten_tensors, require_tensors, select_state_dict, tensor_refs
from .base import TensorRef, TensorSource

log = logging.getLogger(__name__)

_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def load_torch_checkpoint(path: Path) -> Any:
    """``torch.load`` the safe way; errors become :class:`SourceError` subclasses."""
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        # Legacy (pre-1.6) format cannot be mapped: it is read into memory.
        log.info("%s: legacy torch.save format, loading into memory (no mmap)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        names = _unsafe_globals(path, exc, is_zip)
        if not names:
            raise SourceError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc.__context__ or exc)})") \
                from None
        obj = _load_with_placeholders(path, names) if is_zip else None
        if obj is None:
            raise UnsafeCheckpointError(_unsafe_message(path, names)) from None
        log.warning("%s: %d class(es) or function(s) the file references were replaced by inert placeholders "
                    "(%s); the weights do not depend on them", path, len(names), _shown(names))
        return obj
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes torch.load raise, the file is unreadable
        raise SourceError(f"{path}: corrupt or truncated PyTorch checkpoint ({_first_line(exc)})") from None


class _Placeholder:
    """Stands in for a class or function a checkpoint references, so nothing of it is imported or run.

    A Lightning ``.ckpt`` whose ``hyper_parameters`` hold a config object, say,
    references that object's class; ``weights_only`` refuses the whole file for
    it. A placeholder takes whatever the pickle gives it (constructor
    arguments, state) and keeps it, inert.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"


def _load_with_placeholders(path: Path, names: list[str]) -> Any | None:
    """The checkpoint with every global it references replaced by a placeholder, or None.

    None when the pickle needs more than placeholders can give (a dict or
    list subclass being filled), or when no tensor is left outside them (a
    whole module saved with ``torch.save(model)``: its weights live inside
    the placeholder of the module's class).
    """
    stubs = [(type(name.rsplit(".", 1)[-1], (_Placeholder,), {"qualname": name}), name) for name in names]
    try:
        with torch.serialization.safe_globals(stubs):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything placeholders cannot satisfy: refuse as before
        log.debug("placeholders were not enough for %s", path, exc_info=True)
        return None
    return obj if flatten_tensors(select_state_dict(obj)) else None


def _unsafe_globals(path: Path, exc: BaseException, is_zip: bool) -> list[str]:
    """Classes/functions the pickle wants to import: the thing weights_only refused.

    Random bytes also fail as UnpicklingError ("Unsupported operand"); only a
    GLOBAL means "this file needs code", which deserves the unsafe message.
    """
    text = f"{exc} {exc.__context__ or ''}"
    if "GLOBAL" not in text:
        return []
    if is_zip and hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        try:  # complete list, read from the pickle opcodes without executing them
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            if found:
                return found
        except Exception:  # noqa: BLE001 - best effort; the message below still works
            log.debug("could not list globals of %s", path, exc_info=True)
    return sorted(set(_GLOBAL_RE.findall(text))) or ["<unknown>"]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def _unsafe_message(path: Path, names: list[str]) -> str:
    return (
        f"{path}: refused: loading it would run code from the file (it references {_shown(names)}), "
        "e.g. a whole model saved with torch.save(model). If you trust the file, load it in a "
        "trusted environment and save the weights alone: "
        'safetensors.torch.save_file(model.state_dict(), "model.safetensors"), then scan that'
    )


def _first_line(exc: BaseException) -> str:
    """First sentence of torch's (often paragraph-long) error message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0].split(". ")[0] if lines else type(exc).__name__


class TorchPickleSource(TensorSource):
    """Tensors of a ``torch.save`` checkpoint, in state-dict order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        obj = load_torch_checkpoint(self.path)
        tensors = flatten_tensors(select_state_dict(obj))
        require_tensors(tensors, str(self.path), obj)
        # The dict holds the mapped tensors (and keeps the map alive) until close().
        self._tensors: dict[str, torch.Tensor] | None = tensors
        self._refs = tensor_refs(tensors, str(self.path.resolve()), self._load)

    def _load(self, name: str) -> torch.Tensor:
        if self._tensors is None:
            raise SourceError(f"{self.path}: source is closed")
        return self._tensors[name]

    def refs(self) -> list[TensorRef]:
        return list(self._refs)

    def close(self) -> None:
        self._tensors = None
