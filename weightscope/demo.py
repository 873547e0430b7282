"""A small GPT-2-style checkpoint with planted faults, built locally (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: The faults ``build_demo_checkpoint`` plants, so the demo (and tests) know what to expect.
PLANTED = {
    "transformer.h.1.attn.c_proj": "4 dead output units (zero columns in Conv1D's (in, out) layout)",
    "transformer.h.2.mlp.c_fc": "8% of weights scaled x40: quantization risk",
    "transformer.h.3.mlp.c_proj": "rank-8 weights: huge condition number",
}


def demo_state_dict(n_layer: int = 4, n_embd: int = 128, vocab: int = 2000, n_pos: int = 256,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """GPT-2 tensor names and layouts (Conv1D stores ``(in, out)``), random init like GPT-2's."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    sd: dict[str, torch.Tensor] = {
        "transformer.wte.weight": normal(vocab, n_embd),
        "transformer.wpe.weight": normal(n_pos, n_embd, std=0.01),
    }
    for i in range(n_layer):
        p = f"transformer.h.{i}."
        sd |= {
            p + "ln_1.weight": torch.ones(n_embd), p + "ln_1.bias": torch.zeros(n_embd),
            p + "attn.c_attn.weight": normal(n_embd, 3 * n_embd), p + "attn.c_attn.bias": torch.zeros(3 * n_embd),
            p + "attn.c_proj.weight": normal(n_embd, n_embd), p + "attn.c_proj.bias": torch.zeros(n_embd),
            p + "ln_2.weight": torch.ones(n_embd), p + "ln_2.bias": torch.zeros(n_embd),
            p + "mlp.c_fc.weight": normal(n_embd, 4 * n_embd), p + "mlp.c_fc.bias": torch.zeros(4 * n_embd),
            p + "mlp.c_proj.weight": normal(4 * n_embd, n_embd), p + "mlp.c_proj.bias": torch.zeros(n_embd),
        }
    sd["transformer.ln_f.weight"] = torch.ones(n_embd)
    sd["transformer.ln_f.bias"] = torch.zeros(n_embd)
    return sd


def plant_faults(sd: dict[str, torch.Tensor], seed: int = 1) -> None:
    """Apply the faults listed in ``PLANTED`` (in place)."""
    g = torch.Generator().manual_seed(seed)
    sd["transformer.h.1.attn.c_proj.weight"][:, :4] = 0.0  # Conv1D: output rows are columns here
    w = sd["transformer.h.2.mlp.c_fc.weight"]
    idx = torch.randperm(w.numel(), generator=g)[: int(0.08 * w.numel())]
    w.view(-1)[idx] *= 40.0
    w = sd["transformer.h.3.mlp.c_proj.weight"]
    a, b = torch.randn(w.shape[0], 8, generator=g), torch.randn(8, w.shape[1], generator=g)
    w.copy_(a @ b * 0.02 / 8**0.5)


def build_demo_checkpoint(folder: str | Path, faults: bool = True) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into ``folder``; return the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = demo_state_dict()
    if faults:
        plant_faults(sd)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    config = {"model_type": "gpt2", "n_layer": 4, "n_embd": 128, "n_head": 4, "vocab_size": 2000,
              "n_positions": 256, "tie_word_embeddings": True}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
