"""``weightscope demo``: the whole product on a small model, locally, with no download.

1. Build a GPT-2-style checkpoint with planted faults and scan it.
2. Train a small GPT-2-style model with ``WeightScopeCallback`` (TensorBoard and
   an offline W&B run), with one fault planted mid-training that raises an alert.
3. Compare the first and last checkpoints of that training.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..core.comparator import compare_sources
from ..core.scope import Scope
from ..demo import PLANTED, build_demo_checkpoint
from ..sinks.files import check_folder_path, write_json
from ..sinks.terminal import render_scan_report
from .common import ProgressBar, positive_int, say_written, stderr, stdout
from .compare_cmd import render_comparison


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="scan, train-with-monitoring and compare a small GPT-2-style model (no download)")
    p.add_argument("--dir", default="weightscope-demo", help="where to write the demo files (default: ./weightscope-demo)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (default: 300)")
    p.add_argument("--no-train", action="store_true", help="only build and scan the faulty checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


class StepProgress:
    """Training steps done / total on stderr: a live bar on a terminal, else a plain line every tenth.

    Off a terminal (a log file, CI) rich draws a bar only once, at the end: the
    plain lines show a 2-minute training is moving. ``print`` puts the demo's
    own lines above the live bar rather than through it.
    """

    def __init__(self, description: str, quiet: bool = False) -> None:
        self.description = description
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task: Any = None
        self._said = 0

    def update(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if not stderr.is_terminal:
            if done >= total or done - self._said >= max(1, total // 10):
                stderr.print(f"{self.description}: step {done}/{total}", markup=False, highlight=False)
                self._said = done
            return
        if self._bar is None:  # started on the first step, after the trainer's own start-up lines
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("steps"), TimeElapsedColumn(), TimeRemainingColumn(), console=stderr)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=total)
        self._bar.update(self._task, completed=done)
        if done >= total:
            self.close()

    def print(self, message: str) -> None:
        (self._bar.console if self._bar is not None else stdout).print(message, markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run(args: argparse.Namespace) -> int:
    root = check_folder_path(args.dir, "the demo's files")  # now, not after the first section
    _scan_faulty_checkpoint(root, args.quiet)
    if args.no_train:
        return 0
    try:
        import lightning  # noqa: F401
    except ImportError:
        stderr.print(escape("Skipping the training part: it needs Lightning (pip install 'weightscope[all]')."))
        return 0
    from ..demo_training import train_demo

    # The demo's W&B run is offline and quiet unless the user asked otherwise.
    for key, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        os.environ.setdefault(key, value)

    stdout.rule("2. Training with WeightScopeCallback")
    with StepProgress("training", quiet=args.quiet) as bar:
        run_info = train_demo(root / "training", steps=args.steps, console=bar, on_step=bar.update)
    for alert in run_info["alerts"]:
        stdout.print(f"  [bold red]{alert['level']}[/] step {alert['step']}: {escape(alert['message'])}")
    fault = run_info["fault"]
    # The LightningModule wraps the model, so logged layer names carry its attribute prefix.
    caught = [a for a in run_info["alerts"] if (a.get("layer") or "").endswith(fault["layer"])]
    stdout.print(f"Planted fault: {escape(fault['layer'])} x{fault['scale']:g} at step {fault['step']}: "
                 + (f"[green]caught at step {caught[0]['step']}" if caught else "[red]not caught"))

    stdout.rule("3. What training changed: first vs last checkpoint")
    with ProgressBar("comparing", quiet=args.quiet) as bar:
        comparison = compare_sources(run_info["first_checkpoint"], run_info["last_checkpoint"],
                                     methods=["basic_stats", "spectral"], progress=bar)
    say_written("Comparison", write_json(root / "comparison.json", comparison))
    stderr.print(f"History (JSONL) in {escape(str(run_info['jsonl']))}", soft_wrap=True)
    if run_info.get("wandb_dir"):
        wandb_dir = escape(str(run_info["wandb_dir"]))
        stderr.print(f"Offline W&B run in {wandb_dir} (upload with: wandb sync {wandb_dir})", soft_wrap=True)
    render_comparison(comparison, stdout, top=5)
    if run_info.get("tensorboard_dir"):
        stdout.print(f"\nLook at it: [bold]tensorboard --logdir {escape(str(run_info['tensorboard_dir']))}",
                     soft_wrap=True)
    return 0


def _scan_faulty_checkpoint(root: Path, quiet: bool) -> None:
    stdout.rule("1. Scanning a checkpoint with planted faults")
    model = build_demo_checkpoint(root / "model")
    stdout.print(f"Built a GPT-2-style checkpoint in {escape(str(model))} with planted faults:", soft_wrap=True)
    for layer, what in PLANTED.items():
        stdout.print(f"  - {escape(layer)}: {escape(what)}")
    with Scope(model) as scope, ProgressBar("scanning", quiet=quiet) as bar:
        results = scope.scan("all", progress=bar)
    say_written("Full results (strict JSON)", results.save(root / "scan.json"))
    render_scan_report(results, stdout, top=5)
