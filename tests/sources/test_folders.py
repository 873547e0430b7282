"""Model folders: Hugging Face layouts, single checkpoints, and what is refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from weightscope.errors import SourceError
from weightscope.sources import checkpoint_candidates, find_weight_files, open_source


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_prefers_safetensors_over_pickle(ckpts: Any, tmp_path: Path) -> None:
    folder = _copy(ckpts.hf_safetensors, tmp_path / "both")
    shutil.copy(ckpts.hf_bin / "pytorch_model.bin", folder)
    assert find_weight_files(folder) == [folder / "model.safetensors"]
    assert open_source(folder).files == [folder / "model.safetensors"]


def test_sharded_folder_lists_shards_in_index_order(ckpts: Any) -> None:
    files = find_weight_files(ckpts.hf_sharded)
    index = json.loads((ckpts.hf_sharded / "model.safetensors.index.json").read_text())
    assert [p.name for p in files] == list(dict.fromkeys(index["weight_map"].values()))


def test_single_other_checkpoint_next_to_trainer_state(ckpts: Any, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(ckpts.plain_pt, folder / "weights.pt")
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"last_epoch": 1}, folder / "scheduler.pt")
    (folder / "training_args.bin").write_bytes(b"\x80\x04not really")
    (folder / "trainer_state.json").write_text("{}")
    assert find_weight_files(folder) == [folder / "weights.pt"]
    refs = open_source(folder).refs()
    assert [r.name for r in refs] == list(ckpts.state)
    assert all(torch.equal(r.load(), ckpts.state[r.name]) for r in refs)


def test_same_model_in_two_formats(tmp_path: Path) -> None:
    tensors = {"w": torch.randn(3, 3)}
    save_file(tensors, tmp_path / "adapter_model.safetensors")
    torch.save(tensors, tmp_path / "adapter_model.bin")
    assert find_weight_files(tmp_path) == [tmp_path / "adapter_model.safetensors"]


def test_shards_without_index_form_one_model(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(2)}, tmp_path / "model-00002-of-00002.safetensors")
    assert [r.name for r in open_source(tmp_path).refs()] == ["a", "b"]
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    save_file({"b": torch.zeros(2)}, tmp_path / "model-00003-of-00003.safetensors")
    with pytest.raises(SourceError, match="separate checkpoints"):  # incomplete set
        open_source(tmp_path)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path}: empty folder")):
        open_source(tmp_path)


def test_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(SourceError, match=re.escape(f"{tmp_path}: no weights found")) as info:
        open_source(tmp_path)
    assert "config.json" in str(info.value)
    (tmp_path / "tf_model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(SourceError, match="tf_model.h5, a format WeightScope does not read"):
        open_source(tmp_path)


def test_several_unrelated_checkpoints_are_listed(tmp_path: Path) -> None:
    for name in ("epoch=1.ckpt", "epoch=2.ckpt", "final.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SourceError, match="holds 3 separate checkpoints") as info:
        open_source(tmp_path)
    for name in ("epoch=1.ckpt", "epoch=2.ckpt", "final.safetensors"):
        assert name in str(info.value)


def test_missing_shard_without_an_index_is_named(tmp_path: Path) -> None:
    for i in (1, 3):
        save_file({f"t{i}": torch.ones(2, 2)}, tmp_path / f"model-{i:05d}-of-00004.safetensors")
    with pytest.raises(SourceError, match="shard files are missing: model-00002-of-00004.safetensors, "
                                          "model-00004-of-00004.safetensors \\(incomplete download"):
        open_source(tmp_path)


def test_missing_shard(ckpts: Any, tmp_path: Path) -> None:
    folder = _copy(ckpts.hf_sharded, tmp_path / "m")
    # How many shards save_pretrained makes of the same limit differs between transformers versions.
    shards = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert len(shards) >= 3
    (folder / shards[2]).unlink()
    with pytest.raises(SourceError, match=f"shard files that are missing: {re.escape(shards[2])}"):
        open_source(folder)
    folder = _copy(ckpts.hf_bin_sharded, tmp_path / "b")
    (folder / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(SourceError, match="missing: pytorch_model-00002-of-00002.bin"):
        open_source(folder)


def test_index_naming_a_tensor_the_shard_lacks(ckpts: Any, tmp_path: Path) -> None:
    folder = _copy(ckpts.hf_sharded, tmp_path / "m")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first_shard = next(iter(index["weight_map"].values()))
    index["weight_map"]["ghost.weight"] = first_shard
    index_path.write_text(json.dumps(index))
    with pytest.raises(SourceError, match=f"maps 'ghost.weight' to {first_shard}, but that file has no such tensor"):
        open_source(folder)
    index_path.write_text("{broken")
    with pytest.raises(SourceError, match="unreadable index file"):
        open_source(folder)


def test_tensors_missing_from_the_index_are_still_read(ckpts: Any, tmp_path: Path) -> None:
    folder = _copy(ckpts.hf_sharded, tmp_path / "m")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    dropped = next(iter(index["weight_map"]))
    del index["weight_map"][dropped]
    index_path.write_text(json.dumps(index))
    names = [r.name for r in open_source(folder).refs()]
    assert names[-1] == dropped and len(names) == len(set(names)) == len(index["weight_map"]) + 1


def test_checkpoint_candidates_sort_naturally(tmp_path: Path) -> None:
    for name in ("step-10.pt", "step-9.pt", "step-100.safetensors", "optimizer.pt", "rng_state_0.pth", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.pt").mkdir()
    assert [p.name for p in checkpoint_candidates(tmp_path)] == ["step-9.pt", "step-10.pt", "step-100.safetensors"]
