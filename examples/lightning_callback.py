"""WeightScope as a Lightning callback: a small GPT-2-style model, TensorBoard and an offline W&B run.

    python examples/lightning_callback.py [--out weightscope-example-lightning] [--steps 200]
    tensorboard --logdir weightscope-example-lightning/tensorboard

Runs on CPU in well under a minute; nothing is downloaded (the text is synthetic).
Needs lightning, tensorboard and (for the W&B part) wandb.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from weightscope.callbacks import WeightScopeCallback
from weightscope.demo_training import SyntheticText, TinyGPT, lightning_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="weightscope-example-lightning")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)

    loggers = [TensorBoardLogger(str(out), name="tensorboard", version="")]
    try:
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLogger(project="weightscope-example", save_dir=str(out), offline=True))
    except ImportError:
        print("wandb not installed: TensorBoard and JSONL only")

    torch.manual_seed(0)
    module = lightning_module(TinyGPT(n_layer=2), SyntheticText(size=2048, length=32))
    weightscope = WeightScopeCallback(
        every_n_steps=20,
        log_histograms=True,
        stop_on=["nan"],  # NaN/Inf in any weight stops training
        alerts={"condition_number": {"max": 1e5}},  # tune a rule; see docs/monitoring.md
    )
    trainer = L.Trainer(max_steps=args.steps, callbacks=[weightscope], logger=loggers, accelerator="cpu",
                        devices=1, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10,
                        enable_checkpointing=False, default_root_dir=str(out))
    trainer.fit(module)
    if len(loggers) > 1:
        import wandb

        wandb.finish()

    monitor = weightscope.monitor
    for alert in monitor.alerts:
        print(f"ALERT [{alert.level}] step {alert.step}: {alert.message}")
    s = monitor.stats
    print(f"{s.snapshots} snapshots taken, {s.skipped} skipped while analysis was behind (see max_pending), "
          f"{len(monitor.alerts)} alert{'' if len(monitor.alerts) == 1 else 's'}; "
          f"loop blocked {1e3 * s.mean_blocking_s:.2f} ms per snapshot")
    print(f"history: {monitor.output_dir / 'weightscope.jsonl'}\nlook at it: tensorboard --logdir {out / 'tensorboard'}")


if __name__ == "__main__":
    main()
