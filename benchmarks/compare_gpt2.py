"""Compare GPT-2 small (124M, random init, safetensors) with a perturbed copy, as whole processes.

The copy has small noise on every tensor plus a rank-4 update on three
matrices, like a light fine-tune with a few LoRA-merged layers.

Targets on 2 cores:
- ``compare --methods basic_stats``: at most 3 s, whole process;
- ``compare --methods basic_stats spectral``: at most 1.5x the cost of
  ``scan --methods basic_stats spectral`` of both models;
- peak anonymous memory of a comparison at most 2x that of one scan with the same methods.

Run: python benchmarks/compare_gpt2.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from _measure import OUT, Measurement, measure, weightscope_cmd
from scan_gpt2 import build_gpt2

LOW_RANK = (
    "transformer.h.0.attn.c_attn.weight", "transformer.h.5.mlp.c_fc.weight", "transformer.h.11.attn.c_proj.weight",
)


def build_tuned(base: str) -> str:
    folder = OUT / "gpt2-tuned"
    if not (folder / "model.safetensors").exists():
        import torch
        from safetensors.torch import load_file, save_file

        gen = torch.Generator().manual_seed(1)
        tensors = load_file(f"{base}/model.safetensors")
        tuned = {}
        for name, t in tensors.items():
            if not t.is_floating_point():
                tuned[name] = t.clone()
                continue
            scale = float(t.float().std()) if t.numel() > 1 else 1.0
            t = t + 1e-3 * (scale or 1.0) * torch.randn(t.shape, generator=gen)
            if name in LOW_RANK:
                u = torch.randn(t.shape[0], 4, generator=gen)
                v = torch.randn(4, t.shape[1], generator=gen)
                t = t + 0.02 * (u @ v) / 4
            tuned[name] = t.contiguous()
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tuned, folder / "model.safetensors", metadata={"format": "pt"})
        shutil.copy(f"{base}/config.json", folder / "config.json")
    return str(folder)


def best(cmd: list[str], repeat: int) -> Measurement:
    runs = [measure(cmd) for _ in range(repeat)]
    return min(runs, key=lambda m: m.wall_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per command; the fastest is reported")
    args = parser.parse_args()
    base = build_gpt2()
    tuned = build_tuned(base)
    out = OUT / "compare.json"

    def compare(*methods: str) -> list[str]:
        return weightscope_cmd("compare", "--model1", base, "--model2", tuned, "--methods", *methods,
                               "--quiet", "--output", str(out))

    def scan(model: str, *methods: str) -> list[str]:
        return weightscope_cmd("scan", "--model", model, "--methods", *methods, "--quiet",
                               "--output", str(OUT / "scan.json"))

    rows: dict[str, Measurement] = {}
    rows["start-up floor (import weightscope comparator, torch)"] = best(
        [sys.executable, "-c", "import weightscope.core.comparator, weightscope.cli.main"], args.repeat)
    rows["compare basic_stats"] = best(compare("basic_stats"), args.repeat)
    rows["compare basic_stats spectral"] = best(compare("basic_stats", "spectral"), args.repeat)
    rows["scan basic_stats (base)"] = best(scan(base, "basic_stats"), args.repeat)
    rows["scan basic_stats spectral (base)"] = best(scan(base, "basic_stats", "spectral"), args.repeat)
    rows["scan basic_stats spectral (tuned)"] = best(scan(tuned, "basic_stats", "spectral"), args.repeat)

    print("| run | wall (s) | peak anon (MB) | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    for name, m in rows.items():
        flag = "" if m.returncode == 0 else f" (exit {m.returncode}: {m.stderr.strip().splitlines()[-1:]})"
        print(f"| {name}{flag} | {m.wall_s:.2f} | {m.peak_anon_mb:.0f} | {m.peak_rss_mb:.0f} |")

    floor = rows["start-up floor (import weightscope comparator, torch)"].wall_s
    cmp_basic, cmp_spec = rows["compare basic_stats"], rows["compare basic_stats spectral"]
    scans = [rows["scan basic_stats spectral (base)"], rows["scan basic_stats spectral (tuned)"]]
    both = sum(m.wall_s for m in scans)
    print()
    print("| target | figure | goal |")
    print("|---|---:|---:|")
    print(f"| compare basic_stats, whole process | {cmp_basic.wall_s:.2f} s | <= 3 s |")
    print(f"| compare with spectra / scan both models | {cmp_spec.wall_s / both:.2f}x | <= 1.5x |")
    print(f"| same, start-up floor taken out of each process | "
          f"{(cmp_spec.wall_s - floor) / (both - 2 * floor):.2f}x | <= 1.5x |")
    print(f"| peak anon, compare basic_stats / scan basic_stats | "
          f"{cmp_basic.peak_anon_mb / rows['scan basic_stats (base)'].peak_anon_mb:.2f}x | <= 2x |")
    print(f"| peak anon, compare with spectra / scan with spectra | "
          f"{cmp_spec.peak_anon_mb / max(m.peak_anon_mb for m in scans):.2f}x | <= 2x |")
    try:
        summary = json.loads(out.read_text())["summary"]
        print(f"\nlast comparison: {summary['compared_layers']} layers, {summary['changed_layers']} changed, "
              f"global relative L2 {summary['global_relative_l2_distance']:.3g}")
    except (OSError, KeyError, TypeError, ValueError):
        pass


if __name__ == "__main__":
    main()
