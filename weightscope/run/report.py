"""Terminal report of a run: what drifted most, the alerts in step order, per-layer trends."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..sinks.terminal import fmt, top_layers
from .trajectory import Trajectory

BLOCKS = "▁▂▃▄▅▆▇█"
MISSING = "·"


def sparkline(values: Sequence[float | None], *, log: bool = False) -> str:
    """One character per value, scaled between the series' own min and max.

    ``log`` scales by log10 (condition numbers span decades). Missing values
    show as ``·``, NaN as ``?`` and infinities as ``!``, so a blow-up is
    visible rather than flattening everything else.
    """

    def scaled(v: float | None) -> float | None:
        if v is None or not math.isfinite(v) or (log and v <= 0):
            return None
        return math.log10(v) if log else v

    points = [scaled(v) for v in values]
    finite = [p for p in points if p is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    out = []
    for v, p in zip(values, points):
        if p is not None:
            idx = (len(BLOCKS) - 1) // 2 if hi == lo else round((p - lo) / (hi - lo) * (len(BLOCKS) - 1))
            out.append(BLOCKS[idx])
        elif v is None:
            out.append(MISSING)
        else:
            out.append("?" if math.isnan(v) else "!")
    return "".join(out)


def _first_last(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{fmt(known[0])} → {fmt(known[-1])}" if known else "-"


def render_run_report(traj: Trajectory, console: Console, top: int = 10) -> None:
    """Paths, layer names and messages are escaped: rich would take ``[v2]`` in them for markup."""
    steps = traj.steps
    span = f"steps {steps[0]}..{steps[-1]}" if steps else "no steps"
    console.print(
        f"[bold]WeightScope run[/bold] {escape(str(traj.folder))}: {len(steps)} checkpoints ({span}), "
        f"methods: {', '.join(traj.methods)}; scanned {len(traj.scanned)}, "
        f"{len(steps) - len(traj.scanned)} from cache"
    )
    for path, why in traj.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {escape(path)}: {escape(why)}")
    _ignored_lines(traj, console)
    if not steps:
        return
    _drift_table(traj, console, top)
    _alerts_table(traj, console, top)
    _trends_table(traj, console, top)


def _ignored_lines(traj: Trajectory, console: Console) -> None:
    """What discovery left out, one line per reason: else a final model or a stray file goes unseen."""
    by_reason: dict[str, list[str]] = {}
    for path, why in traj.ignored.items():
        by_reason.setdefault(why, []).append(_relative(path, traj.folder))
    for why, paths in by_reason.items():
        console.print(f"[dim]ignored[/dim] {escape(', '.join(paths))}: {escape(why)}")


def _relative(path: str, folder: Path) -> str:
    try:
        return str(Path(path).relative_to(folder))
    except ValueError:
        return path


def _drift_table(traj: Trajectory, console: Console, top: int) -> None:
    if len(traj) < 2:
        console.print("One checkpoint: no drift to show.")
        return
    t = Table(title=f"Top {top} layers by drift, step {traj.steps[0]} → {traj.steps[-1]}", title_justify="left")
    for col in ("layer", "relative L2", "cosine", "norm ratio", "drift per step"):
        t.add_column(col, justify="left" if col in ("layer", "drift per step") else "right")
    for layer, score, metrics in traj.most_drifting_layers(top):
        t.add_row(escape(layer), fmt(score), fmt(metrics.get("cosine_similarity")), fmt(metrics.get("l2_norm_ratio")),
                  sparkline(traj.drift_series(layer)[1:]))
    console.print(t)


def _alerts_table(traj: Trajectory, console: Console, top: int) -> None:
    alerts = traj.alerts
    if not alerts:
        console.print("[green]No alerts.")
        return
    limit = max(top * 5, 20)
    t = Table(title=f"Alerts in step order ({len(alerts)})", title_justify="left")
    for col in ("step", "level", "rule", "layer", "message"):
        t.add_column(col, justify="right" if col == "step" else "left")
    for a in alerts[:limit]:
        colour = "red" if a.level == "ERROR" else "yellow" if a.level == "WARN" else "default"
        t.add_row(str(a.step), f"[{colour}]{a.level}", escape(a.rule), escape(a.layer or "-"), escape(a.message))
    console.print(t)
    if len(alerts) > limit:
        console.print(f"... and {len(alerts) - limit} more (see --output)")


def _trends_table(traj: Trajectory, console: Console, top: int) -> None:
    last = traj[traj.steps[-1]]
    spectral = "spectral" in traj.methods
    if spectral:
        ranked = [layer for layer, _ in top_layers(last, lambda m: (m.get("spectral") or {}).get("condition_number"),
                                                    len(last))]
        title = f"Trends of the top {top} layers by condition number"
    else:
        ranked = [layer for layer, _, _ in traj.most_drifting_layers(None)] or list(last)
        title = f"Trends of the top {top} layers by drift"
    t = Table(title=title, title_justify="left")
    t.add_column("layer")
    if spectral:
        t.add_column("condition number")
        t.add_column("first → last", justify="right")
    t.add_column("L2 norm")
    t.add_column("first → last", justify="right")
    for layer in ranked[:top]:
        row = [escape(layer)]
        if spectral:
            cond = traj.series(layer, "spectral", "condition_number")
            row += [sparkline(cond, log=True), _first_last(cond)]
        norm = traj.series(layer, "basic_stats", "l2_norm")
        row += [sparkline(norm), _first_last(norm)]
        t.add_row(*row)
    console.print(t)

