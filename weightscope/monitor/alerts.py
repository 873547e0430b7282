"""Alert rules: pure functions of one snapshot's numbers and a small carried state.

Nothing here knows about threads, tensors, trainers or sinks, so the same rules
serve the live monitor and a scan of a folder of checkpoints after the fact:

>>> rules = resolve_rules(None)                       # every rule, default thresholds
>>> state = AlertState()
>>> results = {"fc": {"basic_stats": {"nan_count": 3, "inf_count": 0}}}
>>> [a.rule for a in evaluate_alerts(100, results, {}, {}, state, rules)]
['nan']

Each rule reads ``results`` (``layer -> method -> metric``), ``diff_prev`` /
``diff_base`` (``layer -> pair metric``, the keys of
:func:`weightscope.comparison.diff_metrics`) and the values it remembered in
:class:`AlertState` from the previous snapshot, and returns :class:`Alert`
records. :func:`evaluate_alerts` runs the enabled rules, drops repeats of a
(rule, layer) inside the de-duplication window and updates the state.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import ConfigError

LEVELS = ("INFO", "WARN", "ERROR")


@dataclass(frozen=True)
class Alert:
    """One thing that went wrong at one step, in one layer (``layer`` None: the whole model)."""

    rule: str
    level: str
    step: int
    layer: str | None
    message: str
    value: float | None = None
    threshold: float | None = None

    @property
    def title(self) -> str:
        where = f" in {self.layer}" if self.layer else ""
        return f"WeightScope: {self.rule}{where} at step {self.step}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(**{k: data.get(k) for k in ("rule", "level", "step", "layer", "message", "value", "threshold")})


@dataclass(frozen=True)
class Rule:
    """A rule's name, its level, and its thresholds (``params``); see :data:`DEFAULT_RULES`."""

    name: str
    level: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class AlertState:
    """What the rules remember between snapshots; plain JSON so checkpoints can carry it.

    ``drift`` holds each layer's recent relative drifts (for the running
    median), ``last`` the values the "grew since" rules compare against, as
    ``layer -> metric -> {"value": v, "step": s}``: the latest snapshot that
    had the metric, which is not always the previous one (snapshots thinned
    to ``basic_stats`` have no spectra), hence the step; ``fired`` the
    snapshot index at which each (rule, layer) last fired (for de-duplication).
    States saved before steps were kept (``metric -> v``) load with step None.
    """

    snapshots: int = 0
    drift: dict[str, list[float]] = field(default_factory=dict)
    last: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    fired: dict[str, int] = field(default_factory=dict)
    #: "rule|layer" of every rule firing at the last snapshot, repeats included.
    active: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "drift": self.drift, "last": self.last, "fired": self.fired,
                "active": self.active}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlertState:
        data = data or {}
        return cls(
            snapshots=int(data.get("snapshots", 0)),
            drift={k: [float(x) for x in v] for k, v in dict(data.get("drift", {})).items()},
            last={layer: {key: _remembered(v) for key, v in dict(values).items()}
                  for layer, values in dict(data.get("last", {})).items()},
            fired={k: int(v) for k, v in dict(data.get("fired", {})).items()},
            active=[str(k) for k in data.get("active", [])],
        )

    @property
    def layers_alerting(self) -> int:
        """Distinct layers with a rule firing at the last snapshot (de-duplicated repeats included)."""
        return len({key.split("|", 1)[1] for key in self.active} - {""})


@dataclass(frozen=True)
class SnapshotNumbers:
    """Everything a rule may read about one snapshot."""

    step: int
    results: Mapping[str, Mapping[str, Any]]
    diff_prev: Mapping[str, Mapping[str, Any]]
    diff_base: Mapping[str, Mapping[str, Any]]
    frozen: frozenset[str]
    state: AlertState

    def metric(self, layer: str, method: str, key: str) -> float | None:
        return _num(self.results.get(layer, {}).get(method, {}).get(key))

    def previous(self, layer: str, key: str) -> float | None:
        """The value of ``key`` at the latest earlier snapshot that had it (None: never seen)."""
        return self.earlier(layer, key)[0]

    def earlier(self, layer: str, key: str) -> tuple[float | None, int | None]:
        """``(value, step)`` of ``key`` at the latest earlier snapshot that had it; step None if unknown."""
        entry = self.state.last.get(layer, {}).get(key)
        if entry is None:
            return None, None
        entry = _remembered(entry)
        return entry["value"], entry["step"]


def _remembered(entry: Any) -> dict[str, Any]:
    """One ``AlertState.last`` entry; a bare number is the format before steps were kept."""
    if isinstance(entry, Mapping):
        step = entry.get("step")
        return {"value": float(entry["value"]), "step": None if step is None else int(step)}
    return {"value": float(entry), "step": None}


def _since(step: int | None) -> str:
    return "since an earlier snapshot" if step is None else f"since step {step}"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None if value is None else float(value)
    return float(value) if isinstance(value, (int, float)) else None


RuleFn = Callable[[SnapshotNumbers, Rule], Iterator[Alert]]


def _alert(ctx: SnapshotNumbers, rule: Rule, layer: str | None, message: str,
           value: float | None = None, threshold: float | None = None, level: str | None = None) -> Alert:
    return Alert(rule.name, level or rule.level, ctx.step, layer, message, value, threshold)


# -- the rules ---------------------------------------------------------------
def _nan(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    for layer in ctx.results:
        nans = ctx.metric(layer, "basic_stats", "nan_count") or 0.0
        infs = ctx.metric(layer, "basic_stats", "inf_count") or 0.0
        if nans or infs:
            yield _alert(ctx, rule, layer, f"{int(nans)} NaN and {int(infs)} Inf values in {layer}", nans + infs, 0.0)


def _condition_number(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    limit, growth = float(rule.params["max"]), float(rule.params["growth"])
    for layer in ctx.results:
        cond = ctx.metric(layer, "spectral", "condition_number")
        if cond is None or math.isnan(cond):
            continue
        if ctx.metric(layer, "spectral", "max_singular_value") == 0.0:
            continue  # all zeros (a LoRA B at init): cond is inf, yet nothing is ill-conditioned
        prev, prev_step = ctx.earlier(layer, "condition_number")
        if cond > limit:
            yield _alert(ctx, rule, layer, f"condition number of {layer} is {cond:.3g} (> {limit:.3g})", cond, limit)
        elif prev is not None and prev > 0 and cond > growth * prev:
            yield _alert(ctx, rule, layer,
                         f"condition number of {layer} grew {cond / prev:.3g}x {_since(prev_step)} "
                         f"({prev:.3g} -> {cond:.3g})", cond / prev, growth)


def _drift_spike(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    k, min_history = float(rule.params["k"]), int(rule.params["min_history"])
    floor = float(rule.params["min_drift"])
    for layer, diff in ctx.diff_prev.items():
        drift = _num(diff.get("relative_l2_distance"))
        history = ctx.state.drift.get(layer, [])
        if drift is None or not math.isfinite(drift) or len(history) < min_history:
            continue
        median = statistics.median(history)
        # A layer that barely moved until now (median ~ 0) must still move a
        # real amount to count as a spike, or float noise would alert.
        if drift > max(k * median, floor):
            yield _alert(ctx, rule, layer,
                         f"{layer} moved {drift:.3g} (relative L2) since the previous snapshot, "
                         f"{drift / median if median > 0 else math.inf:.3g}x its running median {median:.3g}",
                         drift, k * median)


def _norm_ratio(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    low, high = float(rule.params["low"]), float(rule.params["high"])
    for layer, diff in ctx.diff_prev.items():
        ratio = _num(diff.get("l2_norm_ratio"))
        # Non-finite weights are the nan rule's business, not a norm change.
        if ratio is not None and math.isfinite(ratio) and not low <= ratio <= high:
            yield _alert(ctx, rule, layer, f"L2 norm of {layer} changed {ratio:.3g}x since the previous snapshot "
                         f"(outside [{low:g}, {high:g}])", ratio, high if ratio > high else low)


def _outliers(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    thresholds = sorted(float(t) for t in rule.params["thresholds"])
    for layer in ctx.results:
        pct = ctx.metric(layer, "quantization", "extreme_outlier_percentage")
        if pct is None or math.isnan(pct):
            continue
        known, prev_step = ctx.earlier(layer, "extreme_outlier_percentage")
        prev = known or 0.0
        crossed = [t for t in thresholds if prev <= t < pct]
        if crossed:
            t = crossed[-1]
            was = "" if known is None else f" {_since(prev_step)}, from {prev:.3g}%"
            yield _alert(ctx, rule, layer, f"extreme outliers in {layer} reached {pct:.3g}% (crossed {t:g}%{was}): "
                         "quantization risk", pct, t)


def _dead_units(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    for layer in ctx.results:
        for key in ("dead_rows", "dead_columns"):
            now = ctx.metric(layer, "sparsity", key)
            prev, prev_step = ctx.earlier(layer, key)
            if now is not None and prev is not None and now > prev:
                what = key.replace("_", " ")
                yield _alert(ctx, rule, layer, f"{int(now - prev)} new {what} in {layer} {_since(prev_step)} "
                             f"({int(prev)} -> {int(now)})", now, prev)


def _frozen_changed(ctx: SnapshotNumbers, rule: Rule) -> Iterator[Alert]:
    tol = float(rule.params["tolerance"])
    for layer in sorted(ctx.frozen):
        for diff in (ctx.diff_prev.get(layer), ctx.diff_base.get(layer)):
            drift = _num((diff or {}).get("relative_l2_distance"))
            identical = (diff or {}).get("identical")
            if (drift is not None and drift > tol) or (identical is False and tol == 0):
                yield _alert(ctx, rule, layer, f"{layer} has requires_grad=False but changed "
                             f"(relative L2 {drift if drift is not None else float('nan'):.3g})", drift, tol)
                break


#: rule name -> (function, default level, default params). The table in docs/monitoring.md mirrors it.
DEFAULT_RULES: dict[str, tuple[RuleFn, str, dict[str, Any]]] = {
    "nan": (_nan, "ERROR", {}),
    "condition_number": (_condition_number, "WARN", {"max": 1e6, "growth": 10.0}),
    "drift_spike": (_drift_spike, "WARN", {"k": 5.0, "min_history": 3, "window": 20, "min_drift": 1e-6}),
    "norm_ratio": (_norm_ratio, "WARN", {"low": 0.5, "high": 2.0}),
    "outliers": (_outliers, "WARN", {"thresholds": (1.0, 5.0)}),
    "dead_units": (_dead_units, "WARN", {}),
    "frozen_changed": (_frozen_changed, "ERROR", {"tolerance": 0.0}),
}
#: How many snapshots a (rule, layer) stays quiet after it fired.
DEFAULT_DEDUP_SNAPSHOTS = 10


def resolve_rules(alerts: Any) -> list[Rule]:
    """Turn the user's ``alerts=`` argument into rules; raise ConfigError on anything unknown.

    ``None`` / ``True``: every rule with its defaults. ``False`` / ``[]``: none.
    A list of names: those rules, defaults. A dict ``name -> False | True |
    {"level": ..., <param>: value}``: defaults for rules not named, the named
    ones switched off or tuned. Rule objects pass through.
    """
    if alerts is None or alerts is True:
        return [_default(name) for name in DEFAULT_RULES]
    if alerts is False:
        return []
    if isinstance(alerts, Mapping):
        rules = {name: _default(name) for name in DEFAULT_RULES}
        for name, spec in alerts.items():
            _check_name(name)
            if spec is False or spec is None:
                rules.pop(name, None)
            elif spec is True:
                continue
            elif isinstance(spec, Mapping):
                rules[name] = _tuned(rules.get(name) or _default(name), spec)
            else:
                raise ConfigError(f"alerts[{name!r}] must be True, False or a dict of thresholds, got {spec!r}")
        return list(rules.values())
    if isinstance(alerts, Iterable) and not isinstance(alerts, str):
        out = []
        for item in alerts:
            if isinstance(item, Rule):
                _check_name(item.name)
                out.append(_tuned(_default(item.name), {"level": item.level, **item.params}))
            else:
                _check_name(str(item))
                out.append(_default(str(item)))
        return out
    raise ConfigError(f"alerts must be None, a bool, a list of rule names or a dict, got {type(alerts).__name__}")


def _check_name(name: str) -> None:
    if name not in DEFAULT_RULES:
        raise ConfigError(f"unknown alert rule {name!r}; valid rules: {', '.join(DEFAULT_RULES)}")


def _default(name: str) -> Rule:
    _, level, params = DEFAULT_RULES[name]
    return Rule(name, level, dict(params))


def _tuned(rule: Rule, spec: Mapping[str, Any]) -> Rule:
    params = dict(rule.params)
    level = rule.level
    for key, value in spec.items():
        if key == "level":
            level = str(value).upper().replace("WARNING", "WARN")
            if level not in LEVELS:
                raise ConfigError(f"alert level for {rule.name!r} must be one of {', '.join(LEVELS)}, got {value!r}")
        elif key not in params:
            valid = ", ".join(["level", *params]) or "level"
            raise ConfigError(f"alert rule {rule.name!r} has no setting {key!r}; valid: {valid}")
        else:
            params[key] = _check_param(rule.name, key, value, params[key])
    _check_rule(Rule(rule.name, level, params))
    return replace(rule, level=level, params=params)


def _check_param(rule: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value or not all(
                not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in value):
            raise ConfigError(f"alerts[{rule!r}][{key!r}] must be a non-empty list of positive numbers, got {value!r}")
        return tuple(sorted({float(v) for v in value}))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"alerts[{rule!r}][{key!r}] must be a number, got {value!r}")
    if isinstance(default, int):
        if not float(value).is_integer():
            raise ConfigError(f"alerts[{rule!r}][{key!r}] must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _check_rule(rule: Rule) -> None:
    p = rule.params
    if rule.name == "norm_ratio" and not 0 <= p["low"] < p["high"]:
        raise ConfigError(f"norm_ratio needs 0 <= low < high, got low={p['low']}, high={p['high']}")
    if rule.name == "drift_spike" and (p["k"] <= 1 or p["min_history"] < 1 or p["window"] < p["min_history"]):
        raise ConfigError("drift_spike needs k > 1 and 1 <= min_history <= window")
    if rule.name == "condition_number" and (p["max"] <= 1 or p["growth"] <= 1):
        raise ConfigError("condition_number needs max > 1 and growth > 1")
    if rule.name == "outliers" and p["thresholds"][-1] >= 100:
        raise ConfigError(f"outliers thresholds are percentages below 100 (a share of the weights), "
                          f"got {list(p['thresholds'])}")
    if any(isinstance(v, float) and v < 0 for v in p.values()):
        raise ConfigError(f"alert thresholds of {rule.name!r} must not be negative: {dict(p)}")


def evaluate_alerts(
    step: int,
    results: Mapping[str, Mapping[str, Any]],
    diff_prev: Mapping[str, Mapping[str, Any]],
    diff_base: Mapping[str, Mapping[str, Any]],
    state: AlertState,
    rules: Iterable[Rule],
    *,
    frozen: Iterable[str] = (),
    dedup_snapshots: int = DEFAULT_DEDUP_SNAPSHOTS,
    completes: bool = False,
) -> list[Alert]:
    """Run ``rules`` on one snapshot; update ``state`` in place; return the alerts not de-duplicated away.

    ``frozen``: layers with ``requires_grad=False`` (unknown after the fact: pass nothing).
    A snapshot scanned with fewer methods (say, basic statistics only) leaves
    the remembered values of the missing methods alone. ``completes``: more
    methods on the snapshot evaluated last (same step): it does not count as
    another snapshot, repeats of its alerts are de-duplicated, and the layers
    alerting are both evaluations' together.
    """
    rules = list(rules)
    ctx = SnapshotNumbers(step, results, diff_prev, diff_base, frozenset(frozen), state)
    out: list[Alert] = []
    completing = completes and state.snapshots > 0
    index = state.snapshots - 1 if completing else state.snapshots
    active: list[str] = []
    for rule in rules:
        fn = DEFAULT_RULES[rule.name][0]
        for alert in fn(ctx, rule):
            key = f"{alert.rule}|{alert.layer or ''}"
            active.append(key)
            last = state.fired.get(key)
            if last is not None and index - last < dedup_snapshots:
                continue
            state.fired[key] = index
            out.append(alert)
    _remember(ctx, rules)
    if completing:
        state.active = [*state.active, *(key for key in active if key not in state.active)]
    else:
        state.active = active
        state.snapshots += 1
    return out


def _remember(ctx: SnapshotNumbers, rules: list[Rule]) -> None:
    window = next((int(r.params["window"]) for r in rules if r.name == "drift_spike"),
                  int(DEFAULT_RULES["drift_spike"][2]["window"]))
    for layer, diff in ctx.diff_prev.items():
        drift = _num(diff.get("relative_l2_distance"))
        if drift is not None and math.isfinite(drift):
            ctx.state.drift[layer] = (ctx.state.drift.get(layer, []) + [drift])[-window:]
        elif drift == math.inf:  # the layer left zero (a zero-init LoRA B): its drift history starts over
            ctx.state.drift.pop(layer, None)
    remembered = (("spectral", "condition_number"), ("quantization", "extreme_outlier_percentage"),
                  ("sparsity", "dead_rows"), ("sparsity", "dead_columns"))
    for layer in ctx.results:
        for method, key in remembered:
            value = ctx.metric(layer, method, key)
            if value is not None and not math.isnan(value):
                ctx.state.last.setdefault(layer, {})[key] = {"value": value, "step": ctx.step}
