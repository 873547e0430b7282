"""DDP on CPU with gloo, two processes: ``distributed="split"``, the rank-0 default, DTensor and FSDP1 gathering."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

METHODS = ["basic_stats", "spectral"]
STEPS = 6


def _train(model, monitor, steps, seed):
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.05)
    g = torch.Generator().manual_seed(seed + dist.get_rank())
    saved = {}
    monitor.start(model, 0)
    saved[0] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for step in range(1, steps + 1):
        x = torch.randn(16, 8, generator=g)
        loss = ddp(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 2 == 0:
            saved[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        monitor.step(model, step)
    monitor.close(model, steps)
    return saved


def _check_records(monitor, saved, out):
    import numpy as np
    from numpy_reference import condition_number, l2_norm

    from weightscope.sinks.jsonl import read_jsonl

    records = list(read_jsonl(out / "weightscope.jsonl"))
    assert [r["step"] for r in records] == [0, 2, 4, 6]
    for rec in records:
        weights = {k.removesuffix(".weight"): v for k, v in saved[rec["step"]].items() if k.endswith("weight")}
        assert sorted(rec["layers"]) == sorted(weights) and len(weights) == 4
        for layer, w in weights.items():  # numpy float64 of the weights rank 0 had at that step
            assert rec["layers"][layer]["basic_stats"]["l2_norm"] == pytest.approx(l2_norm(w), rel=1e-9)
            assert rec["layers"][layer]["spectral"]["condition_number"] == pytest.approx(condition_number(w),
                                                                                         rel=1e-9)
        if rec["step"]:
            assert sorted(rec["diff_prev"]) == sorted(rec["layers"])
            prev = {k.removesuffix(".weight"): v for k, v in saved[rec["prev_step"]].items() if k.endswith("weight")}
            for layer, w in weights.items():
                a, b = prev[layer].double().numpy(), w.double().numpy()
                want = np.linalg.norm(b - a) / np.linalg.norm(a)
                assert rec["diff_prev"][layer]["relative_l2_distance"] == pytest.approx(want, rel=1e-9)


def _worker(rank: int, world: int, init: str, tmp: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from callback_models import TinyNet

    from weightscope.callbacks import WeightMonitor

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    tmp_path = Path(tmp)
    report = {}
    try:
        # split: each rank copies and analyses about half the layers; rank 0 gathers and logs.
        torch.manual_seed(0)
        model = TinyNet(hidden=24)
        out = tmp_path / "split"
        monitor = WeightMonitor(every_n_steps=2, methods=METHODS, distributed="split", output_dir=out,
                                max_pending=64, full_scan_every=1)
        saved = _train(model, monitor, STEPS, seed=1)
        full = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n.endswith("weight"))
        report["split_bytes"] = monitor.stats.snapshot_bytes
        report["full_bytes"] = full
        if rank == 0:
            _check_records(monitor, saved, out)

        # rank0 (default): only rank 0 snapshots, analyses and logs.
        torch.manual_seed(0)
        model = TinyNet(hidden=24)
        out = tmp_path / "rank0"
        monitor = WeightMonitor(every_n_steps=2, methods=METHODS, output_dir=out, max_pending=64,
                                full_scan_every=1)
        saved = _train(model, monitor, STEPS, seed=2)
        report["rank0_snapshots"] = monitor.stats.snapshots
        if rank == 0:
            _check_records(monitor, saved, out)

        # DTensor (what FSDP2 holds): every rank joins the gather, rank 0 sees the full weight.
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import Shard, distribute_tensor

        mesh = init_device_mesh("cpu", (world,))
        torch.manual_seed(0)
        full_weight = torch.randn(8, 6)
        layer = torch.nn.Linear(6, 8, bias=False)
        layer.weight = torch.nn.Parameter(distribute_tensor(full_weight, mesh, [Shard(0)]))
        monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats"], output_dir=tmp_path / "dtensor")
        monitor.start(layer, 0)
        monitor.close()
        if rank == 0:
            [rec] = monitor.records
            want = float(full_weight.double().norm())
            assert rec.results["weight"]["basic_stats"]["l2_norm"] == pytest.approx(want, rel=1e-12)
            assert rec.results["weight"]["basic_stats"]["numel"] == 48

        # FSDP1: every rank enters summon_full_params (collective); rank 0 copies the full weights
        # under their own names, not the sharded flat parameter.
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        full = {k.removesuffix(".weight"): v.detach().clone() for k, v in net.state_dict().items()
                if k.endswith("weight")}
        wrapped = FSDP(net, device_id=torch.device("cpu"))
        assert [n for n, _ in wrapped.named_parameters()] == ["_fsdp_wrapped_module._flat_param"]
        monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats"], output_dir=tmp_path / "fsdp1")
        monitor.start(wrapped, 0)
        monitor.close()
        report["fsdp1_records"] = len(monitor.records)
        if rank == 0:
            [rec] = monitor.records
            assert sorted(rec.results) == sorted(full)
            for layer, weight in full.items():
                want = float(weight.double().norm())
                assert rec.results[layer]["basic_stats"]["l2_norm"] == pytest.approx(want, rel=1e-12)
        report["ok"] = True
    except Exception as exc:  # reported to the parent, which fails the test with it
        import traceback

        report["error"] = "".join(traceback.format_exception(exc))
    finally:
        (tmp_path / f"report{rank}.json").write_text(json.dumps(report))
        dist.destroy_process_group()
        # After FSDP1 on gloo, interpreter teardown aborts (SIGABRT) in torch's own threads; the
        # report is written, so leave without it.
        sys.stdout.flush()
        os._exit(0)


def test_ddp_split_rank0_dtensor_and_fsdp1_with_gloo(tmp_path):
    init = f"file://{tmp_path / 'init'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(2)]
    for r, report in enumerate(reports):
        assert "error" not in report, f"rank {r}:\n{report['error']}"
        assert report["ok"]
        # each rank copied only its share of the layers
        assert 0 < report["split_bytes"] < report["full_bytes"]
    assert reports[0]["rank0_snapshots"] == 4 and reports[1]["rank0_snapshots"] == 0
    assert reports[0]["fsdp1_records"] == 1 and reports[1]["fsdp1_records"] == 0


@pytest.mark.parametrize("env, world, expected", [
    ({"LOCAL_WORLD_SIZE": "4"}, 8, 4),  # torchrun, 2 nodes of 4
    ({}, 8, 8),  # a launcher without LOCAL_WORLD_SIZE: assume all ranks share the node
    ({"LOCAL_WORLD_SIZE": "4"}, 1, 1),  # not distributed: the variable is stale
    ({"LOCAL_WORLD_SIZE": "x"}, 2, 2),
])
def test_ranks_sharing_a_node(monkeypatch, env, world, expected):
    from weightscope.monitor.distributed import ranks_on_this_node

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ranks_on_this_node(world) == expected
