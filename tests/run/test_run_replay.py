"""Replays read back with their own readers: TensorBoard's EventAccumulator and an offline W&B run file."""

import numpy as np
import pytest
from run_builders import STEPS, callback_readers, copy_run, hf_weights, reference_diff
from safetensors.torch import load_file, save_file

import weightscope
from weightscope.cli.main import main
from weightscope.monitor.naming import drift_name, histogram_name, stat_name, wandb_key, wandb_keys
from weightscope.sinks.jsonl import read_jsonl

readers = callback_readers()
LAYER = "transformer.h.0.mlp.c_fc"
POISONED = "transformer.h.1.attn.c_proj"


@pytest.fixture(scope="module")
def faulty_run(hf_run, tmp_path_factory):
    """The HF run with a NaN planted at step 4."""
    run = copy_run(hf_run, tmp_path_factory.mktemp("replay") / "run")
    path = run / "checkpoint-4" / "model.safetensors"
    tensors = load_file(path)
    tensors[f"{POISONED}.weight"][1, 2] = float("nan")
    path.unlink()
    save_file(tensors, str(path), metadata={"format": "pt"})
    return run


def _weights(run):
    """step -> layer -> float64 matrix, read from the checkpoints with safetensors' numpy API."""
    return {s: hf_weights(run / f"checkpoint-{s}") for s in STEPS}


@pytest.fixture(scope="module")
def traj(faulty_run):
    return weightscope.scan_run(faulty_run, methods=["basic_stats"], cache=False)


def test_tensorboard_replay_has_the_callbacks_tags_at_the_checkpoint_steps(faulty_run, traj, tmp_path, capsys):
    tb = tmp_path / "tb"
    rc = main(["scan", "--model", str(faulty_run), "--methods", "basic_stats", "--no-cache", "--quiet",
               "--tensorboard", str(tb)])
    assert rc == 0
    scalars = readers.tb_scalars(tb)
    weights = _weights(faulty_run)
    norm = scalars[stat_name("l2_norm", LAYER)]
    assert sorted(norm) == STEPS
    for s in STEPS:  # numpy float64 of the checkpoint's own weights (TensorBoard stores float32)
        assert norm[s] == pytest.approx(np.linalg.norm(weights[s][LAYER]), rel=1e-6)
    # Drift exists from the second checkpoint on, as in a live run (nothing to diff at the baseline).
    drift = scalars[drift_name("relative_l2_distance", LAYER)]
    assert sorted(drift) == STEPS[1:]
    for prev, s in zip(STEPS, STEPS[1:]):
        assert drift[s] == pytest.approx(reference_diff(weights[prev][LAYER], weights[s][LAYER])[
            "relative_l2_distance"], rel=1e-6)
    from_start = scalars[drift_name("relative_l2_distance", LAYER, from_start=True)]
    assert from_start[6] == pytest.approx(reference_diff(weights[2][LAYER], weights[6][LAYER])[
        "relative_l2_distance"], rel=1e-6)
    assert scalars["weightscope/nonfinite_layers"] == {2: 0.0, 4: 1.0, 6: 0.0}
    # Every scalar of every record is there, and nothing else.
    expected = {(name, r.step) for r in traj.records for name in r.scalars()}
    assert {(tag, step) for tag, steps in scalars.items() for step in steps} == expected
    texts = readers.tb_texts(tb)
    assert list(texts) == [4] and POISONED in texts[4] and "nan" in texts[4]


def test_offline_wandb_replay_read_back_with_its_steps(faulty_run, traj, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    import wandb

    wandb.teardown()  # an earlier test's wandb singleton would keep its own WANDB_DIR
    rc = main(["scan", "--model", str(faulty_run), "--methods", "basic_stats", "--no-cache", "--quiet",
               "--wandb-project", "replay-test", "--wandb-mode", "offline"])
    assert rc == 0
    wandb.teardown()  # run.finish() returns before the service has written every record; a CLI exit waits
    run_file = readers.find_wandb_file(tmp_path)
    rows = readers.wandb_history(run_file)
    assert [row["weightscope/step"] for row in rows] == STEPS
    weights = _weights(faulty_run)
    for row, s in zip(rows, STEPS):
        assert row[wandb_key(stat_name("l2_norm", LAYER))] == pytest.approx(np.linalg.norm(weights[s][LAYER]),
                                                                            rel=1e-9)
        assert row[wandb_key(stat_name("nan_count", POISONED))] == (1 if s == 4 else 0)
        assert set(row) - {"_step", "_runtime", "_timestamp"} == {*wandb_keys(traj.record(s).scalars()), "weightscope/step"}
    alerts = readers.wandb_alerts(run_file)
    assert [(a.title, a.level) for a in alerts] == [(f"WeightScope: nan in {POISONED} at step 4", "ERROR")]


def test_jsonl_replay_is_the_callbacks_history_format(faulty_run, traj, tmp_path):
    path = tmp_path / "history.jsonl"
    rc = main(["scan", "--model", str(faulty_run), "--methods", "basic_stats", "--no-cache", "--quiet",
               "--jsonl", str(path)])
    assert rc == 0
    records = list(read_jsonl(path))
    assert [(r["step"], r["kind"], r["prev_step"], r["base_step"]) for r in records] == [
        (2, "baseline", None, 2), (4, "periodic", 2, 2), (6, "periodic", 4, 2)]
    assert [(a["rule"], a["layer"], a["step"], a["level"]) for r in records for a in r["alerts"]] == [
        ("nan", POISONED, 4, "ERROR")]
    weights = _weights(faulty_run)
    for rec in records:
        assert rec["layers"][POISONED]["basic_stats"]["nan_count"] == int(np.isnan(weights[rec["step"]][POISONED]).sum())
        assert rec["layers"][LAYER]["basic_stats"]["l2_norm"] == pytest.approx(
            np.linalg.norm(weights[rec["step"]][LAYER]), rel=1e-9)
    assert records[2]["diff_prev"][LAYER]["relative_l2_distance"] == pytest.approx(
        reference_diff(weights[4][LAYER], weights[6][LAYER])["relative_l2_distance"], rel=1e-9)
    # Run again, the file holds this replay alone (a whole history, as --output holds a whole file).
    assert main(["scan", "--model", str(faulty_run), "--methods", "basic_stats", "--quiet", "--jsonl", str(path)]) == 0
    assert list(read_jsonl(path)) == records


def _finite_weights(run, step, layer):
    import numpy as np

    w = load_file(run / f"checkpoint-{step}" / "model.safetensors")[f"{layer}.weight"].double().numpy().ravel()
    return w[np.isfinite(w)]


def test_tensorboard_replay_with_histograms_of_every_layer_at_every_step(faulty_run, traj, tmp_path):
    import numpy as np

    tb = tmp_path / "tb"
    rc = main(["scan", "--model", str(faulty_run), "--methods", "basic_stats", "--no-cache", "--quiet",
               "--tensorboard", str(tb), "--histograms"])
    assert rc == 0
    steps = readers.tb_histogram_steps(tb)
    assert set(steps) == {histogram_name(layer) for layer in traj[2]}
    assert all(sorted(s) == STEPS for s in steps.values())
    for acc in readers.tb_accumulators(tb):
        for tag in acc.Tags().get("histograms", []):
            if tag not in (histogram_name(LAYER), histogram_name(POISONED)):
                continue
            for event in acc.Histograms(tag):
                h = event.histogram_value
                w = _finite_weights(faulty_run, event.step, tag.split("/", 1)[1])  # the NaN is left out
                assert (h.num, h.min, h.max) == (w.size, w.min(), w.max())
                assert h.sum == pytest.approx(w.sum(), rel=1e-9, abs=1e-9)
                assert h.sum_squares == pytest.approx(np.dot(w, w), rel=1e-9)
                counts, edges = np.histogram(w, bins=64, range=(w.min(), w.max()))
                assert list(h.bucket) == counts.tolist()  # bin by bin, in order
                assert list(h.bucket_limit) == pytest.approx(edges[1:].tolist(), rel=1e-12)


def test_histograms_are_cached_with_the_rest(faulty_run, tmp_path, monkeypatch):
    import weightscope.run.trajectory as trajectory

    cache = tmp_path / "cache"
    plain = weightscope.scan_run(faulty_run, methods=["basic_stats"], cache=cache)
    assert all(r.histograms == {} for r in plain.records)
    first = weightscope.scan_run(faulty_run, methods=["basic_stats"], cache=cache, histograms=True)
    w = _finite_weights(faulty_run, 6, LAYER)
    assert first.record(6).histograms[LAYER]["num"] == w.size

    def boom(*args, **kwargs):
        raise AssertionError("histograms recomputed although cached")

    monkeypatch.setattr(trajectory, "histogram_checkpoint", boom)
    again = weightscope.scan_run(faulty_run, methods=["basic_stats"], cache=cache, histograms=True)
    assert [r.histograms for r in again.records] == [r.histograms for r in first.records]
    with pytest.raises(weightscope.ConfigError, match="histogram_bins"):
        weightscope.scan_run(faulty_run, methods=["basic_stats"], cache=False, histograms=True, histogram_bins=1)
