"""Faults planted in one checkpoint raise the callbacks' alerts at that checkpoint's step."""

import numpy as np
import pytest
from run_builders import STEPS, copy_run, hf_weights
from safetensors.torch import load_file, save_file

import weightscope

SCALED = "transformer.h.1.mlp.c_fc"
POISONED = "transformer.h.0.attn.c_attn"


def _rewrite(path, change):
    tensors = load_file(path)
    change(tensors)
    path.unlink()
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def faulty_traj(hf_run, tmp_path_factory):
    run = copy_run(hf_run, tmp_path_factory.mktemp("faulty") / "run")

    def scale(t):
        t[f"{SCALED}.weight"] = t[f"{SCALED}.weight"] * 1e3

    def poison(t):
        w = t[f"{POISONED}.weight"].clone()
        w[0, 0] = float("nan")
        t[f"{POISONED}.weight"] = w

    _rewrite(run / "checkpoint-4" / "model.safetensors", scale)
    _rewrite(run / "checkpoint-6" / "model.safetensors", poison)
    return run, weightscope.scan_run(run, methods=["basic_stats"])


def _fired(traj, rule):
    return [(a.step, a.layer) for a in traj.alerts if a.rule == rule]


def test_layer_times_1e3_fires_norm_ratio_at_its_step(faulty_traj):
    run, traj = faulty_traj
    assert _fired(traj, "norm_ratio") == [(4, SCALED)]
    alert = next(a for a in traj.alerts if a.rule == "norm_ratio")
    # x1e3 on top of two steps of training: the ratio of the norms as numpy has them in the files
    w = {s: hf_weights(run / f"checkpoint-{s}")[SCALED] for s in (2, 4)}
    want = np.linalg.norm(w[4]) / np.linalg.norm(w[2])
    assert want > 500 and alert.value == pytest.approx(want, rel=1e-9)
    assert (alert.level, alert.threshold) == ("WARN", 2.0)


def test_nan_fires_at_its_step_only(faulty_traj):
    _, traj = faulty_traj
    assert traj.steps == STEPS, (traj.skipped, traj.ignored)
    assert _fired(traj, "nan") == [(6, POISONED)]
    assert traj[6][POISONED]["basic_stats"]["nan_count"] == 1
    assert traj.record(6).summary["nonfinite_layers"] == 1


def test_alerts_in_step_order_and_the_same_from_the_cache(faulty_traj):
    run, traj = faulty_traj
    assert [a.step for a in traj.alerts] == sorted(a.step for a in traj.alerts)
    # A cached re-run recomputes the alerts from cached numbers: NaN survives the cache.
    again = weightscope.scan_run(run, methods=["basic_stats"])
    assert again.scanned == []
    assert [a.to_dict() for a in again.alerts] == [a.to_dict() for a in traj.alerts]


def test_alert_rules_can_be_tuned_like_the_callbacks(faulty_traj):
    run, _ = faulty_traj
    traj = weightscope.scan_run(run, methods=["basic_stats"], alerts={"norm_ratio": False}, steps=STEPS[:2])
    assert _fired(traj, "norm_ratio") == [] and traj.steps == STEPS[:2]
    # switched off, not blinded: the x1e3 norm is still measured, and still the file's
    want = np.linalg.norm(hf_weights(run / "checkpoint-4")[SCALED])
    assert traj[4][SCALED]["basic_stats"]["l2_norm"] == pytest.approx(want, rel=1e-9)
    assert traj.drift[4]["previous"][SCALED]["l2_norm_ratio"] > 900
