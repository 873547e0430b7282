"""Scan a TinyLlama-1.1B-shaped bf16 checkpoint in sharded safetensors with basic_stats + quantization.

Target on 2 cores: peak anonymous memory at most 1 GB (and not growing with checkpoint size).
Run: python benchmarks/scan_large.py
"""

from __future__ import annotations

import json

from _measure import OUT, measure, report, weightscope_cmd

HIDDEN, INTER, LAYERS, VOCAB, KV = 2048, 5632, 22, 32000, 256


def shapes() -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)),
            (p + "self_attn.k_proj.weight", (KV, HIDDEN)),
            (p + "self_attn.v_proj.weight", (KV, HIDDEN)),
            (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
            (p + "mlp.gate_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
            (p + "mlp.down_proj.weight", (HIDDEN, INTER)),
            (p + "input_layernorm.weight", (HIDDEN,)),
            (p + "post_attention_layernorm.weight", (HIDDEN,)),
        ]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def build(max_shard_bytes: int = 500 * 2**20) -> str:
    import torch
    from safetensors.torch import save_file

    folder = OUT / "tinyllama-1.1b-bf16"
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, shape in shapes():
        t = (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
        if size + t.nbytes > max_shard_bytes and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(t.nbytes for s in shards for t in s.values())
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return str(folder)


def main() -> None:
    model = build()
    rows = [
        ("scan --methods basic_stats quantization (1.1B bf16, 5 shards)",
         measure(weightscope_cmd("scan", "--model", model, "--quiet", "--methods", "basic_stats", "quantization",
                                 "--output", str(OUT / "large-scan.json")))),
    ]
    report(rows)


if __name__ == "__main__":
    main()
