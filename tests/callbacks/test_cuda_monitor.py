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


def _race(tmp_path, model_device: str, target: str) -> dict[int, float]:
    """Each step writes its number into the weights, queues a long kernel ahead of the snapshot's
    copy, then overwrites the weights (stream-ordered after the copy) without a host sync: a
    snapshot must see exactly its step's value, never the overwrite or a stale buffer."""
    lin = torch.nn.Linear(2048, 2048, bias=False).to(model_device)
    monitor = WeightMonitor(every_n_steps=1, methods="basic_stats", device=target, output_dir=tmp_path,
                            max_pending=16, log_histograms=True)
    monitor.keep_records = 16
    with torch.no_grad():
        lin.weight.zero_()
    monitor.start(lin, 0)
    for step in range(1, 6):
        with torch.no_grad():
            lin.weight.fill_(float(step))
        with torch.cuda.device(lin.weight.device):
            torch.cuda._sleep(100_000_000)
        monitor.step(lin, step)
        with torch.no_grad():
            lin.weight.fill_(-999.0)
    monitor.close()
    return {r.step: r.results["weight"]["basic_stats"]["mean"] for r in monitor.records}


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_snapshot_copies_are_complete_before_analysis_reads_them(tmp_path, target):
    assert _race(tmp_path, "cuda:0", target) == {s: float(s) for s in range(6)}


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_a_model_on_another_device_than_the_current_one_is_waited_for(tmp_path):
    torch.cuda.set_device(0)
    assert _race(tmp_path, "cuda:1", "cpu") == {s: float(s) for s in range(6)}



@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_analysis_runs_on_the_training_threads_gpu_not_device_0(tmp_path, monkeypatch):
    import threading

    import weightscope.monitor.monitor as mon

    seen = []
    real = mon.scan_tensors

    def spy(tensors, methods, **kwargs):
        seen.append((threading.current_thread().name, str(kwargs["device"]),
                     {str(t.device) for t in tensors.values()}))
        return real(tensors, methods, **kwargs)

    monkeypatch.setattr(mon, "scan_tensors", spy)
    torch.cuda.set_device(1)  # what a DDP rank 1 does
    try:
        model = TinyNet().to("cuda:1")
        monitor = WeightMonitor(every_n_steps=1, methods="basic_stats", device="cuda", output_dir=tmp_path,
                                max_pending=8)
        monitor.start(model, 0)
        monitor.step(model, 1)  # analysed on the background thread, whose current device is 0
        monitor.close(model, 2)
    finally:
        torch.cuda.set_device(0)
    assert any(name == "weightscope-monitor" for name, _, _ in seen)
    assert all(dev == "cuda:1" and where == {"cuda:1"} for _, dev, where in seen), seen
    assert [r.step for r in monitor.records] == [0, 1, 2]
