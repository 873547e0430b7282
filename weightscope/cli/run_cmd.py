"""Run-folder mode of ``weightscope scan``: a folder of training checkpoints.

``scan`` hands over here when ``--model`` is a run folder (several
checkpoints: ``checkpoint-N/``, ``epoch=E-step=S.ckpt``, ``step_N.pt``...) or
when a run-only flag is given. Heavy imports wait for :func:`run_folder`, so
building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import ConfigError
from ..sinks.files import check_folder_path, check_location
from .common import positive_int, say_written, stderr, stdout

_RUN_FLAGS = ("steps", "every", "last", "cache", "no_cache", "tensorboard", "wandb_project", "jsonl", "histograms")


def _step_list(text: str) -> list[int]:
    try:
        steps = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps like 500,1000, got {text!r}") from exc
    if not steps:
        raise argparse.ArgumentTypeError("expected at least one step")
    return steps


def add_run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "training runs", "when --model is a folder of checkpoints (see docs/runs.md): scan each, drift, alerts")
    g.add_argument("--steps", type=_step_list, default=None, metavar="S1,S2", help="only these steps")
    g.add_argument("--every", type=positive_int, default=None, metavar="K", help="every K-th checkpoint, from the first")
    g.add_argument("--last", type=positive_int, default=None, metavar="N", help="only the last N checkpoints")
    g.add_argument("--cache", default=None, metavar="DIR",
                   help="keep per-checkpoint results here (default: RUN/.weightscope-cache)")
    g.add_argument("--no-cache", action="store_true", help="scan everything, keep nothing")
    g.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="replay the run into TensorBoard logs in DIR (created if missing)")
    g.add_argument("--wandb-project", default=None, metavar="NAME", help="replay the run into a new W&B run")
    g.add_argument("--wandb-mode", default=None, choices=("online", "offline", "disabled"),
                   help="W&B mode for the replay (default: W&B's own setting)")
    g.add_argument("--jsonl", default=None, metavar="FILE",
                   help="replay as the callbacks' JSONL history, written anew like --output (its folder must exist)")
    g.add_argument("--histograms", action="store_true",
                   help="replay each layer's weight histogram too (TensorBoard, W&B)")


def is_run(args: argparse.Namespace) -> bool:
    """A run-only flag, or a folder that holds several checkpoints rather than one model."""
    if any(getattr(args, flag, None) for flag in _RUN_FLAGS):
        return True
    from ..run.discovery import is_run_folder

    return is_run_folder(args.model)


class RunProgressBar:
    """Checkpoints done / total, and the tensors of the checkpoint being read, on stderr."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Progress | None = None
        self._ckpts: Any = None
        self._tensors: Any = None

    def begin_run(self, checkpoints: int) -> None:
        # Started here, once the run is found: a bar started and stopped empty leaves a blank line
        # above a "not a run folder" error.
        if not self.quiet and self._bar is None:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=stderr)
            self._bar.start()
            self._ckpts = self._bar.add_task("checkpoints", total=checkpoints)
            self._tensors = self._bar.add_task("tensors", total=None)

    def begin_checkpoint(self, checkpoint: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._ckpts, description=f"step {checkpoint.step}")

    def end_checkpoint(self, checkpoint: Any, scanned: bool) -> None:
        if self._bar is not None:
            self._bar.advance(self._ckpts)

    # The engine's Progress protocol: a scan or a drift pass over tensors.
    def start(self, total: int, total_bytes: int) -> None:
        if self._bar is not None:
            self._bar.reset(self._tensors, total=total)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._tensors)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _sinks(args: argparse.Namespace, traj: Any) -> list[Any]:
    sinks: list[Any] = []
    if args.tensorboard:
        from ..sinks.tensorboard import TensorBoardSink

        if any(Path(args.tensorboard).glob("events.out.tfevents.*")):
            stderr.print(f"[yellow]{escape(args.tensorboard)} already holds TensorBoard events; the replay adds "
                         "its own event file, and TensorBoard shows both. Use a new folder for a clean chart.")
        sinks.append(TensorBoardSink(args.tensorboard, histograms=args.histograms))
    if args.wandb_project:
        from ..sinks.wandb import WandbSink

        init: dict[str, Any] = {"project": args.wandb_project, "name": traj.folder.resolve().name,
                                "job_type": "weightscope-replay",
                                "config": {"weightscope": {"run_folder": str(traj.folder), "methods": traj.methods}}}
        if args.wandb_mode:
            init["mode"] = args.wandb_mode
        sinks.append(WandbSink(histograms=args.histograms, **init))
    if args.jsonl:
        from ..sinks.jsonl import JsonlSink

        sinks.append(JsonlSink(args.jsonl, fresh=True))
    return sinks


def run_folder(args: argparse.Namespace) -> int:
    from ..run.report import render_run_report
    from ..run.trajectory import scan_run

    if args.revision is not None:
        raise ConfigError("--revision applies to Hub ids, not to a local run folder")
    if args.no_cache and args.cache:
        raise ConfigError("--cache and --no-cache contradict each other; pass one")
    _check_sink_paths(args)
    started = time.perf_counter()
    bar = RunProgressBar(args.quiet)
    try:
        traj = scan_run(
            args.model, args.methods, parallel=args.parallel, num_workers=args.workers,
            steps=args.steps, every=args.every, last=args.last, layers=args.layers, exclude=args.exclude,
            include_vectors=args.include_vectors, device=args.device,
            cache=False if args.no_cache else (args.cache or True), histograms=args.histograms, progress=bar,
        )
    finally:
        bar.close()
    elapsed = time.perf_counter() - started
    # Every file before the report: a reader that closes stdout early (`| head`) must not cost one.
    # Results first: a sink that fails to open must not cost them.
    if args.output:
        say_written("Results", traj.save(args.output))
    sinks = _sinks(args, traj)
    try:
        traj.replay(*sinks)
    finally:
        for sink in sinks:
            sink.close()
    for what, where in (("TensorBoard", args.tensorboard), ("JSONL history", args.jsonl)):
        if where:
            say_written(what, where)
    render_run_report(traj, stdout, top=args.top_issues)
    if len(traj) and not traj.layers:
        stderr.print(f"[yellow]weightscope: warning: {escape(_nothing_in_run(traj, args))}", soft_wrap=True,
                     highlight=False)
    if not args.quiet:
        stderr.print(f"{len(traj)} checkpoints in {elapsed:.1f} s ({len(traj.scanned)} scanned, "
                     f"{traj.compared} comparisons)")
    return 0


def _check_sink_paths(args: argparse.Namespace) -> None:
    """The replay's files and folders, checked before the run is scanned, as --output is."""
    if args.tensorboard:
        check_folder_path(args.tensorboard, "TensorBoard logs")
    if args.jsonl:  # a file, like --output: its folder must exist
        check_location(Path(args.jsonl))


def _nothing_in_run(traj: Any, args: argparse.Namespace) -> str:
    """Why a run's scans analysed no layer at all, from the last checkpoint's skipped tensors."""
    from .scan_cmd import filters_named, skip_reasons

    reasons = skip_reasons(traj[traj.steps[-1]].skipped)
    if args.layers is not None or args.exclude is not None:
        reasons.append(f"{'the others are' if reasons else 'every tensor is'} filtered out by {filters_named(args)}")
    return (f"nothing analysed in {len(traj)} checkpoint{'s' if len(traj) != 1 else ''}: "
            + ("; ".join(reasons) or "they hold no floating-point matrices"))
