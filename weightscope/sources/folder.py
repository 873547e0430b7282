"""A model folder: Hugging Face layout (sharded or not) or one checkpoint file.

``find_weight_files`` decides which files make up the one model in a folder;
``checkpoint_candidates`` lists every weight file, for callers (run folders)
that want to treat several checkpoints as a sequence instead.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError
from .base import TensorRef, TensorSource
from .files import is_weight_file, open_file

log = logging.getLogger(__name__)

# Hugging Face names, in the order transformers itself tries them:
# safetensors before pickles, a single file before an index.
_HF_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)
_INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json")
_SUFFIX_PREFERENCE = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<i>\d+)-of-(?P<n>\d+)(?P<ext>\.\w+)$")
_OTHER_FRAMEWORKS = (".h5", ".msgpack", ".onnx", ".gguf", ".tflite")
#: Hugging Face ``Trainer`` checkpoint folders (``save_steps``): a training run, not one model.
_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def natural_key(path: Path) -> list[int | str]:
    """Sort key that puts ``step-9`` before ``step-10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def checkpoint_candidates(folder: str | Path) -> list[Path]:
    """Every weight file directly in ``folder``, naturally sorted (optimizer/RNG state excluded)."""
    return sorted((p for p in Path(folder).iterdir() if is_weight_file(p)), key=natural_key)


@dataclass(frozen=True)
class WeightFiles:
    """The files of one model; ``weight_map`` (tensor -> file name) when an index names them."""

    files: list[Path]
    index: Path | None = None
    weight_map: dict[str, str] | None = None


def find_weight_files(folder: str | Path) -> list[Path]:
    """The files holding the one model in ``folder``; SourceError if none or ambiguous."""
    return resolve_weight_files(folder).files


def resolve_weight_files(folder: str | Path) -> WeightFiles:
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"not a folder: {folder}")
    for single, index in _HF_LAYOUTS:
        if (folder / single).is_file():
            return WeightFiles([folder / single])
        if (folder / index).is_file():
            return _from_index(folder / index)
    indexes = sorted(p for p in folder.iterdir() if p.name.endswith(_INDEX_SUFFIXES))
    if indexes:
        # A non-standard prefix (diffusers, adapters); safetensors wins over .bin.
        if len({_index_prefix(p) for p in indexes}) == 1:
            return _from_index(min(indexes, key=lambda p: not p.name.endswith(_INDEX_SUFFIXES[0])))
    candidates = checkpoint_candidates(folder)
    if not candidates:
        raise SourceError(_no_weights_message(folder))
    if len(candidates) == 1:
        return WeightFiles(candidates)
    if len({p.name.rsplit(".", 1)[0] for p in candidates}) == 1:
        # Same model in several formats (adapter_model.safetensors + .bin).
        return WeightFiles([min(candidates, key=_suffix_rank)])
    shards = _shard_set(candidates)
    if shards:
        return WeightFiles(shards)
    names = ", ".join(p.name for p in candidates[:10]) + (" ..." if len(candidates) > 10 else "")
    raise SourceError(
        f"{folder} holds {len(candidates)} separate checkpoints ({names}) and no index to join them: "
        f"pass the file to scan, or, if they are a training run, {_scan_run_hint(folder)}"
    )


def _scan_run_hint(folder: Path) -> str:
    """How to scan ``folder`` as a training run, from the Python API and from the CLI."""
    return f"use weightscope.scan_run({str(folder)!r}) (CLI: weightscope scan --model {folder})"


def _index_prefix(index: Path) -> str:
    return index.name.removesuffix(".index.json").rsplit(".", 1)[0]


def _suffix_rank(path: Path) -> int:
    suffix = path.suffix.lower()
    return _SUFFIX_PREFERENCE.index(suffix) if suffix in _SUFFIX_PREFERENCE else len(_SUFFIX_PREFERENCE)


def _shard_set(candidates: list[Path]) -> list[Path] | None:
    """``x-00001-of-00003.safetensors`` ... without their index: one model if complete."""
    matches = [_SHARD_RE.match(p.name) for p in candidates]
    if not all(matches):
        return None
    groups = {(m["stem"], int(m["n"]), m["ext"]) for m in matches if m}
    if len(groups) != 1:
        return None
    stem, total, ext = next(iter(groups))
    missing = sorted(set(range(1, total + 1)) - {int(m["i"]) for m in matches if m})
    if missing:
        first = next(m for m in matches if m)
        width, spelled_total = len(first["i"]), first["n"]  # as the file names spell them: 00003, 00007
        names = ", ".join(f"{stem}-{i:0{width}d}-of-{spelled_total}{ext}" for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise SourceError(f"{candidates[0].parent}: shard files are missing: {names}{more} (incomplete download?)")
    return sorted(candidates, key=natural_key)


def _from_index(index: Path) -> WeightFiles:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{index}: unreadable index file ({exc})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise SourceError(f"{index}: index file has no valid weight_map")
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise SourceError(f"{index} names shard files that are missing: {', '.join(missing)} (incomplete download?)")
    return WeightFiles(files, index, weight_map)


def _no_weights_message(folder: Path) -> str:
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return f"{folder}: empty folder, no weights to read"
    foreign = [name for name in entries if name.endswith(_OTHER_FRAMEWORKS)]
    if foreign:
        return f"{folder}: no PyTorch weights found (only {', '.join(foreign)}, a format WeightScope does not read)"
    runs = [name for name in entries if _CHECKPOINT_DIR.match(name) and (folder / name).is_dir()]
    if runs:
        shown = ", ".join(runs[:10]) + (" ..." if len(runs) > 10 else "")
        return (f"{folder}: no weights of its own; its {shown} folders look like a training run: "
                f"{_scan_run_hint(folder)}")
    shown = ", ".join(entries[:10]) + (" ..." if len(entries) > 10 else "")
    return f"{folder}: no weights found (expected *.safetensors, *.bin, *.pt, *.pth or *.ckpt; found {shown})"


class FolderSource(TensorSource):
    """All tensors of the model in a folder, in index order (else file order)."""

    def __init__(self, folder: str | Path, description: str | None = None) -> None:
        self.path = Path(folder)
        self.description = description or str(self.path)
        found = resolve_weight_files(self.path)
        self.files = found.files
        self._sources: list[TensorSource] = []
        try:
            self._sources = [open_file(p) for p in found.files]
        except BaseException:
            self.close()
            raise
        #: Tensors left out (dtype torch cannot hold): name -> reason.
        self.skipped: dict[str, str] = {}
        for src in self._sources:
            self.skipped.update(getattr(src, "skipped", {}))
        self._refs = self._merge(found)

    def _merge(self, found: WeightFiles) -> list[TensorRef]:
        if found.weight_map is None:
            merged: dict[str, TensorRef] = {}
            for src in self._sources:
                for ref in src.refs():
                    if ref.name in merged:
                        raise SourceError(f"{self.path}: tensor {ref.name!r} appears in more than one file")
                    merged[ref.name] = ref
            return list(merged.values())
        # found.files follows the index's first mention of each file name.
        shard_names = dict.fromkeys(found.weight_map.values())
        per_file = {fname: {r.name: r for r in src.refs()} for fname, src in zip(shard_names, self._sources)}
        refs: list[TensorRef] = []
        for name, fname in found.weight_map.items():
            ref = per_file[fname].pop(name, None)
            if ref is not None:
                refs.append(ref)
            elif name not in self.skipped:
                raise SourceError(f"{found.index}: maps {name!r} to {fname}, but that file has no such tensor")
        leftovers = [ref for refs_of_file in per_file.values() for ref in refs_of_file.values()]
        if leftovers:
            # The index is stale; reading what is really there beats hiding it.
            log.warning("%s: %d tensors in shards are not in the index", found.index, len(leftovers))
        return refs + leftovers

    def refs(self) -> list[TensorRef]:
        return list(self._refs)

    def close(self) -> None:
        for src in self._sources:
            src.close()
