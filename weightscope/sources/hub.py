"""Hugging Face Hub ids (``gpt2``, ``openai-community/gpt2``): download, then read as a folder.

``huggingface_hub`` is the optional ``hf`` extra, imported only here. The
download honours the usual HF variables (``HF_HOME``, ``HF_HUB_OFFLINE``), so
a model already in the cache opens without network.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import SourceError
from .files import WEIGHT_SUFFIXES
from .folder import FolderSource, find_weight_files

log = logging.getLogger(__name__)

# "name" or "owner/name": letters, digits, - _ . ; no "--" or ".." (HF rules).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?$", re.ASCII)
_CONFIG = ["config.json"]
# Weights and config only, safetensors first: a repo with both should not cost two downloads.
_PATTERN_PASSES = (
    ["*.safetensors", "*.safetensors.index.json", *_CONFIG],
    ["pytorch_model*.bin", "pytorch_model.bin.index.json", *_CONFIG],
)


def looks_like_hub_id(text: str) -> bool:
    """True for strings shaped like a Hub repo id and not like a file name."""
    return (
        bool(_REPO_ID.match(text))
        and "--" not in text
        and ".." not in text
        and not text.endswith(".git")
        and Path(text).suffix.lower() not in WEIGHT_SUFFIXES
    )


def open_hub(repo_id: str, revision: str | None = None) -> FolderSource:
    """Fetch the weights of ``repo_id`` (or find them in the HF cache) and open them."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SourceError(
            f"{repo_id!r} looks like a Hugging Face Hub id, but huggingface_hub is not installed: "
            "pip install weightscope[hf]"
        ) from None
    where = f"{repo_id}@{revision}" if revision else repo_id
    folder: Path | None = None
    for patterns in _PATTERN_PASSES:
        try:
            folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
        except Exception as exc:  # noqa: BLE001 - network, auth, offline and 404 errors all mean "cannot fetch"
            raise SourceError(
                f"could not fetch {where} from the Hugging Face Hub ({type(exc).__name__}: {_first_line(exc)}); "
                "check the id and your connection, or pass a local path"
            ) from None
        try:
            find_weight_files(folder)
        except SourceError:
            log.debug("no weights in %s with %s, trying the next pattern set", folder, patterns)
            continue
        return FolderSource(folder, description=f"hf://{where}")
    raise SourceError(f"{where} on the Hugging Face Hub has no safetensors or pytorch_model.bin weights")


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
