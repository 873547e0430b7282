"""The LightningModule the Lightning tests train (imported after ``pytest.importorskip``)."""

from __future__ import annotations

import lightning.pytorch as L
import torch
from callback_models import TinyNet, regression_data


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = TinyNet()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        # Frozen parameters stay out of the optimizer, as in real fine-tuning code.
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.05)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(regression_data(), batch_size=16, shuffle=False)
