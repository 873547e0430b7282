"""The cache, proven by counting the analyses and diffs actually run (never by timing)."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from run_builders import STEPS, copy_run, hf_weights
from safetensors.torch import load_file, save_file

import weightscope
import weightscope.core.engine as engine
import weightscope.monitor.analysis as analysis
from weightscope.run.cache import CACHE_DIRNAME
from weightscope.run.discovery import discover_run
from weightscope.run.identity import checkpoint_identity


@pytest.fixture
def counts(monkeypatch):
    """How many tensors were analysed and how many tensor pairs diffed, by the shared engine code."""
    seen = {"analysed": 0, "diffed": 0}

    def counting(fn, key):
        def wrapper(*args, **kwargs):
            seen[key] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(engine, "analyze_tensor", counting(engine.analyze_tensor, "analysed"))
    monkeypatch.setattr(analysis, "diff_metrics", counting(analysis.diff_metrics, "diffed"))

    def take():
        out = dict(seen)
        seen.update(analysed=0, diffed=0)
        return out

    return take


def _add_checkpoint(run, step, scale=1.01):
    """A new, different checkpoint as the Trainer would leave it (copied from the last, weights nudged)."""
    src, dst = run / f"checkpoint-{STEPS[-1]}", run / f"checkpoint-{step}"
    shutil.copytree(src, dst)
    tensors = {k: v * scale for k, v in load_file(src / "model.safetensors").items()}
    (dst / "model.safetensors").unlink()
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_second_run_scans_nothing_and_a_new_checkpoint_scans_one(hf_run, tmp_path, counts):
    run = copy_run(hf_run, tmp_path / "run")
    layers = len(hf_weights(run / "checkpoint-2"))
    first = weightscope.scan_run(run, methods=["basic_stats", "spectral"])
    assert counts() == {"analysed": 3 * layers, "diffed": 3 * layers}  # 2->4 (= first), 4->6, 2->6
    assert first.scanned == STEPS and first.cache_dir == run / CACHE_DIRNAME

    again = weightscope.scan_run(run, methods=["basic_stats", "spectral"])
    assert counts() == {"analysed": 0, "diffed": 0}
    assert again.scanned == [] and again.compared == 0
    assert again.to_json_dict() == first.to_json_dict()

    _add_checkpoint(run, 8)
    third = weightscope.scan_run(run, methods=["basic_stats", "spectral"])
    assert counts() == {"analysed": layers, "diffed": 2 * layers}  # 6->8 and 2->8
    assert third.steps == [*STEPS, 8] and third.scanned == [8]
    # Cached numbers are the numbers: the new drift is 1 % everywhere by construction.
    for metrics in third.drift[8]["previous"].values():
        assert metrics["l2_norm_ratio"] == pytest.approx(1.01, rel=1e-6)

    # One more method scans that method only, on every checkpoint; nothing is diffed again.
    more = weightscope.scan_run(run, methods=["basic_stats", "spectral", "quantization"])
    assert counts() == {"analysed": 4 * layers, "diffed": 0}
    assert more.scanned == [*STEPS, 8] and "quantization" in more[8][next(iter(more[8]))]
    # Served from the cache (a subset) or merged with it, results keep what the tensors are stored as.
    weights = load_file(run / "checkpoint-8" / "model.safetensors")  # as stored: float32
    for results in (again[STEPS[0]], more[8]):
        for layer, per in results.items():
            t = weights[f"{layer}.weight"] if f"{layer}.weight" in weights else weights[layer]
            assert results.stored_shapes[layer] == list(t.shape), layer
            assert results.stored_dtypes[layer] == str(t.dtype).removeprefix("torch."), layer


def test_cache_dir_elsewhere_and_no_cache(hf_run, tmp_path, counts):
    run = copy_run(hf_run, tmp_path / "run")
    layers = len(hf_weights(run / "checkpoint-2"))
    weightscope.scan_run(run, methods="basic_stats", cache=tmp_path / "elsewhere", last=2)
    assert not (run / CACHE_DIRNAME).exists() and any((tmp_path / "elsewhere").iterdir())
    assert counts() == {"analysed": 2 * layers, "diffed": layers}  # steps 4 and 6; 4->6 (4 is the first)
    cached = sorted((tmp_path / "elsewhere").rglob("*"))
    again = weightscope.scan_run(run, methods="basic_stats", cache=tmp_path / "elsewhere", last=2)
    assert counts() == {"analysed": 0, "diffed": 0} and again.scanned == []
    fresh = weightscope.scan_run(run, methods="basic_stats", cache=False, last=2)
    assert counts() == {"analysed": 2 * layers, "diffed": layers} and fresh.scanned == [4, 6]
    assert sorted((tmp_path / "elsewhere").rglob("*")) == cached and not (run / CACHE_DIRNAME).exists()
    # served from the cache elsewhere or computed afresh: the same numbers, those of the files
    assert again.to_json_dict()["checkpoints"] == fresh.to_json_dict()["checkpoints"]
    for s in (4, 6):
        for layer, w in hf_weights(run / f"checkpoint-{s}").items():
            assert again[s][layer]["basic_stats"]["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-9)


def _zero_size(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"")


def _truncated(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])


def _index_names_absent_shard(ckpt):
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    names = list(tensors)
    half = len(names) // 2
    save_file({k: tensors[k] for k in names[:half]}, str(ckpt / "model-00001-of-00002.safetensors"))
    weight_map = {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(names)}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("damage", [_zero_size, _truncated, _index_names_absent_shard])
def test_half_written_checkpoint_skipped_then_picked_up(hf_run, tmp_path, counts, caplog, damage):
    run = copy_run(hf_run, tmp_path / "run")
    weightscope.scan_run(run, methods="basic_stats")
    ckpt = _add_checkpoint(run, 8)
    complete = (ckpt / "model.safetensors").read_bytes()
    damage(ckpt)
    counts()
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        traj = weightscope.scan_run(run, methods="basic_stats")
    assert traj.steps == STEPS and list(traj.skipped) == [str(ckpt)]
    assert counts() == {"analysed": 0, "diffed": 0}
    assert any("checkpoint-8" in r.getMessage() and "incomplete" in r.getMessage() for r in caplog.records)

    # The writer finishes: the next run scans that one checkpoint.
    for leftover in ckpt.glob("model*"):
        leftover.unlink()
    (ckpt / "model.safetensors").write_bytes(complete)
    traj = weightscope.scan_run(run, methods="basic_stats")
    assert traj.steps == [*STEPS, 8] and traj.scanned == [8] and traj.skipped == {}


def test_lightning_checkpoint_still_being_written(lightning_run, tmp_path, counts):
    run = copy_run(lightning_run[0], tmp_path / "run")
    data = (run / "epoch=0-step=6.ckpt").read_bytes()
    (run / "epoch=0-step=8.ckpt").write_bytes(data[: len(data) - 100])  # no zip directory yet
    traj = weightscope.scan_run(run, methods="basic_stats")
    assert traj.steps == STEPS and list(traj.skipped) == [str(run / "epoch=0-step=8.ckpt")]
    (run / "epoch=0-step=8.ckpt").write_bytes(data)
    counts()
    traj = weightscope.scan_run(run, methods="basic_stats")
    assert traj.steps == [*STEPS, 8] and traj.scanned == [8]
    assert counts()["analysed"] == len(torch.load(run / "epoch=0-step=6.ckpt", weights_only=True)["state_dict"]) // 2


def test_identity_tells_apart_checkpoints_that_share_size_header_and_mtime(hf_run, tmp_path):
    """Checkpoints of one model share header and size; files written in one clock tick share an mtime."""
    run = copy_run(hf_run, tmp_path / "run")
    files = [run / f"checkpoint-{s}" / "model.safetensors" for s in STEPS]
    for f in files:
        os.utime(f, ns=(10**18, 10**18))
    cps = discover_run(run).checkpoints
    assert len({checkpoint_identity(cp) for cp in cps}) == len(STEPS)
    # Rewritten in place, same size, same mtime: still a new identity.
    before = checkpoint_identity(cps[0])
    _rewrite_same_size(files[0])
    os.utime(files[0], ns=(10**18, 10**18))
    assert checkpoint_identity(cps[0]) != before


def _rewrite_same_size(path):
    tensors = {k: v.flip(0) if v.ndim else v for k, v in load_file(path).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
