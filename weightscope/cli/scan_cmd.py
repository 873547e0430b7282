"""``weightscope scan``: analyse one checkpoint and print what to look at."""

from __future__ import annotations

import argparse
import importlib
import time

from rich.markup import escape

from ..core.results import ScanResults
from ..core.scope import Scope
from ..sinks.files import check_output_path
from ..sinks.terminal import render_scan_report
from .common import ProgressBar, add_engine_flags, positive_int, say_written, stderr, stdout


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
    if args.output:  # a bad path must fail now, not after the whole scan
        check_output_path(args.output)
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
        # Empty tables alone would read as a clean bill of health: say why (the exit code stays 0).
        # Tensors the source itself left out (an unsupported dtype) are in `skipped` but not in refs().
        names = {ref.name for ref in scope.source.refs()} | set(results.skipped)
        empty = why_nothing_analysed(results, len(names), args) if not results else None
    elapsed = time.perf_counter() - started
    # The file first: a reader that closes stdout early (`| head`) must not cost it.
    if args.output:
        say_written("Results", results.save(args.output))
    render_scan_report(results, stdout, top=args.top_issues)
    if empty:
        stderr.print(f"[yellow]weightscope: warning: {escape(empty)}", soft_wrap=True, highlight=False)
    if not args.quiet:
        stderr.print(f"Scanned {len(results)} layers in {elapsed:.1f} s")
    return 0


def why_nothing_analysed(results: ScanResults, total: int, args: argparse.Namespace) -> str:
    """One line on why a scan of ``total`` tensors analysed none, with what to do about it."""
    if total == 0:
        return "nothing analysed: the checkpoint holds no tensors"
    reasons = skip_reasons(results.skipped)
    # The layer regexes run before any other check, so what they drop is not in `skipped`.
    filtered = total - len(results.skipped)
    if filtered:
        reasons.append(f"{_are(filtered)} filtered out by {filters_named(args)}")
    return f"nothing analysed: of {total} tensor{'s' if total != 1 else ''}, " + "; ".join(reasons)


def skip_reasons(skipped: dict[str, str]) -> list[str]:
    vectors = sum(reason.startswith("vector") for reason in skipped.values())
    non_float = sum(reason.startswith("non-floating") for reason in skipped.values())
    other = len(skipped) - vectors - non_float
    reasons = []
    if vectors:
        reasons.append(f"{_are(vectors)} 1-D (biases, norms): add --include-vectors for their basic_stats")
    if non_float:
        reasons.append(f"{_are(non_float)} not floating point (integer/bool tensors are never analysed)")
    if other:
        reasons.append(f"{_are(other)} skipped for other reasons (see 'skipped' in the --output file)")
    return reasons


def _are(n: int) -> str:
    return f"{n} is" if n == 1 else f"{n} are"


def filters_named(args: argparse.Namespace) -> str:
    named = [f"{flag} {pattern!r}" for flag, pattern in (("--layers", args.layers), ("--exclude", args.exclude))
             if pattern is not None]
    return " and ".join(named) or "the layer filters"
