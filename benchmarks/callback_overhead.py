"""What monitoring costs a training run: Lightning, a GPT-2-style model (4 layers, width 256), CPU.

Configurations, each in a fresh process and repeated (interleaved) to damp
noise from other work on the machine:

- ``none``: no monitoring;
- ``weightscope``: ``WeightScopeCallback(every_n_steps=50)`` with its defaults;
- ``wandb_watch``: ``wandb.watch(model, log="parameters", log_freq=50)``, offline run;
- extra ones with ``--configs`` (``weightscope_sync``: ``background=False``;
  ``weightscope_all``: ``methods="all"``; ``weightscope:key=value;key=value``: any
  monitor setting, e.g. ``weightscope:niceness=0``).

Prints wall time of ``trainer.fit`` (the final snapshot's analysis
included), slowdown vs ``none``, and for WeightScope the time the loop was
blocked per snapshot next to the cost of copying the weights once.

    python benchmarks/callback_overhead.py [--steps 300] [--repeats 3] [--configs none,weightscope,wandb_watch]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("none", "weightscope", "wandb_watch")
MODEL = dict(vocab=2000, n_positions=64, n_embd=256, n_layer=4, n_head=4)


def copy_cost(model) -> tuple[float, float]:
    """Seconds to clone the 2-D weights (what a snapshot copies) once: cold (fresh pages) and warm (median of 9).

    The yardstick for a snapshot's blocking time.
    """
    import torch

    params = [p for p in model.parameters() if p.ndim >= 2]
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        with torch.no_grad():
            _ = [p.detach().clone() for p in params]
        times.append(time.perf_counter() - t0)
        del _
    return times[0], statistics.median(times[1:])


def one_run(config: str, steps: int, every: int, workdir: Path) -> dict:
    import lightning.pytorch as pl
    import torch

    sys.path.insert(0, str(ROOT))
    from weightscope.demo_training import SyntheticText, TinyGPT, lightning_module

    torch.manual_seed(0)
    model = TinyGPT(**MODEL)
    module = lightning_module(model, SyntheticText(vocab=MODEL["vocab"], length=MODEL["n_positions"]))
    callbacks, result = [], {"config": config}
    cb = None
    if config.startswith("weightscope"):
        from weightscope.callbacks import WeightScopeCallback

        extra = {"weightscope_sync": {"background": False}, "weightscope_all": {"methods": "all"}}.get(config, {})
        if ":" in config:  # weightscope:niceness=0,full_scan_every=2 -> monitor settings
            import ast

            for item in config.split(":", 1)[1].split(";"):
                key, _, value = item.partition("=")
                extra[key] = ast.literal_eval(value)
        cb = WeightScopeCallback(**{"every_n_steps": every, "output_dir": workdir / "ws", **extra})
        callbacks.append(cb)
    elif config == "wandb_watch":
        import wandb

        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(workdir))
        run = wandb.init(project="weightscope-bench", mode="offline")
        run.watch(model, log="parameters", log_freq=every)
    elif config != "none":
        raise SystemExit(f"unknown config {config}")
    trainer = pl.Trainer(
        max_steps=steps, callbacks=callbacks, logger=False, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, default_root_dir=str(workdir),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module)
    result["wall_s"] = time.perf_counter() - t0
    result["cpu_s"] = time.process_time() - c0  # every thread of this process (not wandb's own process)
    if config == "wandb_watch":
        import wandb

        t1 = time.perf_counter()
        wandb.finish()
        result["finish_s"] = time.perf_counter() - t1
    if cb is not None:
        s = cb.monitor.stats
        result.update(snapshots=s.snapshots, skipped=s.skipped, mean_blocking_s=s.mean_blocking_s,
                      median_blocking_s=statistics.median(s.blocking_s), blocking_s=s.blocking_s,
                      max_blocking_s=s.max_blocking_s, mean_analysis_s=s.mean_analysis_s,
                      snapshot_mb=s.snapshot_bytes / 2**20, logging_s=sum(s.logging_s),
                      analysis_cpu_s=s.analysis_cpu_s, close_wait_s=s.close_wait_s)
    result["copy_cold_s"], result["copy_s"] = copy_cost(model)
    result["torch_threads"] = torch.get_num_threads()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_run(args.one, args.steps, args.every, Path(tmp))))
        return
    configs = [c for c in args.configs.split(",") if c]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for rep in range(args.repeats):
        for config in configs:  # interleaved, so drifting machine load hits every config alike
            cmd = [sys.executable, __file__, "--one", config, "--steps", str(args.steps), "--every", str(args.every)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"{config} failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[config].append(res)
            print(f"# repeat {rep + 1} {config}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)
    base = statistics.median(r["wall_s"] for r in runs["none"]) if "none" in runs else None
    base_min = min(r["wall_s"] for r in runs["none"]) if "none" in runs else None
    base_cpu = statistics.median(r["cpu_s"] for r in runs["none"]) if "none" in runs else None
    print(f"\n{args.steps} steps, snapshot / watch every {args.every} steps, median of {args.repeats} runs, "
          f"{os.cpu_count()} cores, torch threads {runs[configs[0]][0]['torch_threads']}\n")
    print("| configuration | wall time, median (s) | slowdown, median | slowdown, best run | CPU time (s) "
          "| extra CPU | blocked per snapshot, median / max (ms) | clone weights once, warm / cold (ms) "
          "| analysis per snapshot (s) | snapshots (skipped) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for config, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        best = min(r["wall_s"] for r in rs)
        cpu = statistics.median(r["cpu_s"] for r in rs)
        slow = f"{100 * (wall / base - 1):+.1f} %" if base else "-"
        slow_best = f"{100 * (best / base_min - 1):+.1f} %" if base_min else "-"
        extra_cpu = f"{100 * (cpu / base_cpu - 1):+.1f} %" if base_cpu else "-"
        copy = statistics.median(r["copy_s"] for r in rs) * 1e3
        copy_cold = statistics.median(r["copy_cold_s"] for r in rs) * 1e3
        if "mean_blocking_s" in rs[0]:
            blocked = (f"{statistics.median(r['median_blocking_s'] for r in rs) * 1e3:.2f} / "
                       f"{max(r['max_blocking_s'] for r in rs) * 1e3:.1f}")
            analysis = f"{statistics.median(r['mean_analysis_s'] for r in rs):.2f}"
            snaps = f"{rs[0]['snapshots']} ({rs[0]['skipped']})"
        else:
            blocked = analysis = snaps = "-"
        print(f"| {config} | {wall:.2f} | {slow} | {slow_best} | {cpu:.1f} | {extra_cpu} | {blocked} "
              f"| {copy:.2f} / {copy_cold:.1f} "
              f"| {analysis} | {snaps} |")
    print("\nall runs:", json.dumps(runs), file=sys.stderr)


if __name__ == "__main__":
    main()
