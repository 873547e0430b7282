"""Terminal report of a scan: the layers a user should look at first."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.results import ScanResults


def fmt(value: Any, digits: int = 4) -> str:
    """Compact number formatting for tables: None -> '-', large/small -> scientific."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def _sort_key(value: Any) -> float:
    """Sort numbers descending with inf first and None/NaN last."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.inf
    return -float(value)


def top_layers(results: ScanResults, getter: Callable[[dict[str, Any]], Any], n: int) -> list[tuple[str, Any]]:
    rows = [(layer, getter(methods)) for layer, methods in results.items()]
    rows = [(layer, v) for layer, v in rows if isinstance(v, (int, float)) and not isinstance(v, bool)]
    rows.sort(key=lambda r: _sort_key(r[1]))
    return rows[:n]


def _get(method: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda methods: (methods.get(method) or {}).get(key)


def _dead(methods: dict[str, Any]) -> Any:
    sp = methods.get("sparsity") or {}
    if "dead_rows" not in sp:
        return None
    return (sp.get("dead_rows") or 0) + (sp.get("dead_columns") or 0)


def _neg_fitted_alpha(methods: dict[str, Any]) -> float | None:
    """-alpha (lowest alpha first), None without a fitted one: a NaN alpha (fewer than 10 nonzero
    eigenvalues, e.g. every LoRA factor; NaN weights, listed above) has no tail to rank."""
    alpha = (methods.get("esd") or {}).get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or math.isnan(alpha):
        return None
    return -alpha


def _nonzero_condition(methods: dict[str, Any]) -> float | None:
    """The condition number of a matrix that is not all zeros: an all-zero one (a LoRA B at init) is
    singular by definition, inf, and would crowd out the ill-conditioned matrices worth a look."""
    sp = methods.get("spectral") or {}
    return None if sp.get("max_singular_value") == 0 else _get("spectral", "condition_number")(methods)


def render_scan_report(results: ScanResults, console: Console, top: int = 10) -> None:
    """NaN/Inf layers first, then top-N tables per available method, then errors.

    Names and messages are escaped: rich would take ``[red]`` in a path or a tensor name for markup.
    """
    console.print(
        f"[bold]WeightScope scan[/bold] of {escape(str(results.source))}: {len(results)} layers, "
        f"methods: {', '.join(results.methods)}"
        + (f", {len(results.aliases)} tied alias(es)" if results.aliases else "")
    )
    bad = [
        (layer, m["basic_stats"]) for layer, m in results.items()
        if (m.get("basic_stats") or {}).get("nan_count") or (m.get("basic_stats") or {}).get("inf_count")
    ]
    if bad:
        t = Table(title="[red]Layers with NaN / Inf weights", title_justify="left")
        for col in ("layer", "nan_count", "inf_count", "numel"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for layer, bs in bad:
            t.add_row(escape(layer), fmt(bs.get("nan_count")), fmt(bs.get("inf_count")), fmt(bs.get("numel")))
        console.print(t)
    elif "basic_stats" in results.methods:
        console.print("[green]No NaN or Inf weights.")

    if "spectral" in results.methods:
        t = Table(title=f"Top {top} by condition number", title_justify="left")
        for col in ("layer", "condition_number", "stable_rank", "effective_rank", "rank"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        for layer, cond in top_layers(results, _nonzero_condition, top):
            sp = results[layer]["spectral"]
            t.add_row(escape(layer), fmt(cond), fmt(sp.get("stable_rank")), fmt(sp.get("effective_rank")),
                      f"{fmt(sp.get('numerical_rank'))}/{fmt(sp.get('total_rank'))}")
        console.print(t)
        zero = [layer for layer, m in results.items() if (m.get("spectral") or {}).get("max_singular_value") == 0]
        if zero:
            more = f" ... and {len(zero) - top} more" if len(zero) > top else ""
            console.print(f"{len(zero)} all-zero matrices (condition number inf; a LoRA B at init, a pruned "
                          f"layer): {escape(', '.join(zero[:top]))}{more}")

    if "esd" in results.methods:
        t = Table(title=f"Top {top} by heavy-tail alpha (alpha < 2: over-trained / heavy tails)", title_justify="left")
        for col in ("layer", "alpha", "alpha_weighted", "ks_distance"):
            t.add_column(col, justify="left" if col == "layer" else "right")
        rows = top_layers(results, _neg_fitted_alpha, top)
        for layer, _ in rows:
            e = results[layer]["esd"]
            t.add_row(escape(layer), fmt(e.get("alpha")), fmt(e.get("alpha_weighted")), fmt(e.get("ks_distance")))
        console.print(t)

    if "quantization" in results.methods:
        t = Table(title=f"Top {top} by extreme-outlier % (quantization risk)", title_justify="left")
        for col in ("layer", "extreme_outlier_%", "kurtosis", "sqnr_db int8", "per-channel", "int4 g128",
                    "recommendation"):
            t.add_column(col, justify="left" if col in ("layer", "recommendation") else "right")
        for layer, pct in top_layers(results, _get("quantization", "extreme_outlier_percentage"), top):
            q = results[layer]["quantization"]
            rec = q.get("recommendation") or "-"
            colour = {"int8": "green", "keep_fp16": "yellow"}.get(rec, "red")
            t.add_row(escape(layer), fmt(pct), fmt(q.get("kurtosis")), fmt(q.get("sqnr_db")),
                      fmt(q.get("sqnr_db_per_channel")), fmt(q.get("sqnr_db_int4_g128")), f"[{colour}]{rec}")
        console.print(t)
        recs: dict[str, int] = {}
        for m in results.values():
            rec = (m.get("quantization") or {}).get("recommendation")
            if rec:
                recs[rec] = recs.get(rec, 0) + 1
        if recs:
            console.print("Recommendations: " + ", ".join(f"{k}: {v}" for k, v in sorted(recs.items())))

    if "sparsity" in results.methods:
        rows = [r for r in top_layers(results, _dead, top) if r[1]]
        if rows:
            t = Table(title=f"Top {top} by dead rows / columns (all |w| <= 1e-6)", title_justify="left")
            for col in ("layer", "dead_rows", "dead_columns", "zeros_%"):
                t.add_column(col, justify="left" if col == "layer" else "right")
            for layer, _ in rows:
                sp = results[layer]["sparsity"]
                t.add_row(escape(layer), fmt(sp.get("dead_rows")), fmt(sp.get("dead_columns")),
                          fmt((sp.get("sparsity_levels") or {}).get("0")))
            console.print(t)
        else:
            console.print("[green]No dead rows or columns.")

    errors = results.errors()
    if errors:
        t = Table(title="[red]Analysis errors", title_justify="left")
        t.add_column("layer")
        t.add_column("method")
        t.add_column("error")
        for layer, per in errors.items():
            for m, msg in per.items():
                t.add_row(escape(layer), m, escape(msg))
        console.print(t)
