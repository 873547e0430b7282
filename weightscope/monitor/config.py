"""The monitor's arguments, checked once in ``__init__`` so a typo fails before training starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analyzers import resolve_methods
from ..core.device import resolve_device
from ..errors import ConfigError, WeightScopeError
from .alerts import DEFAULT_DEDUP_SNAPSHOTS, DEFAULT_RULES, Rule, resolve_rules
from .distributed import MODES

#: What a snapshot is scanned with unless ``methods=`` says otherwise.
DEFAULT_METHODS: tuple[str, ...] = ("basic_stats", "spectral", "quantization")
#: Always scanned: the NaN/Inf rule and the charts' norms need it, and it costs one pass.
ALWAYS = "basic_stats"
SINK_KINDS = ("tensorboard", "wandb", "jsonl")
#: With ``full_scan_every="auto"``: the share of CPU time the heavy methods may use, averaged
#: over the run, counting the cores training leaves idle (at least one core).
#: 1 %: training that keeps every core busy is slowed by about 1 % by them (each CPU second of
#: analysis then costs it a wall second); with 8 idle cores, 0.08 s of analysis per second.
DEFAULT_ANALYSIS_BUDGET = 0.01


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _regex(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a regular expression string or None, got {type(value).__name__}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"invalid {name} regex {value!r}: {exc}") from exc
    return value


def parse_sink(spec: Any) -> Any:
    """``"tensorboard[:DIR]"``, ``"wandb"``, ``"jsonl[:PATH]"`` -> ``(kind, arg)``; objects with ``write`` pass."""
    if hasattr(spec, "write"):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a sink is a string like 'tensorboard:runs/x' or an object with write(); got {spec!r}")
    kind, _, arg = spec.partition(":")
    if kind not in SINK_KINDS:
        raise ConfigError(f"unknown sink {spec!r}; use one of {', '.join(k + '[:...]' for k in SINK_KINDS)}")
    if kind == "wandb" and arg:
        raise ConfigError("the wandb sink takes no argument: it logs to the active wandb.run or starts one")
    return (kind, arg or None)


@dataclass
class MonitorConfig:
    """Validated settings shared by :class:`WeightMonitor` and the framework callbacks."""

    every_n_steps: int = 100
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    layers: str | None = None
    exclude: str | None = None
    rules: list[Rule] = field(default_factory=lambda: resolve_rules(None))
    log_histograms: bool = False
    background: bool = True
    max_pending: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_workers: int = 1
    distributed: str = "rank0"
    stop_on: frozenset[str] = frozenset()
    on_alert: Callable[[Any], None] | None = None
    full_scan_every: int | str = "auto"
    analysis_budget: float = DEFAULT_ANALYSIS_BUDGET
    alert_window: int = DEFAULT_DEDUP_SNAPSHOTS
    histogram_bins: int = 64
    save_baseline: bool = True

    @classmethod
    def build(
        cls,
        every_n_steps: int = 100,
        methods: str | Iterable[str] | None = None,
        *,
        layers: str | None = None,
        exclude: str | None = None,
        alerts: Any = None,
        log_histograms: bool = False,
        background: bool = True,
        max_pending: int = 1,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        distributed: str = "rank0",
        stop_on: str | Iterable[str] = (),
        on_alert: Callable[[Any], None] | None = None,
        full_scan_every: int | str = "auto",
        analysis_budget: float = DEFAULT_ANALYSIS_BUDGET,
        alert_window: int = DEFAULT_DEDUP_SNAPSHOTS,
        histogram_bins: int = 64,
        save_baseline: bool = True,
    ) -> MonitorConfig:
        try:
            chosen = resolve_methods(methods, default=DEFAULT_METHODS)
        except WeightScopeError as exc:
            raise ConfigError(str(exc)) from exc
        if ALWAYS not in chosen:
            chosen = [ALWAYS, *chosen]
        try:
            dev = resolve_device("cpu" if device is None else device)
        except WeightScopeError as exc:
            raise ConfigError(str(exc)) from exc
        if distributed not in MODES:
            raise ConfigError(f"distributed must be one of {', '.join(map(repr, MODES))}, got {distributed!r}")
        stops = frozenset([stop_on] if isinstance(stop_on, str) else stop_on)
        unknown = sorted(stops - set(DEFAULT_RULES))
        if unknown:
            raise ConfigError(f"stop_on names unknown rules {unknown}; valid: {', '.join(DEFAULT_RULES)}")
        if on_alert is not None and not callable(on_alert):
            raise ConfigError(f"on_alert must be a function taking an Alert, got {type(on_alert).__name__}")
        if full_scan_every != "auto":
            _positive_int("full_scan_every", full_scan_every)
        if isinstance(analysis_budget, bool) or not isinstance(analysis_budget, (int, float)) \
                or not 0 < analysis_budget <= 1:
            raise ConfigError(f"analysis_budget must be a share of the CPU time > 0 (0.01 = 1 %), got {analysis_budget!r}")
        for name, value in (("log_histograms", log_histograms), ("background", background),
                            ("save_baseline", save_baseline)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False, got {value!r}")
        return cls(
            every_n_steps=_positive_int("every_n_steps", every_n_steps),
            methods=chosen,
            layers=_regex("layers", layers),
            exclude=_regex("exclude", exclude),
            rules=resolve_rules(alerts),
            log_histograms=log_histograms,
            background=background,
            max_pending=_positive_int("max_pending", max_pending),
            device=dev,
            num_workers=1 if num_workers is None else _positive_int("num_workers", num_workers),
            distributed=distributed,
            stop_on=stops,
            on_alert=on_alert,
            full_scan_every=full_scan_every,
            analysis_budget=float(analysis_budget),
            alert_window=_positive_int("alert_window", alert_window),
            histogram_bins=_positive_int("histogram_bins", histogram_bins, 2),
            save_baseline=save_baseline,
        )

    def methods_for(self, full: bool) -> list[str]:
        """All ``methods`` on a full snapshot; ``basic_stats`` alone (drift is always computed) otherwise."""
        return list(self.methods) if full else [ALWAYS]

    def alert_settings(self) -> dict[str, Any]:
        """The rules as an ``alerts=`` dict that rebuilds them exactly (switched-off rules as False)."""
        on = {r.name: {"level": r.level, **{k: list(v) if isinstance(v, tuple) else v for k, v in r.params.items()}}
              for r in self.rules}
        return {name: on.get(name, False) for name in DEFAULT_RULES}

    def settings(self) -> dict[str, Any]:
        """The JSON-able settings (for logs, HF's callback state and the JSONL header)."""
        return {
            "every_n_steps": self.every_n_steps,
            "methods": self.methods,
            "layers": self.layers,
            "exclude": self.exclude,
            "alerts": self.alert_settings(),
            "log_histograms": self.log_histograms,
            "background": self.background,
            "max_pending": self.max_pending,
            "device": str(self.device),
            "num_workers": self.num_workers,
            "distributed": self.distributed,
            "stop_on": sorted(self.stop_on),
            "full_scan_every": self.full_scan_every,
            "analysis_budget": self.analysis_budget,
            "alert_window": self.alert_window,
            "histogram_bins": self.histogram_bins,
            "save_baseline": self.save_baseline,
        }
