"""How long a snapshot blocks the training loop, next to a bare copy of the same weights, by model size.

A plain CPU training loop (GPT-2-style models, SGD). After each optimizer
step, alternately: a WeightScope snapshot (``take_snapshot``, what
``WeightMonitor.step`` waits for), or a bare ``copy_`` of the same matrices
into buffers kept from one copy to the next, or fresh clones of them, or the
idiom ``{k: v.detach().clone() for k, v in model.state_dict().items()}``.
All run in situ, right after an optimizer step, with training's cache state.
Snapshots beyond the copy add a fixed cost (checking the bound selection,
taking buffers): about 0.1 ms, whatever the model's size.

    python benchmarks/snapshot_blocking.py [--sizes 256x4,512x8,768x12] [--steps 56]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from weightscope.demo_training import TinyGPT  # noqa: E402
from weightscope.monitor.snapshot import BufferPool, Selector, take_snapshot  # noqa: E402

WARMUP = 16


def measure(width: int, layers: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = TinyGPT(vocab=8000, n_positions=64, n_embd=width, n_layer=layers, n_head=8)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randint(0, 8000, (4, 32))
    selector, pool, cpu = Selector(), BufferPool(), torch.device("cpu")
    params = [p for p in model.parameters() if p.ndim >= 2]
    kept = [torch.zeros_like(p) for p in params]
    held = []  # a monitor holds the baseline and the previous snapshot: buffers rotate over three sets
    times: dict[str, list[float]] = {"snapshot": [], "copy": [], "clone": [], "state_dict": []}
    for i in range(steps):
        loss = model(x).float().logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        kind = ("snapshot", "copy", "clone", "state_dict")[i % 4]
        with torch.no_grad():
            t0 = time.perf_counter()
            if kind == "snapshot":
                snap = take_snapshot(model, i, selector, target=cpu, pool=pool)
                elapsed = snap.blocking_s
                held.append(snap)
                if len(held) > 2:
                    held.pop(0).release()
            elif kind == "copy":
                for buf, p in zip(kept, params):
                    buf.copy_(p)
                elapsed = time.perf_counter() - t0
            elif kind == "clone":
                clones = [p.clone() for p in params]
                elapsed = time.perf_counter() - t0
                del clones
            else:  # what a user would write, every tensor of the state dict
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                elapsed = time.perf_counter() - t0
                del state
        if i >= WARMUP:  # the first rounds allocate and fault in the buffers (three sets rotate)
            times[kind].append(elapsed)
    out = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    out["mb"] = sum(p.numel() * p.element_size() for p in params) / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256x4,512x8,768x12", help="width x layers, comma-separated")
    ap.add_argument("--steps", type=int, default=56)
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, median of {(args.steps - WARMUP) // 4} each\n")
    print("| model (width x layers) | matrices (MB) | blocked per snapshot (ms) | bare copy into kept buffers (ms) "
          "| clone (ms) | state_dict clone (ms) | blocked / copy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        width, layers = map(int, size.split("x"))
        r = measure(width, layers, args.steps)
        print(f"| {width} x {layers} | {r['mb']:.0f} | {r['snapshot']:.2f} | {r['copy']:.2f} | {r['clone']:.2f} "
              f"| {r['state_dict']:.2f} | {r['snapshot'] / r['copy']:.2f} |")


if __name__ == "__main__":
    main()
