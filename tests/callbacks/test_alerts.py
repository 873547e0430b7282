"""Each alert rule on hand-built numbers: pure functions, no tensors, no threads."""

from __future__ import annotations

import json
import math

import pytest

from weightscope.errors import ConfigError
from weightscope.monitor.alerts import DEFAULT_RULES, AlertState, evaluate_alerts, resolve_rules


def run(results=None, diff_prev=None, diff_base=None, state=None, alerts=None, step=1, **kw):
    state = state if state is not None else AlertState()
    out = evaluate_alerts(step, results or {}, diff_prev or {}, diff_base or {}, state, resolve_rules(alerts), **kw)
    return [(a.rule, a.layer, a.level) for a in out], state


def stats(**by_method):
    return {m: dict(v) for m, v in by_method.items()}


def test_nan_and_inf_are_errors():
    res = {"a": stats(basic_stats={"nan_count": 0, "inf_count": 0}),
           "b": stats(basic_stats={"nan_count": 2, "inf_count": 0}),
           "c": stats(basic_stats={"nan_count": 0, "inf_count": 1})}
    out, _ = run(res, alerts=["nan"])
    assert out == [("nan", "b", "ERROR"), ("nan", "c", "ERROR")]


def test_condition_number_threshold_and_growth():
    state = AlertState()
    out, _ = run({"a": stats(spectral={"condition_number": 50.0})}, state=state, alerts=["condition_number"])
    assert out == []
    # 50 -> 600: grew 12x (> 10x) although below the absolute 1e6
    out, _ = run({"a": stats(spectral={"condition_number": 600.0})}, state=state, alerts=["condition_number"])
    assert out == [("condition_number", "a", "WARN")]
    out, _ = run({"b": stats(spectral={"condition_number": 2e6})}, alerts=["condition_number"])
    assert out == [("condition_number", "b", "WARN")]
    out, _ = run({"b": stats(spectral={"condition_number": 2e6})}, alerts={"condition_number": {"max": 1e7}})
    assert out == []
    out, _ = run({"b": stats(spectral={"condition_number": math.inf})}, alerts=["condition_number"])
    assert out == [("condition_number", "b", "WARN")]


def test_drift_spike_against_the_running_median():
    state = AlertState()
    for drift in (0.01, 0.012, 0.011):
        out, _ = run(diff_prev={"a": {"relative_l2_distance": drift}}, state=state, alerts=["drift_spike"])
        assert out == []  # no history yet, then normal drift
    assert state.drift["a"] == [0.01, 0.012, 0.011]
    out, _ = run(diff_prev={"a": {"relative_l2_distance": 0.04}}, state=state, alerts=["drift_spike"])
    assert out == []  # 0.04 < 5 x median 0.011
    out, _ = run(diff_prev={"a": {"relative_l2_distance": 0.2}}, state=state, alerts=["drift_spike"])
    assert out == [("drift_spike", "a", "WARN")]
    state2 = AlertState(drift={"a": [0.01] * 3})
    out, _ = run(diff_prev={"a": {"relative_l2_distance": 0.04}}, state=state2, alerts={"drift_spike": {"k": 3}})
    assert out == [("drift_spike", "a", "WARN")]


def test_drift_spike_window_bounds_the_history():
    state = AlertState()
    for i in range(30):
        run(diff_prev={"a": {"relative_l2_distance": 0.01 + i}}, state=state, alerts={"drift_spike": {"window": 5}})
    assert len(state.drift["a"]) == 5


def test_norm_ratio_outside_bounds():
    diff = {"up": {"l2_norm_ratio": 2.5}, "down": {"l2_norm_ratio": 0.4}, "ok": {"l2_norm_ratio": 1.9},
            "nan": {"l2_norm_ratio": math.nan}, "none": {"l2_norm_ratio": None}}
    out, _ = run(diff_prev=diff, alerts=["norm_ratio"])
    assert sorted(layer for _, layer, _ in out) == ["down", "up"]
    out, _ = run(diff_prev=diff, alerts={"norm_ratio": {"low": 0.3, "high": 3.0}})
    assert out == []


def test_outliers_fire_when_crossing_a_threshold_upwards():
    state = AlertState()
    seq = [0.5, 1.5, 1.7, 6.0, 0.2, 1.2]
    fired = []
    for pct in seq:
        out, _ = run({"a": stats(quantization={"extreme_outlier_percentage": pct})}, state=state,
                     alerts=["outliers"], dedup_snapshots=1)
        fired.append(bool(out))
    assert fired == [False, True, False, True, False, True]


def test_new_dead_rows_or_columns():
    state = AlertState()
    run({"a": stats(sparsity={"dead_rows": 1, "dead_columns": 0})}, state=state, alerts=["dead_units"])
    out, _ = run({"a": stats(sparsity={"dead_rows": 1, "dead_columns": 0})}, state=state, alerts=["dead_units"])
    assert out == []  # dead from the start is not new
    out, _ = run({"a": stats(sparsity={"dead_rows": 1, "dead_columns": 3})}, state=state, alerts=["dead_units"])
    assert out == [("dead_units", "a", "WARN")]


def test_frozen_layer_changing():
    diff = {"f": {"relative_l2_distance": 1e-3, "identical": False},
            "g": {"relative_l2_distance": 0.0, "identical": True},
            "t": {"relative_l2_distance": 0.5, "identical": False}}
    out, _ = run(diff_prev=diff, alerts=["frozen_changed"], frozen=["f", "g"])
    assert out == [("frozen_changed", "f", "ERROR")]
    out, _ = run(diff_prev=diff, alerts={"frozen_changed": {"tolerance": 0.01}}, frozen=["f", "g"])
    assert out == []


def test_deduplicated_per_rule_and_layer_within_the_window():
    state = AlertState()
    res = {"a": stats(basic_stats={"nan_count": 1, "inf_count": 0}),
           "b": stats(basic_stats={"nan_count": 0, "inf_count": 0})}
    fired = [run(res, state=state, alerts=["nan"], dedup_snapshots=3)[0] for _ in range(7)]
    assert [bool(f) for f in fired] == [True, False, False, True, False, False, True]
    assert state.layers_alerting == 1  # still counted while de-duplicated
    res["b"] = stats(basic_stats={"nan_count": 1, "inf_count": 0})
    out, _ = run(res, state=state, alerts=["nan"], dedup_snapshots=3)
    assert out == [("nan", "b", "ERROR")]


def test_levels_can_be_changed_and_rules_switched_off():
    res = {"a": stats(basic_stats={"nan_count": 1, "inf_count": 0})}
    assert run(res, alerts={"nan": {"level": "warning"}})[0] == [("nan", "a", "WARN")]
    assert run(res, alerts={"nan": False})[0] == []
    assert run(res, alerts=False)[0] == []
    assert {r.name for r in resolve_rules(None)} == set(DEFAULT_RULES)


@pytest.mark.parametrize("bad, match", [
    ({"nope": True}, "unknown alert rule 'nope'"),
    (["nan", "nope"], "unknown alert rule"),
    ({"nan": {"level": "LOUD"}}, "alert level"),
    ({"norm_ratio": {"low": 3, "high": 2}}, "low < high"),
    ({"drift_spike": {"k": "big"}}, "must be a number"),
    ({"drift_spike": {"min_history": 2.5}}, "whole number"),
    ({"condition_number": {"threshold": 5}}, "no setting 'threshold'; valid: level, max, growth"),
    ("nan", "alerts must be"),
])
def test_bad_alert_settings_fail_with_a_clear_message(bad, match):
    with pytest.raises(ConfigError, match=match):
        resolve_rules(bad)


def test_state_round_trips_through_json():
    state = AlertState()
    run({"a": stats(spectral={"condition_number": 5.0})}, diff_prev={"a": {"relative_l2_distance": 0.1}},
        state=state)
    again = AlertState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
