import json
import os
import shutil

import numpy as np
import pytest
import torch
from run_builders import STEPS, copy_run, hf_weights, lightning_weights, sharded_weights
from safetensors.torch import save_file

from weightscope.cli.main import main
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


def _scanned_norms(run, tmp_path, capsys):
    """Each checkpoint's per-layer L2 norms as ``weightscope scan`` of the run folder writes them."""
    out = tmp_path / "run.json"
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "--no-cache", "-q", "-o", str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    norms = {cp["step"]: {layer: m["basic_stats"]["l2_norm"] for layer, m in cp["layers"].items()}
             for cp in data["checkpoints"]}
    return data, norms


def _assert_norms(norms, reference):
    assert set(norms) == set(reference)
    for layer, w in reference.items():
        assert norms[layer] == pytest.approx(np.linalg.norm(w), rel=1e-9), layer


def test_lightning_final_ckpt_beside_checkpoints_joins_the_run_at_its_global_step(lightning_final_run, tmp_path,
                                                                                   capsys):
    run = copy_run(lightning_final_run, tmp_path / "run")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]
    listing = discover_run(run)
    assert [(cp.step, cp.path.relative_to(run).as_posix(), cp.step_from) for cp in listing.checkpoints] == [
        (2, "checkpoints/epoch=0-step=2.ckpt", "name"), (4, "checkpoints/epoch=0-step=4.ckpt", "name"),
        (5, "final.ckpt", "global_step")]
    assert listing.ignored == {}
    assert torch.load(run / "final.ckpt", weights_only=True)["global_step"] == 5  # what Lightning saved
    data, norms = _scanned_norms(run, tmp_path, capsys)
    _assert_norms(norms[5], lightning_weights(run / "final.ckpt"))
    assert [(d["step"], d["previous_step"]) for d in data["drift"]][1:] == [(4, 2), (5, 4)]


def test_a_final_ckpt_that_repeats_a_step_or_has_none_is_listed_as_ignored(lightning_final_run, tmp_path):
    run = copy_run(lightning_final_run, tmp_path / "run")
    shutil.copy(run / "checkpoints" / "epoch=0-step=4.ckpt", run / "final.ckpt")  # saved right after step 4
    torch.save({"w": torch.ones(2, 2)}, run / "exported.pt")  # a plain state dict: no step anywhere
    torch.save({"w": torch.ones(2, 2)}, run / "tokens_50000.pt")  # a number, but not a step
    listing = discover_run(run)
    assert listing.steps == [2, 4]
    no_step = "beside checkpoints/, with no step in its name (rename it step_N.* to include it)"
    assert listing.ignored == {
        run / "final.ckpt": "same step 4 as epoch=0-step=4.ckpt",
        run / "exported.pt": no_step,
        run / "tokens_50000.pt": no_step,
    }


def test_trainer_final_model_on_the_last_save_step_is_ignored_as_that_checkpoint(hf_final_run):
    # This Trainer saved checkpoint-5 at its last step too: the final model is those weights again.
    listing = discover_run(hf_final_run)
    assert listing.steps == [2, 4, 5] and listing.checkpoints[-1].path.name == "checkpoint-5"
    assert listing.ignored == {hf_final_run / "model.safetensors":
                               "the Trainer's final model (Trainer.save_model), same step 5 as checkpoint-5, "
                               "which holds the same weights"}
    np.testing.assert_array_equal(*(hf_weights(p)["transformer.h.0.mlp.c_fc"]
                                    for p in (hf_final_run, hf_final_run / "checkpoint-5")))


def test_a_sharded_final_model_on_the_last_save_step_lists_its_shards_not_the_run_folder(hf_final_run, tmp_path):
    from safetensors.numpy import load_file, save_file

    # Trainer.save_model() of a bigger model: its shards + index, at the step checkpoint-5 holds too.
    run = copy_run(hf_final_run, tmp_path / "run")
    tensors = load_file(run / "model.safetensors")
    (run / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, run / shard)
    (run / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}))
    listing = discover_run(run)
    assert listing.steps == [2, 4, 5] and listing.checkpoints[-1].path.name == "checkpoint-5"
    why = ("a shard of Trainer's final model (Trainer.save_model), same step 5 as checkpoint-5, "
           "which holds the same weights")
    assert listing.ignored == {run / shard: why for shard in shards}  # the run folder itself is not left out
    np.testing.assert_array_equal(sharded_weights(run)["transformer.h.0.mlp.c_fc"],
                                  hf_weights(run / "checkpoint-5")["transformer.h.0.mlp.c_fc"])


def test_trainer_final_model_after_the_last_save_step_joins_at_trainer_state_step(hf_final_run, tmp_path, capsys):
    # Training that ends between save steps: no checkpoint-5, only the final model at step 5.
    run = copy_run(hf_final_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoint-5")
    listing = discover_run(run)
    assert [(cp.step, cp.path.name, cp.step_from) for cp in listing.checkpoints] == [
        (2, "checkpoint-2", "name"), (4, "checkpoint-4", "name"), (5, "model.safetensors", "global_step")]
    assert listing.ignored == {}
    _, norms = _scanned_norms(run, tmp_path, capsys)
    _assert_norms(norms[5], hf_weights(run))


def test_trainer_final_model_of_unknown_step_says_why_not_rename_it(hf_final_run, tmp_path):
    run = copy_run(hf_final_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoint-5")
    state = json.loads((run / "trainer_state.json").read_text())
    (run / "trainer_state.json").unlink()
    listing = discover_run(run)
    assert listing.steps == [2, 4]
    why = listing.ignored[run / "model.safetensors"]
    assert why.startswith("the Trainer's final model (Trainer.save_model), whose step is unknown without a "
                          "trainer_state.json beside it (Trainer.save_state() writes one)") and "rename" not in why
    # load_best_model_at_end would leave the best checkpoint's weights in it, under the last step's number.
    (run / "trainer_state.json").write_text(json.dumps({**state, "best_model_checkpoint": str(run / "checkpoint-2")}))
    listing = discover_run(run)
    assert listing.steps == [2, 4]
    assert listing.ignored[run / "model.safetensors"] == (
        "the Trainer's final model (Trainer.save_model), which may hold the weights of the best checkpoint "
        "(checkpoint-2, load_best_model_at_end) rather than those of step 5")
