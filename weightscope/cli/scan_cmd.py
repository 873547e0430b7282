"""``weightscope scan``: analyse one checkpoint and print what to look at."""

from __future__ import annotations

import argparse
import importlib
import time

from ..core.scope import Scope
from ..sinks.terminal import render_scan_report
from .common import ProgressBar, add_engine_flags, positive_int, stderr, stdout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scan",
        help="analyse one checkpoint",
        description="Analyse every weight matrix of a checkpoint: stats, spectra, quantization, sparsity.",
    )
    p.add_argument("--model", "-m", required=True, metavar="PATH",
                   help="HF folder, .safetensors, .bin/.pt/.pth, Lightning .ckpt, or a Hub id")
    add_engine_flags(p)
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="write results: .json (strict JSON), .csv or .parquet (one row per layer)")
    p.add_argument("--top-issues", type=positive_int, default=10, metavar="N", help="rows per report table")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    run_flags = _run_cmd()
    if run_flags:
        run_flags.add_run_flags(p)
    p.set_defaults(func=run)


def _run_cmd():
    """The run-folder mode (a folder of training checkpoints), when it is installed."""
    try:
        return importlib.import_module(".run_cmd", __package__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.run_cmd":
            raise
        return None


def run(args: argparse.Namespace) -> int:
    run_mode = _run_cmd()
    if run_mode and run_mode.is_run(args):
        return run_mode.run_folder(args)
    started = time.perf_counter()
    with Scope(args.model, device=args.device, revision=args.revision) as scope, \
            ProgressBar("scanning", quiet=args.quiet) as bar:
        results = scope.scan(
            args.methods,
            parallel=args.parallel,
            num_workers=args.workers,
            layers=args.layers,
            exclude=args.exclude,
            include_vectors=args.include_vectors,
            progress=bar,
        )
    elapsed = time.perf_counter() - started
    render_scan_report(results, stdout, top=args.top_issues)
    if args.output:
        path = results.save(args.output)
        stderr.print(f"Results written to {path}")
    if not args.quiet:
        stderr.print(f"Scanned {len(results)} layers in {elapsed:.1f} s")
    return 0
