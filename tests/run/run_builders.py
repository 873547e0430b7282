"""Real run folders for the run tests: a Hugging Face ``Trainer`` and a Lightning ``Trainer``, tiny, on CPU.

Plus independent references: tensors read with safetensors' numpy API or
``torch.load`` and compared in numpy float64.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import torch

STEPS = [2, 4, 6]
VOCAB, CTX = 64, 16


def build_hf_run(out: Path, max_steps: int = STEPS[-1], final: bool = False) -> Path:
    """``out/checkpoint-{2,4,6}/`` written by ``Trainer(save_steps=2)`` on a 2-layer GPT-2.

    ``final``: then ``trainer.save_model()`` and ``trainer.save_state()``, as the HF
    example scripts do: ``out/model.safetensors`` and ``out/trainer_state.json``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=CTX,
                                       bos_token_id=0, eos_token_id=0))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = torch.randint(0, VOCAB, (CTX,), generator=torch.Generator().manual_seed(i))
            return {"input_ids": ids, "labels": ids}

    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], use_cpu=True, logging_steps=1000, disable_tqdm=True, seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Tokens())
    trainer.train()
    if final:
        trainer.save_model()
        trainer.save_state()
    return out


def build_lightning_run(out: Path, live_dir: Path) -> Path:
    """``out/epoch=0-step={2,4,6}.ckpt`` (+ ``last.ckpt``) from ``ModelCheckpoint(every_n_train_steps=2)``,
    with the live ``WeightScopeCallback`` on the same training writing its JSONL history to ``live_dir``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from weightscope.callbacks.lightning import WeightScopeCallback

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 4))
    trainer = L.Trainer(
        max_steps=STEPS[-1], accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(out),
        callbacks=[
            ModelCheckpoint(dirpath=str(out), every_n_train_steps=2, save_top_k=-1, save_last=True),
            WeightScopeCallback(every_n_steps=2, background=False, output_dir=live_dir,
                                methods=["basic_stats", "spectral", "quantization"]),
        ],
    )
    trainer.fit(_lightning_net(), torch.utils.data.DataLoader(data, batch_size=8))
    return out


def build_lightning_run_with_final(out: Path, max_steps: int = 5) -> Path:
    """Lightning without a logger or a ``dirpath``: ``out/checkpoints/epoch=0-step={2,4}.ckpt``, then
    ``trainer.save_checkpoint(out / "final.ckpt")`` after training (``global_step`` ``max_steps``)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randn(64, 4))
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(out),
        callbacks=[ModelCheckpoint(every_n_train_steps=2, save_top_k=-1, save_on_train_epoch_end=False)],
    )
    trainer.fit(_lightning_net(), torch.utils.data.DataLoader(data, batch_size=8))
    trainer.save_checkpoint(out / "final.ckpt")
    return out


def _lightning_net():
    import lightning as L

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Net()


def build_sharded_model(out: Path) -> Path:
    """A tiny GPT-2 saved by ``save_pretrained`` in 7 safetensors shards + ``model.safetensors.index.json``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=CTX))
    model.save_pretrained(out, max_shard_size="20KB")
    assert len(list(out.glob("model-*-of-00007.safetensors"))) == 7, sorted(p.name for p in out.iterdir())
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """A private copy to damage or extend, without the cache of earlier tests."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".weightscope-cache"))
    return dst


# -- independent references ------------------------------------------------------
def hf_weights(checkpoint: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return _matrices(load_file(checkpoint / "model.safetensors"))


def sharded_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every shard of a sharded model read with safetensors' numpy API, merged."""
    from safetensors.numpy import load_file

    merged: dict[str, np.ndarray] = {}
    for shard in sorted(folder.glob("*-of-*.safetensors")):
        merged.update(load_file(shard))
    return _matrices(merged)


def lightning_weights(ckpt: Path) -> dict[str, np.ndarray]:
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return _matrices({k: v.numpy() for k, v in sd.items()})


def _matrices(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a scan covers by default: floating matrices, keyed by layer (name less ``.weight``)."""
    return {k.removesuffix(".weight"): v.astype(np.float64) for k, v in tensors.items() if v.ndim >= 2}


def reference_diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.ravel(), b.ravel()
    na, nb, d = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(b - a)
    return {"l2_distance": d, "relative_l2_distance": d / na, "cosine_similarity": a @ b / (na * nb),
            "l2_norm_ratio": nb / na, "max_abs_diff": np.abs(b - a).max()}


def callback_readers():
    """The callbacks' tests' readers of TensorBoard and offline W&B files, shared rather than copied."""
    path = Path(__file__).resolve().parents[1] / "callbacks" / "callback_readers.py"
    spec = importlib.util.spec_from_file_location("callback_readers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
