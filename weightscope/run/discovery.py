"""Find the checkpoints of a training run in a folder and put them in step order.

Only names are read here, except for Lightning ``.ckpt`` files whose name
has no step: their ``global_step`` is read from the pickle (memory-mapped,
tensors untouched); and a ``Trainer``'s ``trainer_state.json`` for the step
of its final model. Step patterns, tried in this order on the name without
its weight suffix (``.safetensors .pt .pth .bin .ckpt``):

1. ``checkpoint-N`` folders (Hugging Face ``Trainer``, ``save_steps``);
2. ``step=S`` anywhere (Lightning ``ModelCheckpoint``: ``epoch=E-step=S.ckpt``,
   ``epoch=E-step=S-v1.ckpt``);
3. ``step``/``global_step``/``iter``/``iteration`` then an optional ``_`` or ``-``,
   then digits (``step_500.pt``, ``global_step500.pt``, ``model-iter-3.bin``);
4. a trailing number after ``_``, ``-`` or ``.`` (``model_500.safetensors``,
   ``ckpt-500.pt``), shard names (``x-00001-of-00003``) excepted;
5. a ``.ckpt`` without a step in its name (``last.ckpt``): its own ``global_step``;
   the final model a ``Trainer`` saved beside its ``checkpoint-N`` folders: the
   ``global_step`` of the ``trainer_state.json`` beside it;
6. when no file has a step at all: modification time, steps numbered 0, 1, 2...

Checkpoints are looked for in the folder itself, else in its ``checkpoints/``
subfolder (Lightning without a logger); then the weight files beside that
subfolder (``trainer.save_checkpoint("final.ckpt")``) join the run when their
step is known (patterns 1-5) and are listed in ``ignored`` when it is not.

A folder with a Hugging Face index (``*.safetensors.index.json``,
``*.bin.index.json``) or with shard-named files (``x-00001-of-00003.*``)
holds one sharded model, whole or not, and is never a run of its shards:
a missing shard is that model's error, not a shorter run. Only
``checkpoint-N/`` folders beside it (a ``Trainer`` output folder with the
final model saved next to its checkpoints) make it a run.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, SourceError
from ..sources import checkpoint_candidates, natural_key, resolve_weight_files
from ..sources.files import WEIGHT_SUFFIXES
from ..sources.folder import _INDEX_SUFFIXES

log = logging.getLogger(__name__)

_HF_DIR = re.compile(r"^checkpoint-(\d+)$")
_LIGHTNING = re.compile(r"(?:^|[^a-z0-9])step=(\d+)", re.IGNORECASE)
_STEP_WORD = re.compile(r"(?:^|[^a-z])(?:global_step|step|iteration|iter)[_-]?(\d+)(?!\d)", re.IGNORECASE)
_TRAILING = re.compile(r"[_.-](\d+)$")
_SHARD = re.compile(r"-\d+-of-\d+$")

#: Where a step came from, in the order the patterns are tried. ``global_step``: a ``.ckpt``'s own,
#: or, for a ``Trainer``'s final model, that of the ``trainer_state.json`` beside it.
STEP_SOURCES = ("name", "global_step", "mtime")


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a run: a weight file, or a folder of them (``checkpoint-N``)."""

    step: int
    path: Path
    step_from: str  # one of STEP_SOURCES
    mtime: float

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()

    def weight_files(self) -> list[Path]:
        """The files holding the weights; SourceError when the checkpoint is not (yet) whole."""
        return resolve_weight_files(self.path).files if self.is_folder else [self.path]


@dataclass
class RunListing:
    """What :func:`discover_run` found: checkpoints in step order, and what it left out."""

    folder: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: path -> why it is not part of the run (no step, duplicate step).
    ignored: dict[Path, str] = field(default_factory=dict)

    @property
    def steps(self) -> list[int]:
        return [cp.step for cp in self.checkpoints]


def step_from_name(name: str, *, trailing: bool = True) -> int | None:
    """The step a checkpoint's file or folder name states (patterns 1-4), else None.

    ``trailing=False`` leaves out a bare trailing number (``model_500.pt``), which says "step"
    only among files that all look alike.
    """
    if m := _HF_DIR.match(name):
        return int(m[1])
    stem = _strip_suffix(name)
    if _SHARD.search(stem):
        return None  # one shard of a sharded model, not a checkpoint
    for pattern in (_LIGHTNING, _STEP_WORD, _TRAILING) if trailing else (_LIGHTNING, _STEP_WORD):
        if m := pattern.search(stem):
            return int(m[1])
    return None


def _strip_suffix(name: str) -> str:
    for suffix in WEIGHT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(``checkpoint-N`` folders, weight files) directly in ``folder``."""
    dirs = sorted((p for p in folder.iterdir() if p.is_dir() and _HF_DIR.match(p.name)), key=natural_key)
    return dirs, checkpoint_candidates(folder)


def _is_shard(path: Path) -> bool:
    return bool(_SHARD.search(_strip_suffix(path.name)))


def _sharded_model(folder: Path, files: list[Path]) -> Path | None:
    """The index, or else a shard, showing that ``folder`` holds one sharded model; None if neither."""
    index = next((p for p in sorted(folder.iterdir()) if p.name.endswith(_INDEX_SUFFIXES) and p.is_file()), None)
    return index or next((p for p in files if _is_shard(p)), None)


def _run_root(folder: Path) -> Path | None:
    """The folder that holds the run's checkpoints, judged by names alone; None if not a run.

    Names that state steps anywhere win over several files with none: Lightning's
    ``checkpoints/epoch=..-step=..`` is the run even with two stepless files beside it.
    """
    roots = [root for root in (folder, folder / "checkpoints") if root.is_dir()]
    for by_names in (True, False):
        for root in roots:
            if _holds_run(root, by_names):
                return root
    return None


def _holds_run(root: Path, by_names: bool) -> bool:
    dirs, files = _entries(root)
    if dirs:
        return True
    if _sharded_model(root, files) is not None:
        return False  # one sharded model (whole or not), never a run of its shards
    if by_names:
        named = [p for p in files if step_from_name(p.name) is not None]
        return any(_LIGHTNING.search(p.name) for p in files) or len(named) >= 2
    return len(files) >= 2 and not _is_single_model(root)


def _is_single_model(folder: Path) -> bool:
    try:
        resolve_weight_files(folder)
    except SourceError:
        return False
    return True


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder of several checkpoints rather than one model. Reads names only."""
    path = Path(path)
    return path.is_dir() and _run_root(path) is not None


def discover_run(folder: str | Path) -> RunListing:
    """All checkpoints of the run in ``folder``, in step order (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"not a folder: {folder}")
    root = _run_root(folder)
    if root is None:
        if (sign := _sharded_model(folder, checkpoint_candidates(folder))) is not None:
            try:
                resolve_weight_files(folder)
                whole = ""
            except SourceError as exc:
                whole = f"; and that model is not whole: {exc}"
            raise SourceError(
                f"{folder} is not a run folder: it holds one sharded model ({sign.name}), not a run of checkpoints; "
                f"scan it as a model (weightscope scan without run flags, or Scope(...).scan()){whole}"
            )
        raise SourceError(
            f"{folder} is not a run folder: expected several checkpoints "
            "(checkpoint-N/ folders, epoch=E-step=S.ckpt, step_N.pt or *_N.safetensors files)"
        )
    dirs, files = _entries(root)
    listing = RunListing(folder=root)
    final, final_files = _trainer_final_model(root, dirs, files, listing.ignored)
    stepped, stepless = _read_steps([*dirs, *(p for p in files if p not in final_files)], listing.ignored)
    if final is not None:
        stepped.append(final)
    if root != folder:
        # Beside checkpoints/: what the user saved at the end (trainer.save_checkpoint("final.ckpt")).
        # Lightning's default folder is the working directory, where any file may lie: only a name
        # that says "step" (or a .ckpt's own global_step) makes one a checkpoint (not tokens_50000.pt).
        beside, unknown = _read_steps(checkpoint_candidates(folder), listing.ignored, trailing=False)
        stepped += beside
        for path in unknown:
            _ignore(listing.ignored, path, f"beside {root.name}/, with {_NO_STEP}")
    if stepped:
        for path in stepless:
            _ignore(listing.ignored, path, _NO_STEP)
        listing.checkpoints = _dedupe(stepped, listing.ignored)
        if final is not None and final.path in listing.ignored:  # its step has a checkpoint-N of its own
            # Listed by its files: a sharded final model's path is the run folder, not a file left out.
            why = f"{listing.ignored.pop(final.path)}, which holds the same weights"
            for path in final_files:
                listing.ignored[path] = _final_model_reason(final_files, why)
    else:
        # Nothing names a step: modification time is the only order there is.
        ordered = sorted(stepless, key=lambda p: (_mtime(p), natural_key(p)))
        listing.checkpoints = [Checkpoint(i, p, "mtime", _mtime(p)) for i, p in enumerate(ordered)]
        log.warning("%s: no checkpoint names a step; ordered by modification time, steps are positions", root)
    return listing


_NO_STEP = "no step in its name (rename it step_N.* to include it)"
_FINAL = "the Trainer's final model (Trainer.save_model)"


def _ignore(ignored: dict[Path, str], path: Path, why: str) -> None:
    ignored[path] = why
    log.info("%s: ignored, %s", path, why)


def _read_steps(paths: list[Path], ignored: dict[Path, str],
                trailing: bool = True) -> tuple[list[Checkpoint], list[Path]]:
    """(checkpoints whose step is known, paths whose step is not); shards go to ``ignored``."""
    stepped: list[Checkpoint] = []
    stepless: list[Path] = []
    for path in paths:
        step = step_from_name(path.name, trailing=trailing)
        if step is not None:
            stepped.append(Checkpoint(step, path, "name", _mtime(path)))
        elif path.suffix.lower() == ".ckpt" and (step := _lightning_global_step(path)) is not None:
            stepped.append(Checkpoint(step, path, "global_step", _mtime(path)))
        elif _is_shard(path):
            # Beside checkpoint-N/ folders: the final model's shards, never checkpoints of their own.
            _ignore(ignored, path, "a shard of a sharded model, not a checkpoint")
        else:
            stepless.append(path)
    return stepped, stepless


def _final_model_reason(files: list[Path], why: str) -> str:
    """Why each file of the ``Trainer``'s final model is left out of the run."""
    what = f"a shard of {_FINAL.removeprefix('the ')}" if len(files) > 1 else _FINAL
    return f"{what}, {why}"


def _trainer_final_model(root: Path, dirs: list[Path], files: list[Path],
                         ignored: dict[Path, str]) -> tuple[Checkpoint | None, list[Path]]:
    """The model ``Trainer.save_model()`` wrote beside the ``checkpoint-N/`` folders, and its files.

    Its step is the ``global_step`` of the ``trainer_state.json`` beside it
    (``Trainer.save_state()``). Without one it cannot be placed in the run: its
    files go to ``ignored`` saying so, and the checkpoint is None.
    """
    if not dirs or not files:
        return None, []
    try:
        model = resolve_weight_files(root).files
    except SourceError:
        return None, []  # not one whole model: each file is judged on its own
    if any(step_from_name(p.name) is not None for p in model):
        return None, []
    step, unknown = _trainer_state_step(root)
    if step is not None:
        # A sharded final model is the folder's own model: the run folder stands for it.
        path = model[0] if len(model) == 1 else root
        return Checkpoint(step, path, "global_step", max(_mtime(p) for p in model)), model
    for path in model:
        _ignore(ignored, path, _final_model_reason(model, unknown))
    return None, model


def _trainer_state_step(root: Path) -> tuple[int | None, str]:
    """(``global_step`` of ``root/trainer_state.json``, else None and why the final model's step is unknown)."""
    state = root / "trainer_state.json"
    if not state.is_file():
        return None, ("whose step is unknown without a trainer_state.json beside it (Trainer.save_state() writes "
                      "one); when training ended on a save step it holds the same weights as the last checkpoint-N")
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"whose step is unknown: {state.name} is unreadable ({exc})"
    step = data.get("global_step") if isinstance(data, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return None, f"whose step is unknown: {state.name} has no global_step"
    if best := data.get("best_model_checkpoint"):
        # load_best_model_at_end leaves the best checkpoint's weights in the final model, and
        # trainer_state.json does not say whether it was on.
        return None, (f"which may hold the weights of the best checkpoint ({Path(str(best)).name}, "
                      f"load_best_model_at_end) rather than those of step {step}")
    return step, ""


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _lightning_global_step(path: Path) -> int | None:
    """``global_step`` saved by Lightning in a ``.ckpt``; None for any other file."""
    from ..sources.torch_pickle import load_torch_checkpoint

    try:
        obj = load_torch_checkpoint(path)
    except SourceError as exc:
        log.warning("%s: cannot read its global_step (%s)", path, exc)
        return None
    step = obj.get("global_step") if isinstance(obj, dict) else None
    return int(step) if isinstance(step, int) else None


def _preference(cp: Checkpoint) -> tuple[int, int, float]:
    """Among checkpoints of one step: a step from the name, then safetensors, then the newest."""
    return (cp.step_from == "name", cp.path.suffix.lower() == ".safetensors" or cp.is_folder, cp.mtime)


def _dedupe(checkpoints: list[Checkpoint], ignored: dict[Path, str]) -> list[Checkpoint]:
    """One checkpoint per step (``last.ckpt`` repeats the newest ``epoch=..-step=..``)."""
    by_step: dict[int, Checkpoint] = {}
    for cp in checkpoints:
        kept = by_step.setdefault(cp.step, cp)
        if kept is cp:
            continue
        winner, loser = (cp, kept) if _preference(cp) > _preference(kept) else (kept, cp)
        by_step[cp.step] = winner
        ignored[loser.path] = f"same step {winner.step} as {winner.path.name}"
        log.info("%s: ignored, same step %d as %s", loser.path, winner.step, winner.path.name)
    return [by_step[s] for s in sorted(by_step)]


def select_checkpoints(
    checkpoints: Sequence[Checkpoint],
    *,
    steps: Sequence[int] | None = None,
    every: int | None = None,
    last: int | None = None,
) -> list[Checkpoint]:
    """Pick checkpoints: exact ``steps``, then every ``every``-th (from the first), then the ``last`` few."""
    chosen = list(checkpoints)
    if steps is not None:
        by_step = {cp.step: cp for cp in chosen}
        missing = [s for s in steps if s not in by_step]
        if missing:
            have = ", ".join(map(str, by_step)) or "none"
            raise ConfigError(f"no checkpoint at step {', '.join(map(str, missing))}; steps in this run: {have}")
        chosen = [by_step[s] for s in sorted(set(steps))]
    if every is not None:
        if every < 1:
            raise ConfigError(f"every must be at least 1, got {every}")
        chosen = chosen[::every]
    if last is not None:
        if last < 1:
            raise ConfigError(f"last must be at least 1, got {last}")
        chosen = chosen[-last:]
    return chosen
