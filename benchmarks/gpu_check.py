"""CUDA path check, run on a GPU machine: same results as the CPU within tolerance, and timings.

Run: PYTHONPATH=. python benchmarks/gpu_check.py [OUT_DIR]
Prints a table of the largest relative CPU/GPU difference per metric and wall times.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from weightscope import Scope
from weightscope.core.results import flatten_metrics
from weightscope.demo import demo_state_dict, plant_faults


def rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def diff_results(cpu: dict, gpu: dict) -> dict[str, float]:
    worst: dict[str, float] = {}
    for layer, methods in cpu.items():
        fc, fg = flatten_metrics(methods), flatten_metrics(gpu[layer])
        for key, a in fc.items():
            b = fg.get(key)
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
                if a != b and not isinstance(a, list):
                    worst[key] = math.inf
                continue
            worst[key] = max(worst.get(key, 0.0), rel(float(a), float(b)))
    return worst


def timed(fn):
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    tmp = Path(tempfile.mkdtemp())
    sd = demo_state_dict(n_layer=12, n_embd=768, vocab=50257, n_pos=1024)  # GPT-2 small shapes
    plant_faults(sd)
    path = tmp / "model.safetensors"
    save_file(sd, str(path))
    report: dict = {}
    cpu, t_cpu = timed(lambda: Scope(path, device="cpu").scan("all", num_workers=8))
    Scope(path, device="cuda").scan("basic_stats")  # warm-up: CUDA context, kernels
    gpu, t_gpu = timed(lambda: Scope(path, device="cuda").scan("all", num_workers=8))
    report["scan_all_seconds"] = {"cpu_8_workers": t_cpu, "cuda": t_gpu}
    worst = diff_results(cpu, gpu)
    report["scan_worst_relative_diff"] = worst
    bf16 = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    a = Scope(bf16, device="cpu").scan(["basic_stats", "quantization"])
    b = Scope(bf16, device="cuda").scan(["basic_stats", "quantization"])
    report["bf16_worst_relative_diff"] = diff_results(a, b)
    try:
        sd2 = {k: v + 1e-3 * torch.randn_like(v) for k, v in sd.items()}
        c_cpu, tc = timed(lambda: Scope(sd, device="cpu").compare_with(sd2, methods=["basic_stats", "spectral"]))
        c_gpu, tg = timed(lambda: Scope(sd, device="cuda").compare_with(sd2, methods=["basic_stats", "spectral"]))
        report["compare_seconds"] = {"cpu": tc, "cuda": tg}
        report["compare_worst_relative_diff"] = diff_results(c_cpu["layer_comparisons"], c_gpu["layer_comparisons"])
    except Exception as exc:  # report, don't lose the scan figures
        report["compare_error"] = repr(exc)
    try:
        from weightscope.callbacks import WeightMonitor

        model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).cuda()
        mon = WeightMonitor(every_n_steps=1, max_pending=8, output_dir=str(out_dir / "monitor"), device="cuda")
        for step in range(3):
            with torch.no_grad():
                model[0].weight.mul_(1.01)
            mon.step(model, step)
        mon.close()
        lines = [ln for f in (out_dir / "monitor").rglob("*.jsonl") for ln in f.read_text().splitlines()]
        report["monitor"] = f"{len(lines)} snapshot lines (want 3), stats {getattr(mon, 'stats', None)}"
        if len(lines) != 3:
            report["monitor_error"] = f"{len(lines)} records for 3 snapshots"
    except Exception as exc:
        report["monitor_error"] = repr(exc)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    (out_dir / "gpu_check.json").write_text(text)
    bad = {k: v for k, v in worst.items() if v > 1e-3}
    print("metrics differing by more than 1e-3 relative:", bad or "none")
    failed = [k for k in report if k.endswith("_error")]
    if bad or failed:  # a check a script runs must be able to fail
        sys.exit(f"gpu_check failed: {', '.join(failed + sorted(bad))}")


if __name__ == "__main__":
    main()
