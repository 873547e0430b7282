import json
import math

import numpy as np
import pytest
from run_builders import STEPS, hf_weights, lightning_weights, reference_diff

import weightscope
from weightscope.core.results import ScanResults
from weightscope.errors import WeightScopeError
from weightscope.run.trajectory import RUN_FORMAT, Trajectory

METHODS = ["basic_stats", "spectral", "quantization"]


@pytest.fixture(scope="module")
def hf_traj(hf_run) -> Trajectory:
    return weightscope.scan_run(hf_run, methods=METHODS, cache=False)


def _check_drift(drift, ref_a, ref_b):
    assert set(drift) == set(ref_b)
    for layer, metrics in drift.items():
        expected = reference_diff(ref_a[layer], ref_b[layer])
        for key, value in expected.items():
            assert metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (layer, key)


def test_hf_run_steps_results_and_drift_against_numpy(hf_run, hf_traj):
    assert hf_traj.steps == STEPS
    weights = {s: hf_weights(hf_run / f"checkpoint-{s}") for s in STEPS}
    for s in STEPS:
        results = hf_traj[s]
        assert isinstance(results, ScanResults)
        assert set(results) == set(weights[s])  # lm_head is tied to wte and not stored
        for layer, w in weights[s].items():
            assert results[layer]["basic_stats"]["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-9)
        assert results.methods == METHODS
    first = hf_traj.drift[STEPS[0]]
    assert first["previous"] == {} and first["first"] == {}
    assert (first["previous_step"], first["first_step"]) == (None, STEPS[0])
    for prev, cur in zip(STEPS, STEPS[1:]):
        drift = hf_traj.drift[cur]
        assert (drift["previous_step"], drift["first_step"]) == (prev, STEPS[0])
        _check_drift(drift["previous"], weights[prev], weights[cur])
        _check_drift(drift["first"], weights[STEPS[0]], weights[cur])


def test_most_drifting_layers_rank_first_to_last(hf_run, hf_traj):
    w0, w1 = hf_weights(hf_run / "checkpoint-2"), hf_weights(hf_run / "checkpoint-6")
    expected = sorted(w0, key=lambda k: -reference_diff(w0[k], w1[k])["relative_l2_distance"])[:3]
    assert [layer for layer, _, _ in hf_traj.most_drifting_layers(3)] == expected


def test_lightning_run_drift_against_numpy(lightning_run):
    run, _ = lightning_run
    traj = weightscope.scan_run(run, methods=["basic_stats"], cache=False)
    assert traj.steps == STEPS
    weights = {s: lightning_weights(run / f"epoch=0-step={s}.ckpt") for s in STEPS}
    _check_drift(traj.drift[6]["previous"], weights[4], weights[6])
    _check_drift(traj.drift[6]["first"], weights[2], weights[6])


def test_replay_matches_the_live_callback_at_the_same_steps(lightning_run):
    """The live WeightScopeCallback watched the same training: same numbers, same chart names, same steps."""
    run, history = lightning_run
    live = {}
    for line in history.read_text().splitlines():
        rec = json.loads(line)
        live.setdefault(rec["step"], rec)  # the final snapshot repeats the last step
    traj = weightscope.scan_run(run, methods=METHODS, cache=False)
    for s in STEPS:
        rec = traj.record(s)
        assert set(rec.results) == set(live[s]["layers"])
        for layer, per in rec.results.items():
            for method in METHODS:
                for key, value in per[method].items():
                    want = live[s]["layers"][layer][method][key]
                    if isinstance(value, float):
                        assert value == pytest.approx(want, rel=1e-9, abs=1e-12), (s, layer, method, key)
                    else:
                        assert value == want
    # Drift between consecutive snapshots is the same diff of the same weights.
    for s in STEPS[1:]:
        assert live[s]["prev_step"] == traj.record(s).prev_step
        for layer, metrics in traj.record(s).diff_prev.items():
            assert metrics["relative_l2_distance"] == pytest.approx(
                live[s]["diff_prev"][layer]["relative_l2_distance"], rel=1e-9)
    # The chart names of a replayed step are those of the live step (drift_from_start included).
    live_rec = weightscope.monitor.SnapshotRecord.from_json_dict(live[4])
    assert set(traj.record(4).scalars()) == set(live_rec.scalars())


def test_long_table_and_run_json(hf_traj, tmp_path):
    frame = hf_traj.to_dataframe()
    assert list(frame.columns) == ["step", "layer", "metric", "value"]
    layer = "transformer.h.0.mlp.c_fc"
    row = frame[(frame.step == 4) & (frame.layer == layer) & (frame.metric == "spectral.condition_number")]
    assert row.value.tolist() == [hf_traj[4][layer]["spectral"]["condition_number"]]
    row = frame[(frame.step == 6) & (frame.layer == layer) & (frame.metric == "drift_from_start_l2_distance")]
    assert row.value.tolist() == [hf_traj.drift[6]["first"][layer]["l2_distance"]]
    assert set(frame.step) == set(STEPS)

    path = hf_traj.save(tmp_path / "run.json")
    data = json.loads(path.read_text(), parse_constant=lambda t: pytest.fail(f"non-strict JSON {t}"))
    assert data["format"] == RUN_FORMAT
    assert [c["step"] for c in data["checkpoints"]] == STEPS
    assert data["checkpoints"][1]["path"].endswith("checkpoint-4")
    assert data["checkpoints"][1]["layers"][layer]["spectral"]["condition_number"] == pytest.approx(
        hf_traj[4][layer]["spectral"]["condition_number"])
    assert [d["step"] for d in data["drift"]] == STEPS
    assert data["drift"][2]["first"][layer]["l2_distance"] == hf_traj.drift[6]["first"][layer]["l2_distance"]
    assert data["alerts"] == []

    csv = hf_traj.save(tmp_path / "run.csv")
    lines = csv.read_text().splitlines()
    assert lines[0] == "step,layer,metric,value" and len(lines) == len(frame) + 1
    assert all(math.isfinite(v) for v in frame.value)


def test_series_and_drift_series_against_numpy(hf_run, hf_traj):
    layer = "transformer.h.0.mlp.c_fc"  # the docs' example (docs/runs.md)
    weights = {s: hf_weights(hf_run / f"checkpoint-{s}")[layer] for s in STEPS}
    svs = {s: np.linalg.svd(w, compute_uv=False) for s, w in weights.items()}
    assert hf_traj.series(layer, "basic_stats", "l2_norm") == pytest.approx(
        [np.linalg.norm(weights[s]) for s in STEPS], rel=1e-9)
    assert hf_traj.series(layer, "spectral", "condition_number") == pytest.approx(
        [svs[s][0] / svs[s][-1] for s in STEPS], rel=1e-6)
    assert hf_traj.series(layer, "spectral", "stable_rank") == pytest.approx(
        [np.sum(svs[s] ** 2) / svs[s][0] ** 2 for s in STEPS], rel=1e-6)
    prev = hf_traj.drift_series(layer)
    assert prev[0] is None and prev[1:] == pytest.approx(
        [reference_diff(weights[a], weights[b])["relative_l2_distance"] for a, b in zip(STEPS, STEPS[1:])], rel=1e-9)
    first = hf_traj.drift_series(layer, "l2_distance", from_first=True)
    assert first[0] is None and first[1:] == pytest.approx(
        [reference_diff(weights[STEPS[0]], weights[s])["l2_distance"] for s in STEPS[1:]], rel=1e-9)
    assert hf_traj.layers == list(hf_weights(hf_run / "checkpoint-2"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # The name docs/runs.md once showed: GPT-2's layers are transformer.h.0.mlp.c_fc and the like.
        (lambda t: t.series("h.0.mlp", "spectral", "condition_number"),
         "no layer 'h.0.mlp' in this run; did you mean 'transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj'?"),
        (lambda t: t.series("transformer.h.0.mlp.c_fc", "esd", "alpha"), "no method 'esd' in this run"),
        (lambda t: t.series("transformer.h.0.mlp.c_fc", "spectral", "cond"),
         "no spectral metric 'cond' in this run; did you mean 'condition_number'?"),
        (lambda t: t.series("transformer.h.0.mlp.c_fc", "quantization", "recommendation"),
         "quantization 'recommendation' is not a single number per step"),
        (lambda t: t.drift_series("h.0.mlp"), "no layer 'h.0.mlp' in this run"),
        (lambda t: t.drift_series("transformer.h.0.mlp.c_fc", "relative_l2"),
         "no drift metric 'relative_l2' in this run; did you mean 'relative_l2_distance'?"),
        (lambda t: t.record(3), "no checkpoint at step 3; steps: 2, 4, 6"),
        (lambda t: t[3], "no checkpoint at step 3"),
    ],
)
def test_unknown_layer_method_metric_or_step_is_an_error_never_a_row_of_none(hf_traj, call, message):
    with pytest.raises(KeyError) as exc:
        call(hf_traj)
    assert isinstance(exc.value, WeightScopeError)
    assert message in str(exc.value)
    if "layer" in message:
        assert "layers: transformer.h.0.mlp.c_fc" in str(exc.value) and "(10 in all)" in str(exc.value)
