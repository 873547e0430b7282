"""The monitor's arguments, checked once in ``__init__`` so a typo fails before training starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analyzers import resolve_methods
from ..checks import positive_int, regex
from ..core.device import resolve_device
from ..errors import ConfigError, WeightScopeError
from .alerts import DEFAULT_DEDUP_SNAPSHOTS, DEFAULT_RULES, Rule, resolve_rules
from .distributed import MODES
from .worker import PRIORITIES

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


#: The sink strings :func:`parse_sink` accepts, as the error messages show them.
SINK_FORMS = "'tensorboard[:DIR]', 'wandb' or 'jsonl[:PATH]'"


def parse_sink(spec: Any) -> Any:
    """``"tensorboard[:DIR]"``, ``"wandb"``, ``"jsonl[:PATH]"`` -> ``(kind, arg)``; objects with ``write`` pass."""
    if hasattr(spec, "write"):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a sink is one of {SINK_FORMS} or an object with write(record); got {spec!r}")
    kind, _, arg = spec.partition(":")
    if kind not in SINK_KINDS:
        raise ConfigError(f"unknown sink {spec!r}; use {SINK_FORMS}, or an object with write(record)")
    if kind == "wandb" and arg:
        raise ConfigError(f"the wandb sink takes no argument, got {spec!r}: use 'wandb' (it logs to the active "
                          "wandb.run or starts one)")
    return (kind, arg or None)


def sink_spec(parsed: Any) -> str | None:
    """The sink string a :func:`parse_sink` result came from; None for sink objects."""
    if not isinstance(parsed, tuple):
        return None
    kind, arg = parsed
    return kind if arg is None else f"{kind}:{arg}"


def _stop_on(stop_on: Any, rules: list[Rule]) -> frozenset[str]:
    """``stop_on`` as a set of rule names, each known and switched on by ``alerts=``."""
    if stop_on is None:
        return frozenset()
    if isinstance(stop_on, str):
        stop_on = [stop_on]
    names = list(stop_on) if isinstance(stop_on, Iterable) else None
    if names is None or not all(isinstance(x, str) for x in names):
        raise ConfigError(f"stop_on must be a rule name or a list of rule names, got {stop_on!r}")
    stops = frozenset(names)
    unknown = sorted(stops - set(DEFAULT_RULES))
    if unknown:
        raise ConfigError(f"stop_on names unknown rules {unknown}; valid: {', '.join(DEFAULT_RULES)}")
    off = sorted(stops - {r.name for r in rules})
    if off:
        names = ", ".join(map(repr, off))
        raise ConfigError(f"stop_on names {names}, switched off by alerts=, so it could never stop training; "
                          f"switch {'it' if len(off) == 1 else 'them'} on in alerts= or drop "
                          f"{'it' if len(off) == 1 else 'them'} from stop_on")
    return stops


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
    #: None: one on the analysis thread, every core for the analyses done while training waits anyway.
    num_workers: int | None = None
    distributed: str = "rank0"
    stop_on: frozenset[str] = frozenset()
    on_alert: Callable[[Any], None] | None = None
    full_scan_every: int | str = "auto"
    analysis_budget: float = DEFAULT_ANALYSIS_BUDGET
    alert_window: int = DEFAULT_DEDUP_SNAPSHOTS
    histogram_bins: int = 64
    save_baseline: bool = True
    analysis_threads: int = 1
    priority: str = "low"
    #: Parsed sink specs given to the constructor (``(kind, arg)`` tuples, or sink objects).
    sinks: tuple[Any, ...] = ()

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
        analysis_threads: int = 1,
        priority: str = "low",
        sinks: Any = None,
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
        rules = resolve_rules(alerts)
        stops = _stop_on(stop_on, rules)
        if on_alert is not None and not callable(on_alert):
            raise ConfigError(f"on_alert must be a function taking an Alert, got {type(on_alert).__name__}")
        if full_scan_every != "auto" and (isinstance(full_scan_every, bool) or not isinstance(full_scan_every, int)
                                          or full_scan_every < 1):
            raise ConfigError(f"full_scan_every must be 'auto' or an integer >= 1, got {full_scan_every!r}")
        if isinstance(analysis_budget, bool) or not isinstance(analysis_budget, (int, float)) \
                or not 0 < analysis_budget <= 1:
            raise ConfigError(f"analysis_budget must be a share of the CPU time > 0 (0.01 = 1 %), got {analysis_budget!r}")
        for name, value in (("log_histograms", log_histograms), ("background", background),
                            ("save_baseline", save_baseline)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False, got {value!r}")
        if priority not in PRIORITIES:
            raise ConfigError(f"priority must be one of {', '.join(map(repr, PRIORITIES))}, got {priority!r}")
        if isinstance(sinks, (str, bytes)) or hasattr(sinks, "write"):
            sinks = [sinks]
        if sinks is not None and not isinstance(sinks, Iterable):
            raise ConfigError(f"sinks must be a list of sink strings or objects, got {type(sinks).__name__}")
        return cls(
            every_n_steps=positive_int("every_n_steps", every_n_steps),
            methods=chosen,
            layers=regex("layers", layers),
            exclude=regex("exclude", exclude),
            rules=rules,
            log_histograms=log_histograms,
            background=background,
            max_pending=positive_int("max_pending", max_pending),
            device=dev,
            num_workers=None if num_workers is None else positive_int("num_workers", num_workers),
            distributed=distributed,
            stop_on=stops,
            on_alert=on_alert,
            full_scan_every=full_scan_every,
            analysis_budget=float(analysis_budget),
            alert_window=positive_int("alert_window", alert_window),
            histogram_bins=positive_int("histogram_bins", histogram_bins, 2),
            save_baseline=save_baseline,
            analysis_threads=positive_int("analysis_threads", analysis_threads),
            priority=priority,
            sinks=tuple(parse_sink(x) for x in (sinks or ())),
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
        """Every JSON-able setting, as keyword arguments: ``MonitorConfig.build(**settings())`` rebuilds this config.

        Used for HF's callback state (a callback rebuilt from it behaves the same). Left
        out: ``on_alert`` (a function) and sink objects (only sink strings are kept).
        """
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
            "analysis_threads": self.analysis_threads,
            "priority": self.priority,
            "sinks": [spec for spec in map(sink_spec, self.sinks) if spec is not None],
        }
