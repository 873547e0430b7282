"""``weightscope compare``: what changed between two checkpoints, and where."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..comparison import DIFF_KEYS, STATS_METRICS, UPDATE_KEYS
from ..comparison.ranking import find_most_changed_layers, lowest_first, score_label
from ..comparison.summary import dtype_changed
from ..sinks.files import check_output_path, is_table_path, write_json, write_table
from ..sinks.terminal import fmt
from .common import ProgressBar, add_engine_flags, positive_int, say_written, stderr, stdout

#: Metrics --rank-by accepts (numeric per-layer metrics).
RANKABLE = sorted(
    {k for k in DIFF_KEYS if k != "identical"}
    | {"norm_change"}
    | {key for spec in STATS_METRICS.values() for key, _, _ in spec}
    | set(UPDATE_KEYS)
)
_NAMES_SHOWN = 20
#: Columns of the table of changes: (metric, header, digits).
_COLUMNS = (("relative_l2_distance", "relative L2", 4), ("cosine_similarity", "cosine", 6),
            ("l2_norm_ratio", "norm ratio", 4), ("update_rank_90", "update rank 90%", 4))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two checkpoints layer by layer",
        description=(
            "Compare two checkpoints tensor by tensor (base vs fine-tune, consecutive checkpoints, "
            "student vs teacher) and rank the layers that changed most. Either model may also be a "
            "scan JSON file written by `weightscope scan --output`."
        ),
    )
    p.add_argument("--model1", required=True, metavar="PATH",
                   help="model 1 (e.g. the base): checkpoint file or folder, Hub id, or scan .json")
    p.add_argument("--model2", required=True, metavar="PATH",
                   help="model 2 (e.g. the fine-tune): checkpoint file or folder, Hub id, or scan .json")
    add_engine_flags(p, default_methods="basic_stats")
    p.add_argument("--top-changes", type=positive_int, default=10, metavar="N", help="rows in the table of changes")
    p.add_argument("--rank-by", default=None, choices=RANKABLE, metavar="METRIC",
                   help="metric to rank layers by, most changed first: ratios by |ln ratio| (0.5 and 2 alike), "
                        "signed diffs by |diff|, cosine_similarity lowest first, the rest largest first "
                        "(default: relative_l2_distance, or norm_change from scan files)")
    p.add_argument("--threshold", type=_fraction, default=0.01, metavar="FRACTION",
                   help="relative change counted as significant: |b-a| > FRACTION*|a| (default: 0.01)")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="write the comparison: .json (strict JSON), .csv or .parquet (one row per layer)")
    p.add_argument("--revision1", default=None, help="Hub revision of model 1")
    p.add_argument("--revision2", default=None, help="Hub revision of model 2")
    p.set_defaults(func=run)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..core.comparator import compare_sources  # torch loads here, not for --help

    if args.output:  # a bad path must fail now, not after the whole comparison
        check_output_path(args.output)
    started = time.perf_counter()
    with ProgressBar("comparing", quiet=args.quiet) as bar:
        comparison = compare_sources(
            args.model1,
            args.model2,
            methods=args.methods,
            parallel=args.parallel,
            num_workers=args.workers,
            device=args.device,
            threshold=args.threshold,
            layers=args.layers,
            exclude=args.exclude,
            include_vectors=args.include_vectors,
            progress=bar,
            revision1=args.revision1,
            revision2=args.revision2,
        )
    elapsed = time.perf_counter() - started
    if args.output:  # first: a report that cannot be drawn (a --rank-by this comparison lacks) loses nothing
        say_written("Comparison", _save(comparison, args.output))
    render_comparison(comparison, stdout, top=args.top_changes, by=args.rank_by)
    if not args.quiet:
        stderr.print(f"Compared in {elapsed:.1f} s")
    return 0


def _save(comparison: dict[str, Any], output: str) -> Path:
    if not is_table_path(output):
        return write_json(output, comparison)
    import pandas as pd  # check_output_path made sure it is installed, before comparing

    rows = [{"layer": layer, "shape_mismatch": False, **metrics}
            for layer, metrics in comparison["layer_comparisons"].items()]
    # Resized layers too (a vocab resize), with their distribution metrics: one row per layer.
    rows += [{"layer": layer, "shape_mismatch": True, **{k: v for k, v in metrics.items() if k != "spectra"}}
             for layer, metrics in comparison.get("shape_mismatches", {}).items()]
    return write_table(output, pd.DataFrame(rows) if rows else pd.DataFrame(columns=["layer"]))


def _names(console: Console, title: str, names: list[str]) -> None:
    if not names:
        return
    shown = ", ".join(names[:_NAMES_SHOWN])
    more = f" ... and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    console.print(f"[yellow]{title} ({len(names)}):[/yellow] {escape(shown)}{more}")


def _counts_line(comparison: dict[str, Any]) -> str:
    """How many layers were compared and how, or why none were."""
    s = comparison["summary"]
    if not (s["compared_layers"] or s["shape_mismatches"] or s["errors"]):
        return _nothing_in_common(comparison)
    counts = f"{s['compared_layers']} layers compared"
    if s["identical_layers"] is not None:
        counts += f": {s['identical_layers']} identical, {s['changed_layers']} changed"
    elif comparison["mode"] == "stats":
        counts += " from saved stats (identical/changed unknown without tensors)"
    counts += _dtype_note(comparison)
    if s["global_relative_l2_distance"] is not None:
        counts += (f"; whole model: relative L2 {fmt(s['global_relative_l2_distance'])}, "
                   f"cosine {fmt(s['global_cosine_similarity'], 6)}")
    return counts


def _dtype_note(comparison: dict[str, Any]) -> str:
    """Layers stored in another dtype: values are compared as float64, so that alone is no change."""
    changes = [f"{m['dtype1']} -> {m['dtype2']}" for m in comparison["layer_comparisons"].values()
               if "error" not in m and dtype_changed(m)]
    if not changes:
        return ""
    kinds = ", ".join(dict.fromkeys(changes))
    by_value = "; identical = same values" if comparison["summary"]["identical_layers"] is not None else ""
    return f" ({len(changes)} stored in another dtype: {kinds}{by_value})"


def _nothing_in_common(comparison: dict[str, Any]) -> str:
    only1, only2 = comparison["only_in_model1"], comparison["only_in_model2"]
    for side, mine in (("model 1", only1), ("model 2", only2)):
        if not mine:
            return (f"[yellow]No layers compared: {side} has no layers to compare "
                    "(check --layers / --exclude, or --include-vectors for 1-D tensors).")
    return (f"[yellow]No layers compared: no layer names in common "
            f"({len(only1)} in model 1, {len(only2)} in model 2).\n"
            "Names pair when equal, or equal without wrapper prefixes (model., module., _orig_mod., ...): "
            "see the names below.")


def render_comparison(comparison: dict[str, Any], console: Console, top: int = 10, by: str | None = None) -> None:
    """Counts, the top changes, shape mismatches and unpaired layers, as rich tables."""
    s = comparison["summary"]
    console.print(
        f"[bold]WeightScope compare[/bold] {escape(str(comparison['model1']))} -> {escape(str(comparison['model2']))} "
        f"({comparison['mode']}; methods: {', '.join(comparison['methods'])})"
    )
    console.print(_counts_line(comparison))

    metric = by or s["score_metric"]
    rows = find_most_changed_layers(comparison, top_k=top, by=by) if comparison["layer_comparisons"] else []
    if rows:
        label = score_label(metric)
        how = " (lowest = most changed)" if lowest_first(metric) else ""
        how += f" (score = {label})" if label != metric else ""
        t = Table(title=f"Top {len(rows)} changes by {metric}{how}", title_justify="left")
        # A |diff| or |ln ratio| score hides the sign: show the value it came from unless a column does.
        columns = list(_COLUMNS)
        if label != metric and metric not in {key for key, _, _ in columns}:
            columns.insert(0, (metric, metric, 4))
        for col in ("layer", "score", *(header for _, header, _ in columns)):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for layer, score, m in rows:
            t.add_row(escape(layer), fmt(score), *(fmt(m.get(key), digits) for key, _, digits in columns))
        console.print(t)

    if comparison["shape_mismatches"]:
        t = Table(title="Shape mismatches (distributions compared)", title_justify="left")
        for col in ("layer", "shape 1", "shape 2", "mean diff", "std diff", "wasserstein"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for layer, m in comparison["shape_mismatches"].items():
            t.add_row(escape(layer), "x".join(map(str, m["shape1"] or [])), "x".join(map(str, m["shape2"] or [])),
                      fmt(m.get("mean_diff")), fmt(m.get("std_diff")), fmt(m.get("wasserstein_distance")))
        console.print(t)

    _names(console, "Only in model 1", comparison["only_in_model1"])
    _names(console, "Only in model 2", comparison["only_in_model2"])
    mapping = comparison["name_mapping"]
    if mapping:
        first = next(iter(mapping.items()))
        console.print(f"{len(mapping)} layer(s) paired after removing wrapper prefixes "
                      f"(e.g. {escape(first[0])} <-> {escape(first[1])})")
    errors = {k: m["error"] for k, m in comparison["layer_comparisons"].items() if "error" in m}
    if errors:
        t = Table(title="[red]Comparison errors", title_justify="left")
        t.add_column("layer")
        t.add_column("error")
        for layer, msg in errors.items():
            t.add_row(escape(layer), escape(str(msg)))
        console.print(t)
