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
    assert state.drift["a"] == pytest.approx([0.01 + i for i in range(25, 30)])  # the latest 5, oldest first


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


def messages(results, state, alerts, step):
    out = evaluate_alerts(step, results, {}, {}, state, resolve_rules(alerts))
    return [a.message for a in out]


def test_growth_is_measured_from_and_names_the_step_that_had_the_value():
    # Spectra at step 60 only; steps 100 and 150 were thinned to basic_stats (no condition number).
    state = AlertState()
    basic = stats(basic_stats={"nan_count": 0, "inf_count": 0})
    assert messages({"a": stats(spectral={"condition_number": 769.0})}, state, ["condition_number"], 60) == []
    for step in (100, 150):
        assert messages({"a": basic}, state, ["condition_number"], step) == []
    assert state.last["a"]["condition_number"] == {"value": 769.0, "step": 60}
    got = messages({"a": stats(spectral={"condition_number": 1.31e4})}, state, ["condition_number"], 200)
    assert got == ["condition number of a grew 17x since step 60 (769 -> 1.31e+04)"]  # 13100 / 769 = 17.03
    assert state.last["a"]["condition_number"] == {"value": 1.31e4, "step": 200}


def test_outlier_crossing_and_dead_units_name_the_step_compared_against():
    state = AlertState()
    q = lambda pct: stats(quantization={"extreme_outlier_percentage": pct})  # noqa: E731
    assert messages({"a": q(0.5)}, state, ["outliers"], 10) == []
    assert messages({"a": stats(basic_stats={"nan_count": 0})}, state, ["outliers"], 20) == []
    assert messages({"a": q(1.5)}, state, ["outliers"], 30) == [
        "extreme outliers in a reached 1.5% (crossed 1% since step 10, from 0.5%): quantization risk"]
    # First sighting: nothing earlier to name.
    assert messages({"b": q(6.0)}, AlertState(), ["outliers"], 5) == [
        "extreme outliers in b reached 6% (crossed 5%): quantization risk"]
    state = AlertState()
    messages({"a": stats(sparsity={"dead_rows": 1, "dead_columns": 0})}, state, ["dead_units"], 40)
    messages({"a": stats(basic_stats={"nan_count": 0})}, state, ["dead_units"], 50)
    assert messages({"a": stats(sparsity={"dead_rows": 4, "dead_columns": 0})}, state, ["dead_units"], 60) == [
        "3 new dead rows in a since step 40 (1 -> 4)"]


def test_state_saved_in_the_old_format_still_loads_and_compares():
    old = {"snapshots": 3, "drift": {"a": [0.1]}, "fired": {"nan|a": 0}, "active": [],
           "last": {"a": {"condition_number": 50.0, "dead_rows": 2}}}  # before steps were kept
    state = AlertState.from_dict(json.loads(json.dumps(old)))
    assert state.last == {"a": {"condition_number": {"value": 50.0, "step": None},
                                "dead_rows": {"value": 2.0, "step": None}}}
    got = messages({"a": stats(spectral={"condition_number": 600.0})}, state, ["condition_number"], 70)
    assert got == ["condition number of a grew 12x since an earlier snapshot (50 -> 600)"]
    saved = json.loads(json.dumps(state.to_dict()))
    assert saved["last"]["a"]["condition_number"] == {"value": 600.0, "step": 70}
    assert saved["last"]["a"]["dead_rows"] == {"value": 2.0, "step": None}
    assert AlertState.from_dict(saved) == state


@pytest.mark.parametrize("thresholds", [[-1], [], [0], [1, -5], ["x"], [True], [float("nan")], [150], 5])
def test_outlier_thresholds_must_be_a_non_empty_list_of_percentages(thresholds):
    with pytest.raises(ConfigError, match=r"thresholds") as exc:
        resolve_rules({"outliers": {"thresholds": thresholds}})
    assert "\n" not in str(exc.value)


def test_outlier_thresholds_are_sorted():
    (rule,) = resolve_rules({"outliers": {"thresholds": [5, 0.5, 2, 2]}, **{n: False for n in DEFAULT_RULES
                                                                             if n != "outliers"}})
    assert rule.params["thresholds"] == (0.5, 2.0, 5.0)
    state = AlertState()
    seq = [(0.1, False), (0.7, True), (2.5, True), (3.0, False), (5.5, True)]
    for step, (pct, fires) in enumerate(seq):
        out = evaluate_alerts(step, {"a": stats(quantization={"extreme_outlier_percentage": pct})}, {}, {}, state,
                              [rule], dedup_snapshots=1)
        assert [a.threshold for a in out] == ([max(t for t in (0.5, 2.0, 5.0) if t < pct)] if fires else [])
