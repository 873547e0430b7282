"""Scan GPT-2 small (124M, random init, safetensors) as a whole process.

Target on 2 cores: `weightscope scan --methods all` in at most 5 s, peak anonymous memory at most 400 MB.
Run: python benchmarks/scan_gpt2.py
"""

from __future__ import annotations

import sys

from _measure import OUT, measure, report, weightscope_cmd


def build_gpt2() -> str:
    folder = OUT / "gpt2"
    if not (folder / "model.safetensors").exists():
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    return str(folder)


def main() -> None:
    model = build_gpt2()
    rows = []
    for name, extra in [
        ("python -c 'import weightscope, torch' (start-up floor)", None),
        ("scan --methods all (parallel, default workers)", ["--methods", "all"]),
        ("scan --methods all --sequential", ["--methods", "all", "--sequential"]),
        ("scan --methods basic_stats", ["--methods", "basic_stats"]),
        ("scan --methods spectral esd", ["--methods", "spectral", "esd"]),
        ("scan --methods quantization", ["--methods", "quantization"]),
        ("scan --methods sparsity", ["--methods", "sparsity"]),
    ]:
        if extra is None:
            cmd = [sys.executable, "-c", "import weightscope.core.scope, torch"]
        else:
            cmd = weightscope_cmd("scan", "--model", model, "--quiet", "--output", str(OUT / "gpt2-scan.json"), *extra)
        rows.append((name, measure(cmd)))
    report(rows)


if __name__ == "__main__":
    main()
