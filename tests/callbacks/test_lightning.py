"""A real Lightning Trainer with TensorBoardLogger and an offline WandbLogger, read back afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

L = pytest.importorskip("lightning.pytorch")
pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger  # noqa: E402

from weightscope.callbacks import WeightScopeCallback  # noqa: E402
from weightscope.monitor.naming import wandb_key  # noqa: E402
from weightscope.sinks.jsonl import read_jsonl  # noqa: E402

from lightning_module import TinyModule  # noqa: E402
from numpy_reference import REFERENCES, condition_number, global_drift  # noqa: E402
from callback_readers import (find_wandb_file, tb_accumulators, tb_histogram_steps, tb_scalars, tb_texts,  # noqa: E402
                              wandb_alerts, wandb_history)

EVERY = 5
MAX_STEPS = 30
METHODS = ["basic_stats", "spectral", "quantization"]


class OnStep(L.Callback):
    """Calls ``fn(step, module)`` once per optimizer step (batch end), before the callbacks after it."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.seen = None

    def on_train_start(self, trainer, pl_module):
        self.fn(trainer.global_step, pl_module, start=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.seen:
            self.seen = trainer.global_step
            self.fn(trainer.global_step, pl_module)


def plant_faults(step, module, start=False):
    with torch.no_grad():
        if step == 10:
            module.net.mid.weight.mul_(1e3)  # norm ratio 1000 between snapshots 5 and 10
        if step == 15:
            module.net.frozen.weight.add_(0.1)  # a requires_grad=False layer changes
            module.net.out.weight[0, 0] = float("nan")  # NaN: ERROR, and stop_on=["nan"]


def trainer_for(tmp_path, callbacks, loggers, max_steps, **kw):
    return L.Trainer(
        max_steps=max_steps, callbacks=callbacks, logger=loggers, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        enable_checkpointing=False, default_root_dir=tmp_path, **kw,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import wandb

    tmp = tmp_path_factory.mktemp("lightning")
    saved: dict[int, dict[str, torch.Tensor]] = {}

    def record(step, module, start=False):
        if start or step % EVERY == 0:
            saved[step] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    # max_pending: a tiny model trains faster than it is analysed; queue rather than skip here.
    cb = WeightScopeCallback(every_n_steps=EVERY, methods=METHODS, log_histograms=True, stop_on=["nan"],
                             max_pending=64, full_scan_every=1)

    def wait_for_analysis(step, module, start=False):
        if step == 15:  # so that the stop lands at a known step (16) rather than whenever analysis ends
            cb.monitor.flush()

    tb = TensorBoardLogger(tmp / "tb", name="run")
    wb = WandbLogger(project="weightscope-test", save_dir=str(tmp), offline=True)
    # accumulate_grad_batches=2: two batches per optimizer step, one snapshot per step.
    trainer = trainer_for(tmp, [OnStep(plant_faults), OnStep(record), cb, OnStep(wait_for_analysis)],
                          [tb, wb], MAX_STEPS,
                          accumulate_grad_batches=2)
    trainer.fit(TinyModule())
    wandb.finish()
    final_step = trainer.global_step
    module_state = {k: v.detach().clone() for k, v in trainer.lightning_module.state_dict().items()}
    saved.setdefault(final_step, module_state)
    return {
        "tmp": tmp, "cb": cb, "trainer": trainer, "saved": saved, "final_step": final_step,
        "tb_dir": tb.log_dir, "wandb_file": find_wandb_file(tmp / "wandb"),
        "jsonl": list(read_jsonl(cb.monitor.output_dir / "weightscope.jsonl")),
    }


def _layer(key: str) -> str:
    return key.removesuffix(".weight")


def test_snapshot_steps_line_up_with_the_trainer(run):
    final = run["final_step"]
    assert final == 15  # stop_on=["nan"]: the alert at 15 stops training at the next batch
    steps = [rec["step"] for rec in run["jsonl"]]
    assert steps[0] == 0 and run["jsonl"][0]["kind"] == "baseline"
    assert steps == sorted(steps) and steps[-1] == final
    assert set(steps) >= {0, 5, 10, 15}
    assert all(s % EVERY == 0 for s in steps[:-1])
    tb = tb_scalars(run["tb_dir"])
    assert sorted(tb["weights_l2_norm/net.inp"]) == steps
    assert sorted(tb["drift_relative_l2_distance/net.inp"]) == steps[1:]
    rows = [r for r in wandb_history(run["wandb_file"]) if "weights_l2_norm/net/inp" in r]
    assert [r["trainer/global_step"] for r in rows] == steps


def test_wandb_keys_have_no_dots_tensorboard_keeps_the_layer_names(run):
    # W&B reads a dot in a metric definition as nesting: a dotted key would lose its step axis.
    rows = wandb_history(run["wandb_file"])
    ours = {k for r in rows for k in r if k.split("/")[0].startswith(("weights", "drift"))}
    assert {"weights_l2_norm/net/inp", "drift_relative_l2_distance/net/mid", "weights_histogram/net/out/values"} <= ours
    assert not [k for k in ours if "." in k]
    tb = tb_scalars(run["tb_dir"])
    assert {wandb_key(k) for k in tb if k.startswith("weights_")} == {
        k for k in ours if k.startswith("weights_") and not k.startswith("weights_histogram")}
    assert "weights_l2_norm/net.inp" in tb


def test_logged_values_equal_numpy_float64_of_the_weights(run):
    tb = tb_scalars(run["tb_dir"])
    rows = {r["trainer/global_step"]: r for r in wandb_history(run["wandb_file"]) if "weights_l2_norm/net/inp" in r}
    checked = set()
    for rec in run["jsonl"]:
        step = rec["step"]
        weights = {_layer(k): v for k, v in run["saved"][step].items() if k.endswith("weight")}
        assert set(rec["layers"]) == set(weights)
        for layer, w in weights.items():
            for (method, stat), reference in REFERENCES.items():
                want = reference(w)
                name = f"weights_{stat}/{layer}"
                if want is None:  # the NaN planted in net.out at step 15: no spectrum
                    assert (step, layer) == (15, "net.out") and rec["layers"][layer][method][stat] is None
                    continue
                assert rec["layers"][layer][method][stat] == pytest.approx(want, rel=1e-9), (step, name)
                assert rows[step][wandb_key(name)] == pytest.approx(want, rel=1e-9), (step, name)
                assert tb[name][step] == pytest.approx(want, rel=1e-6), (step, name)  # TB stores float32
                checked.add((step, layer, stat))
    # every snapshot step, every layer (net.out's spectrum at 15 aside), every statistic
    assert len(checked) == 4 * 4 * 4 - 1


def test_drift_matches_numpy_float64(run):
    tb = tb_scalars(run["tb_dir"])
    saved = run["saved"]
    checked = []
    for rec in run["jsonl"][1:]:
        step, prev = rec["step"], rec["prev_step"]
        for layer in ("net.inp", "net.mid"):
            a = saved[prev][f"{layer}.weight"].double().numpy()
            b = saved[step][f"{layer}.weight"].double().numpy()
            base = saved[0][f"{layer}.weight"].double().numpy()
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                continue
            checked.append((prev, step, layer))
            rel = np.linalg.norm(b - a) / np.linalg.norm(a)
            cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
            assert rec["diff_prev"][layer]["relative_l2_distance"] == pytest.approx(rel, rel=1e-9)
            assert rec["diff_prev"][layer]["cosine_similarity"] == pytest.approx(cos, rel=1e-9)
            assert rec["diff_base"][layer]["l2_norm_ratio"] == pytest.approx(
                np.linalg.norm(b) / np.linalg.norm(base), rel=1e-9)
            assert tb[f"drift_relative_l2_distance/{layer}"][step] == pytest.approx(rel, rel=1e-5)
    assert [(p, s) for p, s, _ in checked] == [(0, 5), (0, 5), (5, 10), (5, 10), (10, 15), (10, 15)]


def test_planted_faults_raise_alerts_in_every_sink(run):
    by_step = {rec["step"]: {(a["rule"], a["layer"]) for a in rec["alerts"]} for rec in run["jsonl"]}
    assert ("norm_ratio", "net.mid") in by_step[10]
    assert ("frozen_changed", "net.frozen") in by_step[15]
    assert ("nan", "net.out") in by_step[15]
    assert not any(rule == "nan" for rule, _ in by_step[5] | by_step[10])
    texts = tb_texts(run["tb_dir"])
    assert "norm_ratio" in texts[10] and "net.mid" in texts[10]
    assert "nan" in texts[15] and "frozen_changed" in texts[15]
    titles = [a.title for a in wandb_alerts(run["wandb_file"])]
    assert any("norm_ratio" in t and "net.mid" in t and "step 10" in t for t in titles)
    assert any(t.startswith("WeightScope: nan in net.out at step 15") for t in titles)
    levels = {a.title: a.level for a in wandb_alerts(run["wandb_file"])}
    assert levels["WeightScope: nan in net.out at step 15"] == "ERROR"
    assert levels["WeightScope: norm_ratio in net.mid at step 10"] == "WARN"
    assert run["cb"].monitor.should_stop


def test_histograms_and_summary_scalars(run):
    steps = [rec["step"] for rec in run["jsonl"]]
    assert steps == [0, 5, 10, 15]
    weights = {s: {_layer(k): v for k, v in run["saved"][s].items() if k.endswith("weight")} for s in steps}
    hist = tb_histogram_steps(run["tb_dir"])
    assert {tag: sorted(s) for tag, s in hist.items()} == {f"weights_histogram/{layer}": steps for layer in weights[0]}
    seen = 0
    for acc in tb_accumulators(run["tb_dir"]):
        for event in (acc.Histograms("weights_histogram/net.mid") if "weights_histogram/net.mid" in
                      acc.Tags().get("histograms", []) else []):
            w = weights[event.step]["net.mid"].double().numpy().ravel()
            h = event.histogram_value
            assert (h.num, h.min, h.max) == (w.size, w.min(), w.max()), event.step
            assert h.sum == pytest.approx(w.sum(), rel=1e-9, abs=1e-9) and h.sum_squares == pytest.approx(w @ w, rel=1e-9)
            seen += 1
    assert seen == len(steps)
    tb = tb_scalars(run["tb_dir"])
    # The largest condition number over the layers whose spectrum is defined (net.out holds a NaN at 15).
    want = {s: max(c for w in weights[s].values() if (c := condition_number(w)) is not None) for s in steps}
    assert tb["weightscope/max_condition_number"] == pytest.approx(want, rel=1e-6)
    # Global drift: the change of all weights at once, relative to the previous snapshot's.
    drift = tb["weightscope/global_drift"]
    assert sorted(drift) == steps[1:]
    for prev, step in ((0, 5), (5, 10)):
        assert drift[step] == pytest.approx(global_drift(weights[prev], weights[step]), rel=1e-6), step
    # Layers alerting: 1 at step 10 (net.mid x1e3), 2 at 15 (net.out NaN, net.frozen changed).
    alerting = {rec["step"]: float(len({a["layer"] for a in rec["alerts"]})) for rec in run["jsonl"]}
    assert tb["weightscope/layers_alerting"] == alerting
    assert (alerting[0], alerting[10], alerting[15]) == (0, 1, 2)
    stats = run["cb"].monitor.stats
    assert stats.snapshots == len(run["jsonl"]) == len(stats.blocking_s)
    assert stats.max_blocking_s < 1.0


@pytest.mark.parametrize("max_steps, steps", [(12, [0, 5, 10, 12]), (10, [0, 5, 10])])
def test_the_last_step_is_a_full_final_snapshot_even_when_periodic_ones_are_thinned(tmp_path, max_steps, steps):
    # full_scan_every=1000: every periodic snapshot is a cheap one (basic_stats + drift).
    cb = WeightScopeCallback(every_n_steps=EVERY, methods=METHODS, full_scan_every=1000, max_pending=64)
    trainer_for(tmp_path, [cb], False, max_steps).fit(TinyModule())
    records = list(read_jsonl(cb.monitor.output_dir / "weightscope.jsonl"))
    assert [r["step"] for r in records] == steps  # one record per step: no periodic + final pair at the end
    assert [r["kind"] for r in records] == ["baseline"] + ["periodic"] * (len(steps) - 2) + ["final"]
    full = [r["step"] for r in records if "spectral" in r["layers"]["net.inp"]]
    assert full == [0, steps[-1]]


def test_unknown_keyword_names_the_callback_and_the_keyword():
    from weightscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"WeightScopeCallback got an unexpected keyword argument "
                                          r"'stop_onn' \(did you mean 'stop_on'\?\)") as info:
        WeightScopeCallback(stop_onn=["nan"])
    assert "WeightMonitor" not in str(info.value)
    with pytest.raises(ConfigError, match="'tensorboard'"):  # the HF callback's option, not this one's
        WeightScopeCallback(tensorboard=False)
    assert WeightScopeCallback(full_scan_every=3, alert_window=4).monitor.config.alert_window == 4
