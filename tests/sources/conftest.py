"""Real checkpoints of one tiny random GPT-2, written once per session in every format."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

TIED = ("lm_head.weight", "transformer.wte.weight")


@dataclass(frozen=True)
class Checkpoints:
    root: Path
    module: torch.nn.Module
    state: dict[str, torch.Tensor]  # clone of module.state_dict(): the reference values

    def __getattr__(self, name: str) -> Path:
        if name not in _LAYOUT:
            raise AttributeError(name)
        return self.root / _LAYOUT[name]


# attribute -> path under root
_LAYOUT = {
    "hf_safetensors": "hf_safetensors",
    "hf_sharded": "hf_sharded",
    "hf_bin": "hf_bin",
    "hf_bin_sharded": "hf_bin_sharded",
    "single_safetensors": "files/model.safetensors",
    "plain_pt": "files/model.pt",
    "wrapped_pt": "files/wrapped.pt",
    "model_state_pth": "files/model_state.pth",
    "legacy_pt": "files/legacy.pt",
    "lightning_style_ckpt": "files/lightning_style.ckpt",
}


@pytest.fixture(scope="session")
def gpt2() -> torch.nn.Module:
    transformers = pytest.importorskip("transformers")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    cfg = transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session")
def ckpts(gpt2: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    from safetensors.torch import save_model

    root = tmp_path_factory.mktemp("ckpts")
    sd = gpt2.state_dict()  # shares memory with the module: lm_head is wte
    assert sd[TIED[0]].data_ptr() == sd[TIED[1]].data_ptr()
    gpt2.save_pretrained(root / "hf_safetensors")
    gpt2.save_pretrained(root / "hf_sharded", max_shard_size="50KB")
    # transformers 5 always writes safetensors; pytorch_model.bin is what
    # transformers 4 wrote with safe_serialization=False: torch.save(state_dict).
    (root / "hf_bin").mkdir()
    gpt2.config.to_json_file(root / "hf_bin" / "config.json")
    torch.save(sd, root / "hf_bin" / "pytorch_model.bin")
    _save_sharded_bin(sd, root / "hf_bin_sharded")

    files = root / "files"
    files.mkdir()
    save_model(gpt2, str(files / "model.safetensors"))  # drops the tied duplicate, like HF
    torch.save(sd, files / "model.pt")
    torch.save({"state_dict": sd, "epoch": 3}, files / "wrapped.pt")
    torch.save({"model_state_dict": sd, "optimizer_state_dict": {"state": {}}, "step": 7}, files / "model_state.pth")
    torch.save(sd, files / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(
        {
            "epoch": 1,
            "global_step": 10,
            "pytorch-lightning_version": "2.5.0",
            "state_dict": sd,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1}]}],
            "lr_schedulers": [],
            "hyper_parameters": {"lr": 0.1, "name": "tiny"},
        },
        files / "lightning_style.ckpt",
    )
    state = {k: v.detach().clone() for k, v in sd.items()}
    return Checkpoints(root, gpt2, state)


def _save_sharded_bin(sd: dict[str, torch.Tensor], folder: Path) -> None:
    """The transformers 4 layout: pytorch_model-0000i-of-0000n.bin + index."""
    folder.mkdir()
    names = list(sd)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, part in enumerate(halves, 1):
        fname = f"pytorch_model-{i:05d}-of-{len(halves):05d}.bin"
        torch.save({k: sd[k] for k in part}, folder / fname)
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": sum(t.nbytes for t in sd.values())}, "weight_map": weight_map}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
