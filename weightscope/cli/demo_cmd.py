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

from ..core.comparator import compare_sources
from ..core.scope import Scope
from ..demo import PLANTED, build_demo_checkpoint
from ..sinks.files import write_json
from ..sinks.terminal import render_scan_report
from .common import ProgressBar, positive_int, stderr, stdout
from .compare_cmd import render_comparison


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="scan, train-with-monitoring and compare a small GPT-2-style model (no download)")
    p.add_argument("--dir", default="weightscope-demo", help="where to write the demo files (default: ./weightscope-demo)")
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (default: 300)")
    p.add_argument("--no-train", action="store_true", help="only build and scan the faulty checkpoint")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    _scan_faulty_checkpoint(root, args.quiet)
    if args.no_train:
        return 0
    try:
        import lightning  # noqa: F401
    except ImportError:
        stderr.print("Skipping the training part: it needs Lightning (pip install 'weightscope[all]').")
        return 0
    from ..demo_training import train_demo

    # The demo's W&B run is offline and quiet unless the user asked otherwise.
    for key, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_CONSOLE", "off")):
        os.environ.setdefault(key, value)

    stdout.rule("2. Training with WeightScopeCallback")
    run_info = train_demo(root / "training", steps=args.steps, console=stdout)
    for alert in run_info["alerts"]:
        stdout.print(f"  [bold red]{alert['level']}[/] step {alert['step']}: {alert['message']}")
    fault = run_info["fault"]
    # The LightningModule wraps the model, so logged layer names carry its attribute prefix.
    caught = [a for a in run_info["alerts"] if (a.get("layer") or "").endswith(fault["layer"])]
    stdout.print(f"Planted fault: {fault['layer']} x{fault['scale']:g} at step {fault['step']}: "
                 + (f"[green]caught at step {caught[0]['step']}" if caught else "[red]not caught"))

    stdout.rule("3. What training changed: first vs last checkpoint")
    with ProgressBar("comparing", quiet=args.quiet) as bar:
        comparison = compare_sources(run_info["first_checkpoint"], run_info["last_checkpoint"],
                                     methods=["basic_stats", "spectral"], progress=bar)
    render_comparison(comparison, stdout, top=5)
    out = write_json(root / "comparison.json", comparison)
    stderr.print(f"Comparison written to {out}; history (JSONL) in {run_info['jsonl']}")
    if run_info.get("wandb_dir"):
        stderr.print(f"Offline W&B run in {run_info['wandb_dir']} (upload with: wandb sync {run_info['wandb_dir']})")
    if run_info.get("tensorboard_dir"):
        stdout.print(f"\nLook at it: [bold]tensorboard --logdir {run_info['tensorboard_dir']}")
    return 0


def _scan_faulty_checkpoint(root: Path, quiet: bool) -> None:
    stdout.rule("1. Scanning a checkpoint with planted faults")
    model = build_demo_checkpoint(root / "model")
    stdout.print(f"Built a GPT-2-style checkpoint in {model} with planted faults:")
    for layer, what in PLANTED.items():
        stdout.print(f"  - {layer}: {what}")
    with Scope(model) as scope, ProgressBar("scanning", quiet=quiet) as bar:
        results = scope.scan("all", progress=bar)
    render_scan_report(results, stdout, top=5)
    out = results.save(root / "scan.json")
    stderr.print(f"Full results (strict JSON) written to {out}")
