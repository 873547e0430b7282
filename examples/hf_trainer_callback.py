"""WeightScope with the Hugging Face Trainer: a tiny GPT-2 built from a config, synthetic tokens.

    python examples/hf_trainer_callback.py [--out weightscope-example-hf] [--steps 60]
    tensorboard --logdir weightscope-example-hf/runs

Runs on CPU in well under a minute; nothing is downloaded. Logs to TensorBoard
in the folder HF's own TensorBoard integration uses, to the active W&B run
when "wandb" is in report_to (offline here), and always to
<output_dir>/weightscope.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from weightscope.callbacks import WeightScopeTrainerCallback


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int = 512, length: int = 32, vocab: int = 256) -> None:
        g = torch.Generator().manual_seed(0)
        base = torch.randint(0, vocab, (n, 1), generator=g)
        self.ids = (base + torch.arange(length)) % vocab  # a learnable pattern: counting up

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="weightscope-example-hf")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    report_to = ["tensorboard"]
    try:
        import wandb  # noqa: F401

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_DIR", args.out)
        os.environ.setdefault("WANDB_PROJECT", "weightscope-example")
        os.makedirs(args.out, exist_ok=True)
        report_to.append("wandb")
    except ImportError:
        pass

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=2, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config)
    training_args = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=16, learning_rate=3e-3,
        logging_steps=10, save_strategy="no", report_to=report_to, use_cpu=True, disable_tqdm=True,
    )
    weightscope = WeightScopeTrainerCallback(every_n_steps=10, log_histograms=True, stop_on=["nan"])
    trainer = Trainer(model=model, args=training_args, train_dataset=Tokens(), callbacks=[weightscope])
    trainer.train()
    if "wandb" in report_to:
        import wandb

        wandb.finish()

    monitor = weightscope.monitor
    for alert in monitor.alerts:
        print(f"ALERT [{alert.level}] step {alert.step}: {alert.message}")
    s = monitor.stats
    print(f"{s.snapshots} snapshots taken, {s.skipped} skipped while analysis was behind (see max_pending), "
          f"{len(monitor.alerts)} alert{'' if len(monitor.alerts) == 1 else 's'}; "
          f"loop blocked {1e3 * s.mean_blocking_s:.2f} ms per snapshot")
    print(f"history: {monitor.output_dir / 'weightscope.jsonl'}")


if __name__ == "__main__":
    main()
