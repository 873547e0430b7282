"""A real Hugging Face Trainer (tiny GPT-2 from a config, synthetic data) with the callback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("wandb")
pytest.importorskip("tensorboard")

from weightscope.callbacks import WeightScopeTrainerCallback  # noqa: E402
from weightscope.callbacks.huggingface import tensorboard_dir  # noqa: E402
from weightscope.monitor.naming import wandb_key  # noqa: E402
from weightscope.sinks.jsonl import read_jsonl  # noqa: E402

from callback_readers import find_wandb_file, tb_scalars, tb_texts, wandb_alerts, wandb_history  # noqa: E402
from numpy_reference import REFERENCES, l2_norm  # noqa: E402

EVERY = 5
METHODS = ["basic_stats", "spectral"]
LAYER = "transformer.h.0.mlp.c_fc"


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, length: int = 16, vocab: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class Hooks(transformers.TrainerCallback):
    """Plants the fault at step 10 and keeps a copy of the weights at every snapshot step."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, torch.Tensor]] = {}

    def _keep(self, step, model):
        self.saved[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_train_begin(self, args, state, control, model=None, **kw):
        self._keep(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == 10:
            with torch.no_grad():
                model.get_parameter(f"{LAYER}.weight").mul_(1e3)
        if state.global_step % EVERY == 0:
            self._keep(state.global_step, model)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import wandb

    tmp = tmp_path_factory.mktemp("hf")
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(tmp / "out"), max_steps=20, per_device_train_batch_size=8, learning_rate=1e-3,
        report_to=["wandb"], logging_steps=5, save_strategy="no", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, gradient_accumulation_steps=2,
    )
    hooks = Hooks()
    cb = WeightScopeTrainerCallback(every_n_steps=EVERY, methods=METHODS, max_pending=64,
                                    full_scan_every=1)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TokenData(), callbacks=[hooks, cb])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_DIR", str(tmp))  # HF's WandbCallback starts the run: keep it in this test's folder
        mp.setenv("WANDB_PROJECT", "weightscope-test")
        trainer.train()
        # wandb keeps the folder of its first setup in this process: ask the run where it wrote
        run_dir = Path(wandb.run.dir).parent
        wandb.finish()
    return {
        "tmp": tmp, "cb": cb, "hooks": hooks, "args": args, "trainer": trainer,
        "jsonl": list(read_jsonl(tmp / "out" / "weightscope.jsonl")),
        "wandb_file": find_wandb_file(run_dir),
    }


def test_steps_and_values_match_the_trainer_and_numpy(run):
    steps = [r["step"] for r in run["jsonl"]]
    assert steps == [0, 5, 10, 15, 20] and run["trainer"].state.global_step == 20
    assert run["jsonl"][-1]["kind"] == "final"  # taken at the last step, not again at train end
    tb = tb_scalars(tensorboard_dir(run["args"]).parent)
    rows = {r["train/global_step"]: r for r in wandb_history(run["wandb_file"]) if wandb_key(f"weights_l2_norm/{LAYER}") in r}
    assert sorted(rows) == steps
    for rec in run["jsonl"]:
        step = rec["step"]
        w = run["hooks"].saved[step][f"{LAYER}.weight"]
        for stat, method in (("l2_norm", "basic_stats"), ("condition_number", "spectral")):
            want = REFERENCES[method, stat](w)  # numpy float64 of the weights the Trainer had at that step
            assert math.isfinite(want)
            assert rec["layers"][LAYER][method][stat] == pytest.approx(want, rel=1e-9)
            assert rows[step][wandb_key(f"weights_{stat}/{LAYER}")] == pytest.approx(want, rel=1e-9)
            assert tb[f"weights_{stat}/{LAYER}"][step] == pytest.approx(want, rel=1e-6)


def test_planted_fault_alerts_in_wandb_tensorboard_and_jsonl(run):
    alerts = {(a["rule"], a["layer"]) for rec in run["jsonl"] if rec["step"] == 10 for a in rec["alerts"]}
    assert ("norm_ratio", LAYER) in alerts
    # ... at step 10 only, with the norm ratio numpy has between the weights at 5 and at 10 (x1e3 planted)
    fired = [a for rec in run["jsonl"] for a in rec["alerts"] if a["layer"] == LAYER]
    assert [(a["rule"], a["step"]) for a in fired] == [("norm_ratio", 10)]
    saved = run["hooks"].saved
    want = l2_norm(saved[10][f"{LAYER}.weight"]) / l2_norm(saved[5][f"{LAYER}.weight"])
    assert want > 500 and fired[0]["value"] == pytest.approx(want, rel=1e-9)
    texts = tb_texts(tensorboard_dir(run["args"]).parent)
    assert "norm_ratio" in texts[10] and LAYER in texts[10]
    titles = [a.title for a in wandb_alerts(run["wandb_file"])]
    assert f"WeightScope: norm_ratio in {LAYER} at step 10" in titles


def test_tensorboard_folder_is_the_trainers(run):
    folder = tensorboard_dir(run["args"])
    assert folder.parent == run["tmp"] / "out" / "runs"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("+")[0].split(".")[:2])


# Trainers before 4.49 torch.load their own rng_state.pth under torch's weights_only default (2.6+),
# which refuses the numpy arrays in it: resume fails inside transformers, before any callback runs.
@pytest.mark.skipif(_version(transformers.__version__) < (4, 49) and _version(torch.__version__) >= (2, 6),
                    reason="transformers < 4.49 cannot resume its own checkpoints under torch >= 2.6")
def test_resume_from_an_hf_checkpoint(tmp_path):
    import json

    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)

    def train(max_steps, resume=None):
        torch.manual_seed(0)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=8, save_steps=10,
            report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="steps",
        )
        cb = WeightScopeTrainerCallback(every_n_steps=5, methods="basic_stats", max_pending=64, tensorboard=False)
        trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args,
                                       train_dataset=TokenData(), callbacks=[cb])
        trainer.train(resume_from_checkpoint=resume)
        return cb

    first = train(10)
    saved = json.loads((tmp_path / "checkpoint-10" / "weightscope_state.json").read_text())
    assert saved["last_step"] == 10 and saved["base_step"] == 0
    # HF's own callback-state route: JSON-able arguments that rebuild an equivalent callback.
    exported = json.loads(json.dumps(first.state()))
    rebuilt = WeightScopeTrainerCallback(**exported["args"])
    assert rebuilt.monitor.config.settings() == first.monitor.config.settings()
    # ... and the function it cannot put in JSON comes back through the token.
    def on_alert(alert):
        return None

    with_fn = WeightScopeTrainerCallback(every_n_steps=5, on_alert=on_alert)
    rebuilt = WeightScopeTrainerCallback(**json.loads(json.dumps(with_fn.state()))["args"])
    assert rebuilt.monitor.config.on_alert is on_alert
    assert rebuilt.monitor.config.settings() == with_fn.monitor.config.settings()

    second = train(20, resume=str(tmp_path / "checkpoint-10"))
    assert second.monitor.state_dict()["base_step"] == 0
    drift = saved["alert_state"]["drift"]["transformer.h.0.mlp.c_fc"]
    assert second.monitor.state_dict()["alert_state"]["drift"]["transformer.h.0.mlp.c_fc"][: len(drift)] == drift
    steps = [r["step"] for r in read_jsonl(tmp_path / "weightscope.jsonl")]
    assert steps == [0, 5, 10, 15, 20]


class SlowStart(transformers.TrainerCallback):
    """Takes over a second in on_train_begin, as HF's WandbCallback may: the clock moves on to a new second
    between HF's TensorBoard integration choosing its folder and WeightScope choosing its own."""

    def on_train_begin(self, args, state, control, **kw):
        import time

        time.sleep(1.1)


def _events_by_folder(runs: Path) -> dict[Path, dict[str, set[str]]]:
    """folder -> event file name -> every tag in it (read back with TensorBoard's EventAccumulator)."""
    from callback_readers import tb_accumulators

    out: dict[Path, dict[str, set[str]]] = {}
    for folder in sorted(p for p in runs.iterdir() if p.is_dir()):
        for events, acc in zip(sorted(folder.glob("events.out.tfevents.*")), tb_accumulators(folder)):
            out.setdefault(folder, {})[events.name] = {t for tags in acc.Tags().values()
                                                       if isinstance(tags, list) for t in tags}
    return out


# "writer": WeightScope reads the folder off HF's TensorBoardCallback. "event files": a transformers where the
# callback cannot be reached; the newest event file this process wrote under output_dir/runs tells the folder.
@pytest.mark.parametrize("route", ["writer", "event files"])
def test_tensorboard_events_share_hf_folder_when_wandb_is_slow(tmp_path, monkeypatch, route):
    import wandb

    import weightscope.callbacks.huggingface as hf

    if route == "event files":
        monkeypatch.setattr(hf, "_trainer_callbacks", lambda *a, **k: [])
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "weightscope-test")
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=10, per_device_train_batch_size=8, logging_steps=5,
        report_to=["tensorboard", "wandb"], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    cb = WeightScopeTrainerCallback(every_n_steps=5, methods="basic_stats", max_pending=64)
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args,
                                   train_dataset=TokenData(), callbacks=[SlowStart(), cb])
    try:
        trainer.train()
    finally:
        wandb.finish()

    folders = _events_by_folder(tmp_path / "out" / "runs")
    assert len(folders) == 1, folders  # one run, one folder: HF's and WeightScope's events side by side
    (folder, files), = folders.items()
    assert cb.tensorboard_log_dir == folder
    hf_files = [name for name, tags in files.items() if "train/loss" in tags]
    ours = [name for name, tags in files.items() if f"weights_l2_norm/{LAYER}" in tags]
    assert hf_files and ours and set(hf_files).isdisjoint(ours)
    assert sorted(tb_scalars(folder)[f"weights_l2_norm/{LAYER}"]) == [0, 5, 10]


def test_unknown_keyword_names_the_callback_and_the_keyword():
    from weightscope.errors import ConfigError

    with pytest.raises(ConfigError, match=r"WeightScopeTrainerCallback got an unexpected keyword argument "
                                          r"'evry_n_steps' \(did you mean 'every_n_steps'\?\)") as info:
        WeightScopeTrainerCallback(evry_n_steps=5)
    assert "WeightMonitor" not in str(info.value) and "tensorboard" in str(info.value)
    with pytest.raises(ConfigError, match="'no_such_setting'"):
        WeightScopeTrainerCallback(every_n_steps=5, no_such_setting=1)
    # WeightMonitor's own settings still pass through
    assert WeightScopeTrainerCallback(full_scan_every=3, alert_window=4).monitor.config.alert_window == 4


def test_callback_state_rebuilds_the_analysis_thread_settings_too():
    import json

    cb = WeightScopeTrainerCallback(every_n_steps=7, priority="idle", analysis_threads=2, tensorboard=False)
    rebuilt = WeightScopeTrainerCallback(**json.loads(json.dumps(cb.state()))["args"])
    assert (rebuilt.monitor.config.priority, rebuilt.monitor.config.analysis_threads) == ("idle", 2)
    assert (rebuilt.monitor._worker._priority, rebuilt.monitor._worker._threads) == ("idle", 2)  # what runs
