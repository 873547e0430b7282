"""Every input format yields the module's names and bit-identical tensors."""

from __future__ import annotations

import json
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from weightscope.sources import (
    FolderSource,
    MemorySource,
    SafetensorsFileSource,
    TensorSource,
    TorchPickleSource,
    open_source,
)

# GPT-2's lm_head is its token embedding: one storage under two names.
TIED = ("lm_head.weight", "transformer.wte.weight")
# Formats whose writer keeps tied weights once (safetensors) vs under both names (pickles).
DEDUPED = ["hf_safetensors", "hf_sharded", "single_safetensors"]
FULL = ["hf_bin", "hf_bin_sharded", "plain_pt", "wrapped_pt", "model_state_pth", "legacy_pt", "lightning_style_ckpt"]


def _assert_matches(src: TensorSource, state: dict[str, torch.Tensor], expected_names: set[str]) -> None:
    refs = src.refs()
    assert {r.name for r in refs} == expected_names
    assert len(refs) == len(expected_names)
    for ref in refs:
        tensor = ref.load()
        want = state[ref.name]
        assert ref.shape == tuple(want.shape) and ref.dtype == want.dtype
        assert tensor.dtype == want.dtype and tensor.device.type == "cpu"
        assert torch.equal(tensor, want), ref.name


@pytest.mark.parametrize("name", DEDUPED + FULL)
@pytest.mark.parametrize("as_path", [True, False], ids=["Path", "str"])
def test_every_format_matches_the_module(ckpts: Any, name: str, as_path: bool) -> None:
    target = getattr(ckpts, name)
    with open_source(target if as_path else str(target)) as src:
        expected = set(ckpts.state)
        if name in DEDUPED:
            # transformers keeps wte, safetensors.save_model keeps lm_head: one of the two.
            dropped = expected - {r.name for r in src.refs()}
            assert dropped in ({TIED[0]}, {TIED[1]})
            expected -= dropped
        _assert_matches(src, ckpts.state, expected)


def test_module_and_state_dict(ckpts: Any) -> None:
    src = open_source(ckpts.module)
    assert isinstance(src, MemorySource) and src.description == "nn.Module(GPT2LMHeadModel)"
    _assert_matches(src, ckpts.state, set(ckpts.state))
    assert [r.name for r in src.refs()] == list(ckpts.state)
    _assert_matches(open_source(ckpts.module.state_dict()), ckpts.state, set(ckpts.state))
    _assert_matches(open_source({"state_dict": ckpts.module.state_dict(), "epoch": 1}), ckpts.state, set(ckpts.state))


def test_sources_picked_per_input(ckpts: Any) -> None:
    assert isinstance(open_source(ckpts.hf_sharded), FolderSource)
    assert isinstance(open_source(ckpts.single_safetensors), SafetensorsFileSource)
    assert isinstance(open_source(ckpts.lightning_style_ckpt), TorchPickleSource)
    src = open_source(ckpts.plain_pt)
    assert open_source(src) is src


def test_order_follows_the_checkpoint(ckpts: Any) -> None:
    index = json.loads((ckpts.hf_sharded / "model.safetensors.index.json").read_text())
    assert [r.name for r in open_source(ckpts.hf_sharded).refs()] == list(index["weight_map"])
    index = json.loads((ckpts.hf_bin_sharded / "pytorch_model.bin.index.json").read_text())
    assert [r.name for r in open_source(ckpts.hf_bin_sharded).refs()] == list(index["weight_map"])
    assert [r.name for r in open_source(ckpts.plain_pt).refs()] == list(ckpts.state)
    assert [r.name for r in open_source(ckpts.single_safetensors).refs()] == _header_names(ckpts.single_safetensors)


def _header_names(path: Path) -> list[str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return [k for k in json.loads(raw[8 : 8 + n]) if k != "__metadata__"]


def test_tie_detection(ckpts: Any) -> None:
    for target in (ckpts.module, ckpts.plain_pt, ckpts.hf_bin, ckpts.lightning_style_ckpt, ckpts.legacy_pt):
        ids = {r.name: r.storage_id for r in open_source(target).refs()}
        assert ids[TIED[0]] is not None and ids[TIED[0]] == ids[TIED[1]], target
        others = [v for k, v in ids.items() if k not in TIED]
        assert len(set(others)) == len(others) and ids[TIED[0]] not in others
    for target in (ckpts.hf_safetensors, ckpts.hf_sharded):
        ids = [r.storage_id for r in open_source(target).refs()]
        assert None not in ids and len(set(ids)) == len(ids)


def test_views_of_one_storage_are_not_tied() -> None:
    w = torch.arange(12.0).reshape(4, 3)
    ids = {r.name: r.storage_id for r in open_source({"a": w[:2], "b": w[2:], "c": w, "d": w, "e": w.t()}).refs()}
    assert ids["c"] == ids["d"]
    assert len({ids["a"], ids["b"], ids["c"], ids["e"]}) == 4


def test_module_requires_grad_buffers_and_no_copy() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    model[0].weight.requires_grad_(False)
    model[1].register_buffer("scratch", torch.zeros(2), persistent=False)
    src = open_source(model)
    assert [r.name for r in src.refs()] == list(model.state_dict())  # persistent buffers only
    assert src.requires_grad == {
        "0.weight": False,
        "0.bias": True,
        "1.weight": True,
        "1.bias": True,
        "1.running_mean": False,
        "1.running_var": False,
        "1.num_batches_tracked": False,
    }
    loaded = {r.name: r.load() for r in src.refs()}
    assert loaded["0.bias"].data_ptr() == model[0].bias.data_ptr()  # a view, not a copy
    assert not loaded["0.bias"].requires_grad
    assert loaded["1.num_batches_tracked"].dtype == torch.int64


def test_non_float_tensors_are_listed(tmp_path: Path) -> None:
    tensors = {
        "position_ids": torch.arange(8).unsqueeze(0),
        "mask": torch.tensor([True, False, True]),
        "w": torch.randn(3, 3),
    }
    save_file(tensors, tmp_path / "m.safetensors")
    torch.save(tensors, tmp_path / "m.pt")
    for target in (tmp_path / "m.safetensors", tmp_path / "m.pt", tensors):
        refs = {r.name: r for r in open_source(target).refs()}
        assert refs["position_ids"].dtype == torch.int64 and not refs["position_ids"].is_floating
        assert refs["mask"].dtype == torch.bool
        for name, t in tensors.items():
            assert torch.equal(refs[name].load(), t)


def test_every_safetensors_dtype_round_trips(tmp_path: Path) -> None:
    base = torch.randn(4, 5) * 3
    tensors = {
        str(dtype).removeprefix("torch."): base.to(dtype)
        for dtype in (
            torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
            torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
        )
    }  # fmt: skip
    save_file(tensors, tmp_path / "dtypes.safetensors")
    refs = {r.name: r for r in open_source(tmp_path / "dtypes.safetensors").refs()}
    assert set(refs) == set(tensors)
    for name, t in tensors.items():
        got = refs[name].load()
        assert refs[name].dtype == t.dtype == got.dtype and refs[name].shape == (4, 5)
        assert torch.equal(got.view(torch.uint8), t.view(torch.uint8)), name  # bit-identical, NaN-proof


def test_nested_dicts_flatten_to_tensors_only(tmp_path: Path) -> None:
    ckpt = {"encoder": {"w": torch.ones(2, 2), "cfg": "x"}, "decoder": {"w": torch.zeros(2)}, "step": 5}
    torch.save(ckpt, tmp_path / "nested.pt")
    for target in (tmp_path / "nested.pt", ckpt):
        assert [r.name for r in open_source(target).refs()] == ["encoder.w", "decoder.w"]


def test_unknown_extension_is_sniffed(ckpts: Any, tmp_path: Path) -> None:
    (tmp_path / "a.weights").write_bytes(ckpts.single_safetensors.read_bytes())
    (tmp_path / "b.weights").write_bytes(ckpts.plain_pt.read_bytes())
    assert isinstance(open_source(tmp_path / "a.weights"), SafetensorsFileSource)
    _assert_matches(open_source(tmp_path / "b.weights"), ckpts.state, set(ckpts.state))


def test_concurrent_loads(ckpts: Any) -> None:
    for target in (ckpts.hf_sharded, ckpts.plain_pt):
        with open_source(target) as src:
            refs = src.refs() * 4
            with ThreadPoolExecutor(4) as pool:
                loaded = list(pool.map(lambda r: r.load(), refs))
            assert all(torch.equal(t, ckpts.state[r.name]) for r, t in zip(refs, loaded))


def test_closed_source_refuses_to_load(ckpts: Any) -> None:
    from weightscope.errors import SourceError

    for target in (ckpts.single_safetensors, ckpts.plain_pt, ckpts.module):
        src = open_source(target)
        refs = src.refs()
        kept = {ref.name: ref.load() for ref in refs}
        src.close()
        for name, tensor in kept.items():  # loaded tensors outlive the source, values intact
            assert torch.equal(tensor, ckpts.state[name]), name
        with pytest.raises(SourceError, match="closed"):
            refs[0].load()


def test_real_lightning_checkpoint(tmp_path: Path) -> None:
    L = pytest.importorskip("lightning")

    class Tiny(L.LightningModule):
        def __init__(self, hidden: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.LayerNorm(hidden))

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=0.01)

    model = Tiny()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)
    trainer = L.Trainer(
        max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    want = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _assert_matches(open_source(tmp_path / "last.ckpt"), want, set(want))
