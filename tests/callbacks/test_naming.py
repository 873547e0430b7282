"""The chart-name scheme and the snapshot record: pure functions on hand-built numbers."""

from __future__ import annotations

import json
import math

from weightscope.monitor.alerts import Alert
from weightscope.monitor.naming import scalar_metrics
from weightscope.monitor.record import SnapshotRecord, summarize


def test_one_section_per_statistic_one_chart_per_layer():
    results = {"h.0.mlp": {"basic_stats": {"l2_norm": 2.0, "nan_count": 0, "shape": [2, 2], "dtype": "float32"},
                           "spectral": {"condition_number": 10.0, "top_singular_values": [3.0, 1.0],
                                        "l2_norm": 9.0}}}
    diff = {"h.0.mlp": {"relative_l2_distance": 0.1, "cosine_similarity": 0.99, "l2_norm_ratio": 1.1,
                        "mean_diff": 0.0}}
    names = scalar_metrics(results, diff, diff, {"global_drift": 0.1})
    assert names == {
        "weights_l2_norm/h.0.mlp": 2.0,
        "weights_nan_count/h.0.mlp": 0.0,
        "weights_condition_number/h.0.mlp": 10.0,
        "weights_spectral_l2_norm/h.0.mlp": 9.0,  # a second method with the same key is qualified
        "drift_relative_l2_distance/h.0.mlp": 0.1,
        "drift_cosine_similarity/h.0.mlp": 0.99,
        "drift_l2_norm_ratio/h.0.mlp": 1.1,
        "drift_from_start_relative_l2_distance/h.0.mlp": 0.1,
        "drift_from_start_cosine_similarity/h.0.mlp": 0.99,
        "drift_from_start_l2_norm_ratio/h.0.mlp": 1.1,
        "weightscope/global_drift": 0.1,
    }


def test_global_drift_is_over_all_layers_at_once():
    # layer a: |dW| = 3 of |W| = 4; layer b: |dW| = 0 of |W| = 0.1 -> 3 / sqrt(16.01), not the mean ratio 0.375
    diff = {"a": {"l2_distance": 3.0, "model1_l2_norm": 4.0}, "b": {"l2_distance": 0.0, "model1_l2_norm": 0.1}}
    results = {"a": {"spectral": {"condition_number": 5.0}}, "b": {"spectral": {"condition_number": math.inf}},
               "c": {"basic_stats": {"nan_count": 2, "inf_count": 0}}}
    s = summarize(results, diff, {}, [], 2)
    assert s["global_drift"] == 3.0 / math.sqrt(16.01)
    assert s["max_condition_number"] == math.inf
    assert s["nonfinite_layers"] == 1 and s["layers_alerting"] == 2 and "global_drift_from_start" not in s


def test_record_round_trips_through_strict_json():
    rec = SnapshotRecord(step=5, kind="periodic", results={"a": {"basic_stats": {"mean": math.nan}}},
                         diff_prev={"a": {"relative_l2_distance": 0.5}},
                         alerts=[Alert("nan", "ERROR", 5, "a", "1 NaN", 1.0, 0.0)], summary={"alerts": 1},
                         prev_step=0, base_step=0, methods=["basic_stats"])
    line = json.dumps(rec.to_json_dict(), allow_nan=False)
    again = SnapshotRecord.from_json_dict(json.loads(line))
    assert again.alerts == rec.alerts and again.step == 5 and again.prev_step == 0
    assert again.results["a"]["basic_stats"]["mean"] is None  # strict JSON: NaN -> null
