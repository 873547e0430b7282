"""DeepSpeed ZeRO-3 on CPU (its CPU accelerator, gloo), two processes: every rank joins the gather, rank 0 logs.

DeepSpeed is a test dependency only (the ``dev`` extra), not a WeightScope
one; its CPU communication op is built on first use, which needs a C++
compiler. When DeepSpeed itself cannot start here, the test is skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

# Looked up, not imported: only the worker processes import DeepSpeed, so its import-time setup
# (accelerator detection, logging) never touches the rest of the test session.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs DeepSpeed")


def _full_norms(module: torch.nn.Module) -> dict[str, float]:
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return {n.removesuffix(".weight"): float(p.detach().double().norm())
                for n, p in module.named_parameters() if n.endswith("weight")}


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), DS_ACCELERATOR="cpu")
    report: dict = {}
    try:
        import deepspeed

        from weightscope.callbacks import WeightMonitor

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        config = {"train_micro_batch_size_per_gpu": 4, "zero_optimization": {"stage": 3},
                  "zero_allow_untested_optimizer": True}
        try:  # DeepSpeed's own start (it compiles its CPU communication op on first use)
            deepspeed.init_distributed(dist_backend="gloo")
            engine, *_ = deepspeed.initialize(model=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
                                              config=config)
        except Exception as exc:
            report["setup_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return
        module = engine.module
        report["local_numel"] = sum(p.numel() for p in module.parameters())  # 0: every weight partitioned
        want = {0: _full_norms(module)}
        monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats"], output_dir=Path(tmp) / "zero3")
        monitor.start(module, 0)
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(rank))
        engine.backward(engine(x).pow(2).mean())
        engine.step()
        monitor.step(module, 1)
        want[1] = _full_norms(module)
        monitor.close()
        report["want"] = want
        report["records"] = {r.step: {k: v["basic_stats"]["l2_norm"] for k, v in r.results.items()}
                             for r in monitor.records}
    except Exception as exc:  # reported to the parent, which fails the test with it
        report["error"] = "".join(traceback.format_exception(exc))
    finally:
        Path(tmp, f"report{rank}.json").write_text(json.dumps(report))
        sys.stdout.flush()
        os._exit(0)  # as after FSDP1: skip an interpreter teardown that gloo process groups can abort


def test_zero3_parameters_are_gathered_on_every_rank_and_logged_by_rank_0(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in range(2)]
    setup = [report["setup_error"] for report in reports if "setup_error" in report]
    if setup:  # the environment, not WeightScope: e.g. no C++ compiler for DeepSpeed's op
        pytest.skip(f"DeepSpeed could not start here: {setup[0]}")
    for r, report in enumerate(reports):
        assert "error" not in report, f"rank {r}:\n{report['error']}"
        assert report["local_numel"] == 0
    assert reports[1]["records"] == {}
    records = reports[0]["records"]
    assert sorted(records) == ["0", "1"]  # JSON keys
    for step, norms in records.items():
        want = reports[0]["want"][step]
        assert sorted(norms) == ["0", "2"]
        assert norms == pytest.approx(want, rel=1e-12)
    assert records["1"] != pytest.approx(records["0"], rel=1e-6)  # the step changed the weights
