"""``weightscope demo``: build a small checkpoint with planted faults and scan it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.scope import Scope
from ..demo import PLANTED, build_demo_checkpoint
from ..sinks.terminal import render_scan_report
from .common import ProgressBar, stderr, stdout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build a small GPT-2-style checkpoint locally and scan it (no download)")
    p.add_argument("--dir", default="weightscope-demo", help="where to write the demo files (default: ./weightscope-demo)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    model = build_demo_checkpoint(root / "model")
    stdout.print(f"Built a GPT-2-style checkpoint in {model} with planted faults:")
    for layer, what in PLANTED.items():
        stdout.print(f"  - {layer}: {what}")
    with Scope(model) as scope, ProgressBar("scanning", quiet=args.quiet) as bar:
        results = scope.scan("all", progress=bar)
    render_scan_report(results, stdout, top=5)
    out = results.save(root / "scan.json")
    stderr.print(f"Full results (strict JSON) written to {out}")
    return 0
