"""WeightScope in a plain PyTorch loop: no framework, TensorBoard + JSONL, one planted fault.

    python examples/plain_loop.py [--out weightscope-example-plain]
    tensorboard --logdir weightscope-example-plain/tensorboard

Runs on CPU in a few seconds; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from weightscope.callbacks import WeightMonitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="weightscope-example-plain")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 128), torch.nn.GELU(), torch.nn.Linear(128, 1)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, w = torch.randn(2048, 32), torch.randn(32, 1)
    y = torch.sin(x @ w)

    every = 25
    fault_step = args.steps // 2
    monitor = WeightMonitor(
        every_n_steps=every,
        # This toy trains a step in well under a millisecond, far faster than a snapshot is analysed (tens of
        # ms, more on a cold first run), so with the default max_pending=1 snapshots would be skipped while
        # analysis is behind - possibly the one right after the fault. Let every snapshot of the run queue
        # instead: each waiting one holds a copy of the weights (80 KB here). A real model's steps are slower
        # than its analysis; where they are not, raise every_n_steps or max_pending, or pass cheaper methods.
        max_pending=args.steps // every + 2,
        sinks=[f"tensorboard:{out / 'tensorboard'}"],  # add "wandb" to log to the active W&B run too
        output_dir=out,  # the JSONL history (always written) and the baseline weights
        log_histograms=True,
        on_alert=lambda alert: print(f"ALERT [{alert.level}] step {alert.step}: {alert.message}"),
    )
    monitor.start(model, step=0)  # the baseline
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(x), (64,))
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == fault_step:  # planted fault: one layer's weights blow up
            with torch.no_grad():
                model[2].weight.mul_(10.0)
        monitor.step(model, step, last=step == args.steps)  # last: the final snapshot, in full
        if monitor.should_stop:  # only with stop_on=[...]
            break
    monitor.close(model, step)  # final snapshot if not taken yet, waits for the analysis, closes the sinks

    s = monitor.stats
    print(f"{s.snapshots} snapshots taken, {s.skipped} skipped while analysis was behind, {len(monitor.alerts)} "
          f"alerts; loop blocked {1e3 * s.mean_blocking_s:.2f} ms per snapshot, analysis {s.mean_analysis_s:.3f} s "
          f"per snapshot (in the background)")
    hits = [a for a in monitor.alerts if a.layer == "2" and a.step >= fault_step]  # model[2] is layer "2"
    first = min((a.step for a in hits), default=None)
    print(f"planted fault at step {fault_step} in layer 2: " + (
        f"caught at step {first} ({', '.join(sorted({a.rule for a in hits if a.step == first}))})"
        if first is not None else "not caught"))
    print(f"history: {out / 'weightscope.jsonl'}\nlook at it: tensorboard --logdir {out / 'tensorboard'}")


if __name__ == "__main__":
    main()
