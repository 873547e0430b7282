"""The training half of ``weightscope demo``: a small GPT-2-style model, trained with the callback.

Plain torch (no transformers), tensor names and shapes as GPT-2's (see
:func:`weightscope.demo.demo_state_dict`), so it needs only ``lightning``,
plus ``tensorboard`` and ``wandb`` for those logs (each skipped with a
warning when missing). Nothing is downloaded: the text is synthetic.

>>> from pathlib import Path
>>> out = train_demo(Path("weightscope-demo"), steps=300)  # doctest: +SKIP
>>> out["alerts"][0]["rule"]  # doctest: +SKIP
'norm_ratio'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

#: The layer the demo damages mid-run, and how: its weights are multiplied by FAULT_SCALE.
FAULT_LAYER = "transformer.h.2.mlp.c_fc"
FAULT_SCALE = 8.0


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.attn.c_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Module()
        self.mlp.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.attn.c_proj(y)
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    """GPT-2's layout (``transformer.wte``, ``transformer.h.N.attn.c_attn``, ...), output tied to ``wte``."""

    def __init__(self, vocab: int = 2000, n_positions: int = 64, n_embd: int = 128, n_layer: int = 4,
                 n_head: int = 4) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(vocab, n_embd)
        self.transformer.wpe = nn.Embedding(n_positions, n_embd)
        self.transformer.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.transformer.ln_f = nn.LayerNorm(n_embd)
        for name, p in self.named_parameters():  # GPT-2's init
            if name.endswith("weight") and p.ndim == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return F.linear(self.transformer.ln_f(x), self.transformer.wte.weight)


class SyntheticText(torch.utils.data.Dataset):
    """Token sequences from a fixed random bigram table: learnable, so the loss falls and weights drift."""

    def __init__(self, vocab: int = 2000, length: int = 64, size: int = 4096, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.next = torch.randint(0, vocab, (vocab, 4), generator=g)  # each token has 4 likely successors
        self.starts = torch.randint(0, vocab, (size,), generator=g)
        self.choices = torch.randint(0, 4, (size, length), generator=g)
        self.length = length

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        seq = torch.empty(self.length + 1, dtype=torch.long)
        seq[0] = self.starts[i]
        for t in range(self.length):
            seq[t + 1] = self.next[seq[t], self.choices[i, t]]
        return seq


def lightning_module(model: nn.Module, data: torch.utils.data.Dataset, *, batch_size: int = 8,
                     lr: float = 3e-3) -> Any:
    """``model`` wrapped as a LightningModule for next-token prediction on ``data``."""
    import lightning.pytorch as pl

    class LitGPT(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            logits = self.model(batch[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            self.log("train/loss", loss, prog_bar=False)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=0.01)

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                               generator=torch.Generator().manual_seed(0))

    return LitGPT()


def _save_weights(module: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path),
              metadata={"format": "pt"})
    return path


def train_demo(root: Path, steps: int = 300, console: Any = None,
               on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train the small GPT for ``steps`` steps under :class:`WeightScopeCallback`, planting one fault.

    Writes under ``root``: ``checkpoints/step-<N>.safetensors`` (first and
    last), ``tensorboard/``, ``wandb/`` (an offline run) and the JSONL history.
    Returns their paths and the alerts raised (as dicts). ``console``: anything
    with ``print(text)`` for the plain-text progress messages (else they are
    logged); ``on_step(done, total)`` is called after every training step.
    """
    import lightning.pytorch as pl

    from .callbacks import WeightScopeCallback

    def say(msg: str) -> None:
        if console is not None:
            console.print(msg)
        else:
            log.info(msg)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    every = max(1, steps // 15)
    fault_step = (2 * steps // 3) // every * every or every
    torch.manual_seed(0)
    model = TinyGPT()
    module = lightning_module(model, SyntheticText())
    ckpt_dir = root / "checkpoints"

    class Demo(pl.Callback):
        """Saves the first and last weights and plants the fault (before WeightScope sees the step)."""

        def __init__(self) -> None:
            self.paths: dict[str, Path] = {}

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.paths["first"] = _save_weights(model, ckpt_dir / f"step-{trainer.global_step:06d}.safetensors")

        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step == fault_step and "fault" not in self.paths:
                with torch.no_grad():
                    model.get_parameter(f"{FAULT_LAYER}.weight").mul_(FAULT_SCALE)
                self.paths["fault"] = Path(FAULT_LAYER)
                say(f"step {fault_step}: planted a fault: {FAULT_LAYER} weights x{FAULT_SCALE:g}")
            if on_step is not None:
                on_step(trainer.global_step, steps)

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.paths["last"] = _save_weights(model, ckpt_dir / f"step-{trainer.global_step:06d}.safetensors")

    loggers: list[Any] = []
    tb_dir = wandb_dir = None
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        tb = TensorBoardLogger(str(root), name="tensorboard", version="")
        loggers.append(tb)
        tb_dir = Path(tb.log_dir)
    except (ImportError, ModuleNotFoundError) as exc:
        log.warning("no TensorBoard logs: %s", exc)
    wandb_run = None
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger

        wb = WandbLogger(project="weightscope-demo", save_dir=str(root), offline=True)
        loggers.append(wb)
        wandb_run = wb
    except (ImportError, ModuleNotFoundError) as exc:
        log.warning("no W&B run: %s", exc)

    demo = Demo()
    # From GPT-2's tiny init, AdamW at this rate grows the c_proj norms ~3x and moves some condition
    # numbers ~100x in the first tens of steps: real, but not what the demo is about. Looser bounds
    # keep the alert list to the planted fault.
    # max_pending=16: on a small CPU the analysis trails this tiny model's training by a few
    # snapshots; the demo queues rather than skips, so the planted fault is caught at the very step
    # it was planted. full_scan_every=1: every snapshot has spectra, so every chart is complete
    # (the default budget would thin them on a CPU that training keeps busy).
    callback = WeightScopeCallback(every_n_steps=every, output_dir=root, log_histograms=True, max_pending=16,
                                   full_scan_every=1,
                                   alerts={"norm_ratio": {"low": 0.25, "high": 4.0},
                                           "condition_number": {"growth": 1000.0}})
    trainer = pl.Trainer(
        max_steps=steps, callbacks=[demo, callback], logger=loggers or False, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, default_root_dir=str(root), log_every_n_steps=max(1, every // 2),
    )
    say(f"training a GPT-2-style model for {steps} steps, snapshot every {every} steps ...")
    trainer.fit(module)
    if wandb_run is not None:
        wandb_dir = Path(wandb_run.experiment.dir).parent
        import wandb

        wandb.finish()
    alerts = [a.to_dict() for a in callback.monitor.alerts]
    stats = callback.monitor.stats
    waited = sorted(stats.blocking_s)[len(stats.blocking_s) // 2] if stats.blocking_s else 0.0
    say(f"{stats.snapshots} snapshots, {len(alerts)} alerts; training waited "
        f"{1e3 * waited:.1f} ms per snapshot (median)")
    return {
        "first_checkpoint": demo.paths["first"],
        "last_checkpoint": demo.paths["last"],
        "tensorboard_dir": tb_dir,
        "wandb_dir": wandb_dir,
        "jsonl": root / "weightscope.jsonl",
        "alerts": alerts,
        "fault": {"layer": FAULT_LAYER, "step": fault_step, "scale": FAULT_SCALE},
        "stats": stats.as_dict(),
    }
