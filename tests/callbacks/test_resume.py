"""Resume from a Lightning checkpoint: the callback's state travels in it and the baseline is found again."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

L = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from weightscope.callbacks import WeightScopeCallback  # noqa: E402
from weightscope.sinks.jsonl import read_jsonl  # noqa: E402

from lightning_module import TinyModule  # noqa: E402


def fit(tmp, out, max_steps, ckpt_path=None, callbacks=()):
    cb = WeightScopeCallback(every_n_steps=5, methods=["basic_stats"], output_dir=out, max_pending=64)
    trainer = L.Trainer(
        max_steps=max_steps, callbacks=[cb, *callbacks], logger=False, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp,
    )
    module = TinyModule()
    trainer.fit(module, ckpt_path=ckpt_path)
    return cb, module


def test_resume_restores_state_and_baseline(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=10, save_top_k=-1)
    first, module = fit(tmp_path, tmp_path / "first", 10, callbacks=[ckpt])
    baseline = load_file(tmp_path / "first" / "weightscope_baseline.safetensors")
    assert set(baseline) == {"net.inp", "net.mid", "net.out", "net.frozen"}
    [path] = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    state = torch.load(path, weights_only=False)["callbacks"][first.state_key]
    assert state["last_step"] == 10 and state["base_step"] == 0

    second, module2 = fit(tmp_path, tmp_path / "second", 20, ckpt_path=str(path))
    restored = second.monitor.state_dict()
    assert restored["base_step"] == 0 and restored["last_step"] == 20
    drift_before = state["alert_state"]["drift"].get("net.inp", [])
    assert restored["alert_state"]["drift"]["net.inp"][: len(drift_before)] == drift_before

    records = list(read_jsonl(tmp_path / "second" / "weightscope.jsonl"))
    # The resume snapshot at step 10 was logged before the checkpoint: analysed, not charted twice.
    assert [r["step"] for r in records] == [15, 20]
    last = module2.net.inp.weight.detach().double().numpy()
    base = baseline["net.inp"].double().numpy()
    want = np.linalg.norm(last - base) / np.linalg.norm(base)
    assert records[-1]["diff_base"]["net.inp"]["relative_l2_distance"] == pytest.approx(want, rel=1e-9)
    assert records[-1]["base_step"] == 0 and records[0]["prev_step"] == 10
