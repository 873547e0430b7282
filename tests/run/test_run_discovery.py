import json
import os
import shutil

import pytest
import torch
from run_builders import STEPS, copy_run
from safetensors.torch import save_file

from weightscope.errors import ConfigError, SourceError
from weightscope.run.discovery import discover_run, is_run_folder, select_checkpoints, step_from_name


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("checkpoint-500", 500),
        ("epoch=0-step=100.ckpt", 100),
        ("epoch=3-step=1200-v1.ckpt", 1200),
        ("step=7.ckpt", 7),
        ("step_500.pt", 500),
        ("step-500.safetensors", 500),
        ("global_step2000.pt", 2000),
        ("model-iter-3.bin", 3),
        ("model_1500.safetensors", 1500),
        ("ckpt-250.pth", 250),
        ("weights.12.pt", 12),
        # not steps: a shard, no number, an epoch without a step, a word that merely starts with "step"
        ("model-00001-of-00003.safetensors", None),
        ("model.safetensors", None),
        ("last.ckpt", None),
        ("epoch=3.ckpt", None),
        ("stepwise.pt", None),
    ],
)
def test_step_from_name(name, step):
    assert step_from_name(name) == step


def test_hf_trainer_run_in_step_order(hf_run):
    listing = discover_run(hf_run)
    assert listing.steps == STEPS
    assert [cp.path.name for cp in listing.checkpoints] == [f"checkpoint-{s}" for s in STEPS]
    assert {cp.step_from for cp in listing.checkpoints} == {"name"}
    # The Trainer's own record of each checkpoint's step agrees with the name.
    for cp in listing.checkpoints:
        assert json.loads((cp.path / "trainer_state.json").read_text())["global_step"] == cp.step
    # Optimizer / RNG / scheduler state next to the weights is not a weight file.
    assert [p.name for p in listing.checkpoints[0].weight_files()] == ["model.safetensors"]


def test_one_checkpoint_folder_is_a_model_not_a_run(hf_run):
    assert is_run_folder(hf_run)
    assert not is_run_folder(hf_run / "checkpoint-2")
    assert not is_run_folder(hf_run / "checkpoint-2" / "model.safetensors")
    with pytest.raises(SourceError, match="not a run folder"):
        discover_run(hf_run / "checkpoint-2")


def test_lightning_run_and_last_ckpt_folded_into_its_step(lightning_run):
    run, _ = lightning_run
    listing = discover_run(run)
    assert listing.steps == STEPS
    assert [cp.path.name for cp in listing.checkpoints] == [f"epoch=0-step={s}.ckpt" for s in STEPS]
    # last.ckpt holds global_step 6 as well: the named file wins, last.ckpt is reported, not scanned twice.
    assert list(listing.ignored) == [run / "last.ckpt"]
    assert "same step 6" in listing.ignored[run / "last.ckpt"]


def test_lightning_global_step_when_names_have_none(lightning_run, tmp_path):
    run, _ = lightning_run
    # Names that say nothing, written in an order unrelated to the steps.
    for new, step in (("zeta.ckpt", 2), ("alpha.ckpt", 4), ("mid.ckpt", 6)):
        shutil.copy(run / f"epoch=0-step={step}.ckpt", tmp_path / new)
    listing = discover_run(tmp_path)
    assert listing.steps == STEPS
    assert [cp.path.name for cp in listing.checkpoints] == ["zeta.ckpt", "alpha.ckpt", "mid.ckpt"]
    assert {cp.step_from for cp in listing.checkpoints} == {"global_step"}


def test_modification_time_when_nothing_names_a_step(tmp_path):
    for i, name in enumerate(["gamma", "alpha", "beta"]):
        path = tmp_path / f"{name}.safetensors"
        save_file({"w": torch.full((2, 2), float(i))}, str(path))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    assert is_run_folder(tmp_path)
    listing = discover_run(tmp_path)
    assert [cp.path.stem for cp in listing.checkpoints] == ["gamma", "alpha", "beta"]
    assert listing.steps == [0, 1, 2]
    assert {cp.step_from for cp in listing.checkpoints} == {"mtime"}


def test_stepless_file_beside_stepped_ones_is_ignored_and_said_so(tmp_path):
    for name in ("step_10.pt", "step_5.pt", "final.pt"):
        torch.save({"w": torch.ones(2, 2)}, tmp_path / name)
    listing = discover_run(tmp_path)
    assert listing.steps == [5, 10]
    assert list(listing.ignored) == [tmp_path / "final.pt"]


def test_lightning_without_dirpath_keeps_checkpoints_in_a_subfolder(lightning_run, tmp_path):
    run, _ = lightning_run
    shutil.copytree(run, tmp_path / "checkpoints")
    assert discover_run(tmp_path).steps == STEPS


def test_select_steps_every_last(hf_run):
    cps = discover_run(hf_run).checkpoints
    steps = lambda chosen: [cp.step for cp in chosen]  # noqa: E731
    assert steps(select_checkpoints(cps, steps=[6, 2])) == [2, 6]
    assert steps(select_checkpoints(cps, every=2)) == [2, 6]
    assert steps(select_checkpoints(cps, last=2)) == [4, 6]
    assert steps(select_checkpoints(cps, every=2, last=1)) == [6]
    with pytest.raises(ConfigError, match="no checkpoint at step 5; steps in this run: 2, 4, 6"):
        select_checkpoints(cps, steps=[5])


def test_sharded_model_is_a_model_never_a_run_even_with_a_shard_missing(sharded_model, tmp_path):
    assert not is_run_folder(sharded_model)
    with pytest.raises(SourceError, match="holds one sharded model .model.safetensors.index.json."):
        discover_run(sharded_model)
    broken = shutil.copytree(sharded_model, tmp_path / "broken")
    (broken / "model-00003-of-00007.safetensors").unlink()
    # Six shards left, named with no step and of different mtimes: still one (broken) model, not 6 "steps".
    assert not is_run_folder(broken)
    with pytest.raises(SourceError, match="not a run folder.*names shard files that are missing: "
                                          "model-00003-of-00007.safetensors"):
        discover_run(broken)
    # Without the index, the shard names alone say "one model".
    (broken / "model.safetensors.index.json").unlink()
    assert not is_run_folder(broken)
    with pytest.raises(SourceError, match=r"holds one sharded model \(model-00001-of-00007.safetensors\)"):
        discover_run(broken)


def test_scan_run_on_a_broken_sharded_model_fails_and_writes_no_cache(sharded_model, tmp_path):
    import weightscope

    broken = shutil.copytree(sharded_model, tmp_path / "broken")
    (broken / "model-00003-of-00007.safetensors").unlink()
    with pytest.raises(SourceError, match="names shard files that are missing: model-00003-of-00007"):
        weightscope.scan_run(broken, methods=["basic_stats"])
    assert not (broken / ".weightscope-cache").exists()


def test_trainer_output_with_final_sharded_model_beside_checkpoints_is_still_a_run(hf_run, sharded_model, tmp_path):
    # Trainer.save_model(output_dir) after training: the final model's shards + index next to checkpoint-N/.
    run = copy_run(hf_run, tmp_path / "run")
    for f in sharded_model.iterdir():
        shutil.copy(f, run / f.name)
    assert is_run_folder(run)
    listing = discover_run(run)
    assert listing.steps == STEPS and {cp.path.name for cp in listing.checkpoints} == {f"checkpoint-{s}" for s in STEPS}
    shards = sorted(p.name for p in listing.ignored)
    assert shards == [f"model-0000{i}-of-00007.safetensors" for i in range(1, 8)]
    assert all("shard" in why for why in listing.ignored.values())
