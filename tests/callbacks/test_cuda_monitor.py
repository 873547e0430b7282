"""Monitoring a CUDA model: pinned non-blocking copies and on-GPU analysis (runs only where a GPU is present)."""

from __future__ import annotations

import pytest
import torch

import weightscope
from weightscope.callbacks import WeightMonitor

from callback_models import TinyNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

METHODS = ["basic_stats", "spectral"]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_records_of_a_cuda_model_equal_a_direct_scan_of_its_weights(tmp_path, device):
    torch.manual_seed(0)
    model = TinyNet(hidden=64).cuda()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    monitor = WeightMonitor(every_n_steps=2, methods=METHODS, device=device, output_dir=tmp_path,
                            max_pending=16, full_scan_every=1)
    saved = {}
    monitor.start(model, 0)
    saved[0] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for step in range(1, 7):
        loss = model(torch.randn(32, 8, device="cuda")).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()  # updates in place right after a non-blocking copy: the stream must order them
        monitor.step(model, step)
        if step % 2 == 0:
            saved[step] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    monitor.close(model, 6)
    assert [r.step for r in monitor.records] == [0, 2, 4, 6]
    for rec in monitor.records:
        weights = {k: v for k, v in saved[rec.step].items() if k.endswith("weight")}
        direct = weightscope.scan(weights, methods=METHODS, parallel=False)
        for key, res in direct.items():
            layer = key.removesuffix(".weight")
            for method, stat in (("basic_stats", "l2_norm"), ("spectral", "condition_number")):
                # cuSOLVER vs LAPACK: up to ~4e-9 relative seen on an H100
                assert rec.results[layer][method][stat] == pytest.approx(res[method][stat], rel=1e-7)
    assert monitor.stats.snapshots == 4 and max(monitor.stats.blocking_s) < 1.0
    assert monitor.stats.start_wait_s == 0.0  # GPU weights: the baseline went to the analysis thread
