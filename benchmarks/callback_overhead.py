"""What monitoring costs a training run: Lightning, a GPT-2-style model (4 layers, width 256), CPU.

Configurations, each in a fresh process, repeated in a shuffled interleaved
order to damp noise from other work on the machine:

- ``none``: no monitoring;
- ``weightscope``: ``WeightScopeCallback(every_n_steps=50)`` with its defaults;
- ``wandb_watch``: ``wandb.watch(model, log="parameters", log_freq=50)``, offline run;
- extra ones with ``--configs`` (``weightscope_sync``: ``background=False``;
  ``weightscope_all``: ``methods="all"``; ``weightscope:key=value;key=value``: any
  monitor setting, e.g. ``weightscope:priority='normal'``).

Prints wall time of ``trainer.fit`` (the final snapshot's analysis
included) and the slowdown vs ``none``. Separate runs of the same
configuration differ by a few percent on a 2-core VM, as much as the effect
measured, so WeightScope rows also give an in-run estimate: how much longer
the steps that overlapped analysis took than the run's median step without
it, plus the wait for the final analysis. And the time the loop was blocked
per snapshot next to the cost of cloning the weights once at a step in the
same run.

    python benchmarks/callback_overhead.py [--steps 300] [--repeats 3] [--configs none,weightscope,wandb_watch]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = ("none", "weightscope", "wandb_watch")
MODEL = dict(vocab=2000, n_positions=64, n_embd=256, n_layer=4, n_head=4)


class StepClock:
    """A Lightning callback that times every optimizer step, in every configuration alike.

    It also copies the 2-D weights once in mid-interval (steps every/2, every/2 + every, ...),
    two ways: into buffers kept from one copy to the next (what a snapshot does) and as fresh
    clones. Both *in situ*, with training's own cache state and allocator: the yardstick for a
    snapshot's blocking time (a clone in a tight loop after training finds everything in cache
    and measures a third of it). Six copies of 14 MB add about 0.1 % to a run.
    """

    def __new__(cls, every: int, monitor_of=None, logs_every: bool = False):
        import lightning.pytorch as pl

        class _Clock(pl.Callback):
            def __init__(self) -> None:
                self.ends: list[float] = []
                self.busy: list[bool] = []
                self.clone_s: list[float] = []
                self.copy_s: list[float] = []
                self._kept = None
                self._snapshots = 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if not self.ends:
                    self.ends.append(time.perf_counter())

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                import torch

                step = trainer.global_step
                if step % every == every // 2:
                    params = [p for p in pl_module.parameters() if p.ndim >= 2]
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        copies = [p.detach().clone() for p in params]
                    self.clone_s.append(time.perf_counter() - t0)
                    del copies
                    if self._kept is None:  # buffers kept from one copy to the next, as a snapshot's are
                        self._kept = [torch.zeros_like(p) for p in params]
                    else:
                        t0 = time.perf_counter()
                        with torch.no_grad():
                            for buf, p in zip(self._kept, params):
                                buf.copy_(p)
                        self.copy_s.append(time.perf_counter() - t0)
                # Did this step snapshot (and maybe analyse inline), or end with analysis running?
                # Read after the monitoring callback's own hook ran.
                monitor = monitor_of() if monitor_of else None
                if monitor is not None:
                    snapshots = monitor.stats.snapshots
                    self.busy.append(bool(monitor._worker.pending) or snapshots != self._snapshots)
                    self._snapshots = snapshots
                else:  # wandb.watch logs in the forward of every ``every``-th step
                    self.busy.append(logs_every and step % every == 0)
                self.ends.append(time.perf_counter())

        return _Clock()


def in_run_overhead(ends: list[float], busy: list[bool]) -> float:
    """Seconds the steps that overlapped monitoring took beyond the median step without it.

    Free of the run-to-run noise that a comparison of separate runs carries (a few % here).
    A step flagged busy is one that took a snapshot or at whose end analysis was pending; the
    step after is counted too, since the job finished somewhere inside it.
    """
    durations = [b - a for a, b in zip(ends, ends[1:])]
    flagged = [bool(busy[i]) or (i > 0 and bool(busy[i - 1])) for i in range(len(durations))]
    quiet = [d for d, f in zip(durations, flagged) if not f]
    if not quiet:
        return float("nan")
    typical = statistics.median(quiet)
    return sum(d - typical for d, f in zip(durations, flagged) if f)


def _children_cpu_s() -> float:
    """CPU seconds used so far by this process's live child processes (wandb's service, say)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return total


def one_run(config: str, steps: int, every: int, workdir: Path) -> dict:
    import lightning.pytorch as pl
    import torch

    sys.path.insert(0, str(ROOT))
    from weightscope.demo_training import SyntheticText, TinyGPT, lightning_module

    torch.manual_seed(0)
    model = TinyGPT(**MODEL)
    module = lightning_module(model, SyntheticText(vocab=MODEL["vocab"], length=MODEL["n_positions"]))
    result = {"config": config}
    cb = None
    clock = StepClock(every, lambda: cb.monitor if cb is not None else None, logs_every=config == "wandb_watch")
    callbacks = []
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
    callbacks.append(clock)  # after WeightScope's: its hook has snapshotted when the clock reads the time
    trainer = pl.Trainer(
        max_steps=steps, callbacks=callbacks, logger=False, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, default_root_dir=str(workdir),
    )
    import resource

    helper0 = _children_cpu_s()  # wandb's service process, started by wandb.init above
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module)
    result["wall_s"] = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    # Page faults and context switches: what a slowdown without CPU time to match comes from.
    result.update(minor_faults=r1.ru_minflt - r0.ru_minflt, vol_switches=r1.ru_nvcsw - r0.ru_nvcsw,
                  invol_switches=r1.ru_nivcsw - r0.ru_nivcsw)
    result["cpu_s"] = time.process_time() - c0  # every thread of this process (not wandb's own process)
    if config == "wandb_watch":
        import wandb

        result["helper_cpu_s"] = _children_cpu_s() - helper0
        t1 = time.perf_counter()
        wandb.finish()
        result["finish_s"] = time.perf_counter() - t1
    if cb is not None:
        s = cb.monitor.stats
        result.update(snapshots=s.snapshots, skipped=s.skipped, mean_blocking_s=s.mean_blocking_s,
                      median_blocking_s=statistics.median(s.blocking_s), blocking_s=s.blocking_s,
                      max_blocking_s=s.max_blocking_s, mean_analysis_s=s.mean_analysis_s,
                      snapshot_mb=s.snapshot_bytes / 2**20, logging_s=sum(s.logging_s),
                      analysis_cpu_s=s.analysis_cpu_s, close_wait_s=s.close_wait_s, start_wait_s=s.start_wait_s)
        # The baseline's analysis before the first step and the wait at the end lie outside the clock's steps.
        result["in_run_overhead_s"] = in_run_overhead(clock.ends, clock.busy) + s.close_wait_s + s.start_wait_s
    elif config == "wandb_watch":  # the histogram steps only: wandb's own process's CPU shows elsewhere
        result["in_run_overhead_s"] = in_run_overhead(clock.ends, clock.busy)
    result["clone_s"] = clock.clone_s
    result["copy_s"] = clock.copy_s
    steps_s = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    # The typical step outside snapshots: a slowdown of every step would show here, not in-run.
    quiet = [d for i, d in enumerate(steps_s) if not (clock.busy[i] or (i and clock.busy[i - 1]))]
    result["quiet_step_s"] = statistics.median(quiet) if quiet else float("nan")  # nan: a run too short
    result["torch_threads"] = torch.get_num_threads()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--seed", type=int, default=0, help="seed of the run order's shuffle")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one_run(args.one, args.steps, args.every, Path(tmp))))
        return
    configs = [c for c in args.configs.split(",") if c]
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    rng = random.Random(args.seed)
    for rep in range(args.repeats):
        # Interleaved, so drifting machine load hits every config alike; shuffled, so that no
        # config always runs first after a pause (the first run of a round tended to be fastest).
        order = configs[:]
        rng.shuffle(order)
        for config in order:
            cmd = [sys.executable, __file__, "--one", config, "--steps", str(args.steps), "--every", str(args.every)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                sys.exit(f"{config} failed:\n{out.stderr[-3000:]}")
            res = json.loads(out.stdout.strip().splitlines()[-1])
            runs[config].append(res)
            print(f"# repeat {rep + 1} {config}: {res['wall_s']:.2f} s", file=sys.stderr, flush=True)
    med = statistics.median
    base = med(r["wall_s"] for r in runs["none"]) if "none" in runs else None
    base_min = min(r["wall_s"] for r in runs["none"]) if "none" in runs else None
    base_cpu = med(r["cpu_s"] for r in runs["none"]) if "none" in runs else None
    print(f"\n{args.steps} steps, snapshot / watch every {args.every} steps, median of {args.repeats} runs, "
          f"{os.cpu_count()} cores, torch threads {runs[configs[0]][0]['torch_threads']}\n")
    print("| configuration | wall time, median (s) | slowdown, median | slowdown, paired | slowdown, best run "
          "| in-run estimate "
          "| extra CPU | blocked per snapshot, median / max (ms) "
          "| copy weights once into kept buffers / clone them, in situ (ms) "
          "| analysis CPU per snapshot (s) | snapshots (skipped) | step outside snapshots, median (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for config, rs in runs.items():
        wall = med(r["wall_s"] for r in rs)
        best = min(r["wall_s"] for r in rs)
        cpu = med(r["cpu_s"] for r in rs)
        slow = f"{100 * (wall / base - 1):+.1f} %" if base else "-"
        slow_best = f"{100 * (best / base_min - 1):+.1f} %" if base_min else "-"
        # Each repeat's run against the baseline run of the same round: drift between rounds cancels.
        paired = (f"{100 * (med(r['wall_s'] / b['wall_s'] for r, b in zip(rs, runs['none'])) - 1):+.1f} %"
                  if base else "-")
        extra_cpu = f"{100 * (cpu / base_cpu - 1):+.1f} %" if base_cpu else "-"
        if "helper_cpu_s" in rs[0]:  # the CPU of wandb's own process counts too: it shares the cores
            helper = med(r["helper_cpu_s"] for r in rs)
            extra_cpu += f" (+{helper:.2f} CPU-s in its own process)"
        clone = med(med(r["clone_s"] or [math.nan]) for r in rs) * 1e3
        copy = med(med(r["copy_s"] or [math.nan]) for r in rs) * 1e3
        if "mean_blocking_s" in rs[0]:
            blocked = (f"{med(r['median_blocking_s'] for r in rs) * 1e3:.2f} / "
                       f"{max(r['max_blocking_s'] for r in rs) * 1e3:.1f}")
            analysis = f"{med(r['analysis_cpu_s'] / max(r['snapshots'], 1) for r in rs):.3f}"
            snaps = f"{rs[0]['snapshots']} ({rs[0]['skipped']})"
        else:
            blocked = analysis = snaps = "-"
        in_run = "-"
        if "in_run_overhead_s" in rs[0]:
            cost = med(r["in_run_overhead_s"] for r in rs)
            in_run = f"+{100 * cost / (wall - cost):.1f} % ({cost:.2f} s)"
        print(f"| {config} | {wall:.2f} | {slow} | {paired} | {slow_best} | {in_run} | {extra_cpu} | {blocked} "
              f"| {copy:.2f} / {clone:.2f} "
              f"| {analysis} | {snaps} | {1e3 * med(r['quiet_step_s'] for r in rs):.1f} |")
    if "weightscope" in runs and "wandb_watch" in runs:
        # The two monitored runs of each round against each other: the comparison the target is about.
        pairs = list(zip(runs["weightscope"], runs["wandb_watch"]))
        diffs = [w["wall_s"] - b["wall_s"] for w, b in pairs]
        faster = sum(d < 0 for d in diffs)
        ratios = [w["wall_s"] / b["wall_s"] - 1 for w, b in pairs]
        boot = random.Random(0)
        meds = sorted(med(boot.choices(ratios, k=len(ratios))) for _ in range(4000))
        print(f"\nweightscope - wandb_watch, same round: median {med(diffs):+.2f} s ({100 * med(ratios):+.1f} %, "
              f"bootstrap 95 % interval {100 * meds[100]:+.1f} % to {100 * meds[-101]:+.1f} %), "
              f"weightscope faster in {faster} of {len(diffs)} rounds")
    print("\nall runs:", json.dumps(runs), file=sys.stderr)


if __name__ == "__main__":
    main()
