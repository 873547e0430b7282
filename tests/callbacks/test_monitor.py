"""WeightMonitor in a plain loop: sinks by name, failure isolation, argument checks, lazy imports."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from weightscope.callbacks import WeightMonitor
from weightscope.errors import ConfigError
from weightscope.sinks.jsonl import read_jsonl

from callback_models import TinyNet
from callback_readers import find_wandb_file, tb_scalars, wandb_history


def train(monitor, steps=10, fault_at=None, start=True, keep=None):
    """``keep``: a dict that receives a float64 copy of every weight after each step (and at 0)."""
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    g = torch.Generator().manual_seed(0)

    def copy(step):
        if keep is not None:
            keep[step] = {n.removesuffix(".weight"): p.detach().double().numpy().copy()
                          for n, p in model.named_parameters() if n.endswith("weight")}

    copy(0)
    if start:
        monitor.start(model, 0)
    for step in range(1, steps + 1):
        loss = model(torch.randn(16, 8, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == fault_at:
            with torch.no_grad():
                model.mid.weight[0, 0] = float("inf")
        copy(step)
        monitor.step(model, step)
    monitor.close(model, steps)
    return model


def test_plain_loop_with_tensorboard_and_own_wandb_run(tmp_path):
    import wandb

    from weightscope.sinks.wandb import WandbSink

    seen = []
    wandb_sink = WandbSink(dir=str(tmp_path), project="weightscope-test")  # what the "wandb" sink string makes
    monitor = WeightMonitor(every_n_steps=4, methods="basic_stats", output_dir=tmp_path / "out", max_pending=16,
                            sinks=[f"tensorboard:{tmp_path / 'tb'}", wandb_sink], on_alert=seen.append,
                            log_histograms=True)
    weights = {}
    train(monitor, steps=10, fault_at=8, keep=weights)
    run_dir = Path(wandb_sink.run.dir).parent
    wandb.finish()
    records = list(read_jsonl(tmp_path / "out" / "weightscope.jsonl"))
    assert [r["step"] for r in records] == [0, 4, 8, 10]
    fired = [(a.rule, a.layer, a.step) for a in seen]
    assert fired[0] == ("nan", "mid", 8)  # an Inf counts too
    assert ("nan", "mid", 10) not in fired  # de-duplicated; the NaNs it spread to other layers are new
    assert records[-1]["summary"]["layers_alerting"] == 3  # inp, mid, out (not the frozen one)
    tb = tb_scalars(tmp_path / "tb")
    assert sorted(tb["weights_nan_count/inp"]) == [0, 4, 8, 10]
    assert tb["weights_inf_count/mid"][8] == 1
    rows = [r for r in wandb_history(find_wandb_file(run_dir)) if "weights_nan_count/inp" in r]
    assert [r["weightscope/step"] for r in rows] == [0, 4, 8, 10]
    assert rows[1]["weights_l2_norm/inp"] == records[1]["layers"]["inp"]["basic_stats"]["l2_norm"]
    # Every sink holds the numbers numpy float64 has for the weights at that step.
    for i, step in enumerate([0, 4]):
        for layer in ("inp", "mid", "out", "frozen"):
            want = np.linalg.norm(weights[step][layer])
            assert records[i]["layers"][layer]["basic_stats"]["l2_norm"] == pytest.approx(want, rel=1e-9)
            assert rows[i][f"weights_l2_norm/{layer}"] == pytest.approx(want, rel=1e-9)
            assert tb[f"weights_l2_norm/{layer}"][step] == pytest.approx(want, rel=1e-6)
    prev, cur = weights[0]["mid"], weights[4]["mid"]
    assert tb["drift_relative_l2_distance/mid"][4] == pytest.approx(
        np.linalg.norm(cur - prev) / np.linalg.norm(prev), rel=1e-6)


def test_background_and_inline_analysis_give_the_same_records(tmp_path):
    out = []
    for background in (True, False):
        m = WeightMonitor(every_n_steps=3, methods=["basic_stats", "spectral"], background=background,
                          max_pending=16, full_scan_every=1, output_dir=tmp_path / str(background))
        train(m, steps=9)
        out.append([r.to_json_dict() for r in m.records])
    assert [r["step"] for r in out[0]] == [r["step"] for r in out[1]] == [0, 3, 6, 9]
    for a, b in zip(*out):
        a.pop("timing"), b.pop("timing")
        assert a == b


class ExplodingSink:
    def __init__(self) -> None:
        self.calls = 0

    def write(self, record):
        self.calls += 1
        raise RuntimeError("sink down")


def test_failures_in_sinks_analysis_and_callbacks_never_stop_training(tmp_path, caplog, monkeypatch):
    sink = ExplodingSink()

    def bad_on_alert(alert):
        raise ValueError("user bug")

    import weightscope.monitor.monitor as mon

    calls = {"n": 0}
    real = mon.scan_tensors

    def flaky_scan(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("analysis blew up")
        return real(*args, **kwargs)

    monkeypatch.setattr(mon, "scan_tensors", flaky_scan)
    monitor = WeightMonitor(every_n_steps=2, methods="basic_stats", sinks=[sink], on_alert=bad_on_alert,
                            output_dir=tmp_path, max_pending=16)
    with caplog.at_level(logging.WARNING, logger="weightscope.monitor"):
        train(monitor, steps=8, fault_at=6)
    assert sink.calls == 4  # every record still offered to it (one analysis failed)
    warnings = [r.getMessage() for r in caplog.records if "reported once" in r.getMessage()]
    assert sum("sink down" in w for w in warnings) == 1
    assert sum("user bug" in w for w in warnings) == 1
    assert sum("analysis blew up" in w for w in warnings) == 1
    steps = [r["step"] for r in read_jsonl(tmp_path / "weightscope.jsonl")]
    assert steps == [0, 4, 6, 8]


def test_skips_and_warns_once_when_analysis_falls_behind(tmp_path, caplog, monkeypatch):
    import weightscope.monitor.monitor as mon

    gate = threading.Event()
    real = mon.scan_tensors

    def slow_scan(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(mon, "scan_tensors", slow_scan)
    monitor = WeightMonitor(every_n_steps=1, methods="basic_stats", output_dir=tmp_path, max_pending=1)
    torch.manual_seed(0)
    model = TinyNet()
    with caplog.at_level(logging.WARNING, logger="weightscope.monitor"):
        monitor.start(model, 0)  # CPU weights: the baseline is analysed here, before training
        for step in range(1, 6):
            monitor.step(model, step)  # step 1 is still in analysis: 2 to 5 are skipped
        gate.set()
        monitor.close(model, 6)  # the final snapshot is never skipped
    assert monitor.stats.skipped == 4
    assert sum("analysis is behind" in r.getMessage() for r in caplog.records) == 1
    assert [r["step"] for r in read_jsonl(tmp_path / "weightscope.jsonl")] == [0, 1, 6]


def test_baseline_of_cpu_weights_is_analysed_before_training_the_rest_in_the_background(tmp_path, monkeypatch):
    import weightscope.monitor.monitor as mon

    threads = []
    real = mon.scan_tensors

    def scan(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(mon, "scan_tensors", scan)
    monitor = WeightMonitor(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, max_pending=16)
    model = TinyNet()
    monitor.start(model, 0)
    assert [r.step for r in monitor.records] == [0] and monitor.stats.start_wait_s > 0
    for step in (1, 2):
        monitor.step(model, step)
    monitor.close(model, 3)
    main = threading.main_thread().name
    assert threads == [main, "weightscope-monitor", main]  # baseline, periodic, final
    assert [r.step for r in monitor.records] == [0, 2, 3]


@pytest.mark.parametrize("kwargs, match", [
    ({"every_n_steps": 0}, "every_n_steps must be an integer >= 1"),
    ({"every_n_steps": 2.5}, "every_n_steps"),
    ({"methods": ["spectrall"]}, "unknown method 'spectrall'"),
    ({"layers": "("}, "invalid layers regex"),
    ({"max_pending": 0}, "max_pending"),
    ({"alerts": {"nan": {"level": "LOUD"}}}, "alert level"),
    ({"stop_on": ["nan", "boom"]}, "stop_on names unknown rules"),
    ({"distributed": "all"}, "distributed must be one of"),
    ({"device": "tpu"}, "device"),
    ({"on_alert": 3}, "on_alert must be a function"),
    ({"log_histograms": "yes"}, "log_histograms must be True or False"),
    ({"sinks": ["mlflow"]}, "unknown sink 'mlflow'"),
])
def test_bad_arguments_fail_in_init(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WeightMonitor(**kwargs)


def test_callbacks_check_arguments_in_init_too():
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from weightscope.callbacks import WeightScopeCallback, WeightScopeTrainerCallback

    for cls in (WeightScopeCallback, WeightScopeTrainerCallback):
        with pytest.raises(ConfigError, match="every_n_steps"):
            cls(every_n_steps=-1)
        with pytest.raises(ConfigError, match="unknown alert rule"):
            cls(alerts={"typo": True})


def test_importing_callbacks_needs_no_framework():
    code = ("import sys; import weightscope.callbacks as c; from weightscope.callbacks import WeightMonitor; "
            "bad = [m for m in ('lightning', 'transformers', 'wandb', 'tensorboard') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_disabled_wandb_works(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monitor = WeightMonitor(every_n_steps=5, methods="basic_stats", sinks=["wandb"], output_dir=tmp_path)
    train(monitor, steps=5, fault_at=5)
    wandb.finish()
    assert [(a.rule, a.layer, a.step) for a in monitor.alerts] == [("nan", "mid", 5)]
    # the disabled sink costs the other outputs nothing: the history still has both snapshots
    records = list(read_jsonl(tmp_path / "weightscope.jsonl"))
    assert [(r["step"], r["layers"]["mid"]["basic_stats"]["inf_count"]) for r in records] == [(0, 0), (5, 1)]


def simulate_budget(tmp_path, monkeypatch, *, cores, gaps, training_cores=None):
    """A monitor on simulated clocks: ``gaps[i]`` wall seconds before step i + 1, every full
    analysis "takes" 1 s of CPU, budget 10 %. ``training_cores``: the cores training keeps busy
    (None: the process clock stands still). Returns the records, oldest first."""
    import weightscope.monitor.monitor as mon

    clock = {"wall": 0.0, "analysis": 0.0, "training": 0.0}

    def cpu_clock():  # the analysis thread's clock, read at the start and end of a full analysis
        clock["analysis"] += 1.0
        return clock["analysis"]

    monkeypatch.setattr(mon, "_wall_clock", lambda: clock["wall"])
    monkeypatch.setattr(mon, "_cpu_clock", cpu_clock)
    # The process clock counts training's CPU plus the analysis thread's own.
    monkeypatch.setattr(mon, "_process_clock", lambda: clock["training"] + monitor.stats.analysis_cpu_s)
    # One worker: no pool threads, whose real CPU clocks the simulation does not drive.
    monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats", "spectral"], output_dir=tmp_path,
                            analysis_budget=0.1, background=False, num_workers=1)
    monitor._cores = cores
    monitor.keep_records = 100
    torch.manual_seed(0)
    model = TinyNet()
    monitor.start(model, 0)
    for step, gap in enumerate(gaps, start=1):
        clock["wall"] += gap
        clock["training"] += gap * (training_cores or 0.0)
        monitor.step(model, step)
    monitor.close(model, len(gaps) + 1)
    return monitor.records


def _full(records):
    return [r.step for r in records if "spectral" in r.methods]


def test_full_scans_thin_out_when_they_cost_more_than_the_budget(tmp_path, monkeypatch):
    # 2.5 s per step: at 10 % of a core, a 1 s analysis may run every 10 s, every 4th step.
    records = simulate_budget(tmp_path, monkeypatch, cores=1, gaps=[2.5] * 12)
    assert [r.step for r in records] == list(range(14))
    # The baseline's full analysis is paid for too: the first periodic full one waits for 2 s of credit.
    assert _full(records) == [0, 8, 12, 13]
    assert all(r.methods[0] == "basic_stats" and (r.diff_prev or r.step == 0) for r in records)


@pytest.mark.parametrize("training_cores, full_steps", [
    (4.0, [0, 8, 12, 13]),  # training keeps all 4 cores busy: the budget is 10 % of one core, as above
    (2.0, [0, 4, 6, 8, 10, 12, 13]),  # 2 idle cores: 20 % of one, a 1 s analysis every 5 s
    (0.0, [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),  # 4 idle cores: 40 %, every 2.5 s step
])
def test_the_budget_grows_with_the_cores_training_leaves_idle(tmp_path, monkeypatch, training_cores, full_steps):
    records = simulate_budget(tmp_path, monkeypatch, cores=4, gaps=[2.5] * 12, training_cores=training_cores)
    assert _full(records) == full_steps


def test_budget_credit_is_capped_so_a_long_pause_brings_no_burst(tmp_path, monkeypatch):
    gaps = [2.5, 2.5, 100.0] + [2.5] * 9  # a 100 s pause (evaluation, say) before step 3
    records = simulate_budget(tmp_path, monkeypatch, cores=1, gaps=gaps)
    # After the pause one full analysis, then the regular pace: one per 10 s (4 steps), not ten in a row.
    assert _full(records) == [0, 3, 7, 11, 13]


@pytest.mark.parametrize("background", [False, True])
def test_full_scan_every_k_and_a_thinned_last_snapshot_is_completed(tmp_path, background):
    monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats", "spectral"], output_dir=tmp_path,
                            full_scan_every=3, background=background, max_pending=16)
    monitor.keep_records = 100
    model = train(monitor, steps=7)  # step() at 7, then close(model, 7): step 7's snapshot was a cheap one
    records = monitor.records
    assert [(r.step, r.kind) for r in records if "spectral" in r.methods] == [
        (0, "baseline"), (3, "periodic"), (6, "periodic"), (7, "final")]
    periodic, final = [r for r in records if r.step == 7]
    assert periodic.kind == "periodic" and periodic.methods == ["basic_stats"]
    # The final record is the same weights in full: spectra equal numpy's of the trained model.
    for layer in ("inp", "mid", "out"):
        w = getattr(model, layer).weight.detach().double().numpy()
        assert final.results[layer]["spectral"]["condition_number"] == pytest.approx(np.linalg.cond(w), rel=1e-9)
        assert final.results[layer]["basic_stats"] == periodic.results[layer]["basic_stats"]
    assert final.diff_prev == periodic.diff_prev and final.prev_step == periodic.prev_step == 6
    # ... and its drift was not fed to the rules a second time, nor was it counted as another snapshot.
    alert_state = monitor.state_dict()["alert_state"]
    assert len(alert_state["drift"]["inp"]) == 7
    assert alert_state["snapshots"] == 8 == len(records) - 1  # 0..7, the completing record not counted
    steps = [(r["step"], r["kind"]) for r in read_jsonl(tmp_path / "weightscope.jsonl")]
    assert steps[-2:] == [(7, "periodic"), (7, "final")]


def test_the_last_step_passed_as_last_completes_a_thinned_snapshot_once(tmp_path):
    monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats", "spectral"], output_dir=tmp_path,
                            full_scan_every=3, background=False)
    torch.manual_seed(0)
    model = TinyNet()
    monitor.start(model, 0)
    for step in (1, 2):
        monitor.step(model, step)
    monitor.step(model, 2, last=True)
    monitor.close(model, 2)
    assert [(r.step, r.kind, "spectral" in r.methods) for r in monitor.records] == [
        (0, "baseline", True), (1, "periodic", False), (2, "periodic", False), (2, "final", True)]


def test_analysis_thread_keeps_its_own_torch_thread_count(tmp_path, monkeypatch):
    import weightscope.monitor.monitor as mon

    seen = []
    real = mon.scan_tensors

    def spy(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(*args, **kwargs)

    monkeypatch.setattr(mon, "scan_tensors", spy)
    before = torch.get_num_threads()
    monitor = WeightMonitor(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, max_pending=16)
    train(monitor, steps=4)
    on_worker = [n for name, n in seen if name == "weightscope-monitor"]
    assert on_worker == [1, 1]  # steps 2 and 4; the baseline is analysed on the training thread
    assert torch.get_num_threads() == before
    # threads started later still get the process default, not the analysis thread's 1
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert out == [before]


def _run_keeping_state_at(tmp_path, steps, keep_at):
    """A monitored run of ``steps`` steps, and its state as a checkpoint at ``keep_at`` holds it."""
    torch.manual_seed(0)
    model = TinyNet()
    kwargs = dict(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, background=False)
    first = WeightMonitor(**kwargs)
    first.start(model, 0)
    for step in range(1, steps + 1):
        with torch.no_grad():
            model.mid.weight.mul_(1.01)
        first.step(model, step)
        if step == keep_at:
            state = json.loads(json.dumps(first.state_dict()))
    first.close(model, steps)
    return model, kwargs, state


def test_resuming_from_an_earlier_step_moves_the_later_history_aside(tmp_path, caplog):
    model, kwargs, state = _run_keeping_state_at(tmp_path, steps=6, keep_at=2)
    with (tmp_path / "weightscope.jsonl").open("a") as fh:
        fh.write('{"step": 7, "kind": "periodic"')  # a torn last line, as a kill mid-write leaves
    resumed = WeightMonitor(**kwargs)
    resumed.load_state_dict(state)
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        resumed.start(model, 2)
        for step in (3, 4, 5):
            resumed.step(model, step)
        resumed.close(model, 5)
    history = [(r["step"], r["kind"]) for r in read_jsonl(tmp_path / "weightscope.jsonl")]
    assert history == [(0, "baseline"), (2, "periodic"), (4, "periodic"), (5, "final")]
    aside = (tmp_path / "weightscope.jsonl.superseded").read_text().splitlines()
    assert aside[0] == '{"step": 7, "kind": "periodic"'  # the torn line, set aside when the file was opened
    assert [json.loads(line)["step"] for line in aside[1:]] == [4, 6]
    assert "moved 2 history records of later steps" in caplog.text


def test_a_layer_filter_that_matches_nothing_says_so_once(tmp_path, caplog):
    monitor = WeightMonitor(every_n_steps=2, methods="basic_stats", layers="^model\\.", output_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        train(monitor, steps=4)
    said = [r.getMessage() for r in caplog.records if "no layer matches" in r.getMessage()]
    assert len(said) == 1
    assert "layers='^model\\\\.'" in said[0] and "inp, mid, out, frozen" in said[0]
    assert monitor.records == []


def test_resume_without_a_saved_baseline_says_why(tmp_path, caplog):
    kwargs = dict(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, save_baseline=False, background=False)
    first = WeightMonitor(**kwargs)
    train(first, steps=2)
    resumed = WeightMonitor(**kwargs)
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        train(resumed, steps=2, start=False)
    assert "save_baseline=False" in caplog.text and "None" not in caplog.text


@pytest.mark.parametrize("framework, cls, module, extra", [
    ("lightning", "WeightScopeCallback", "lightning", "lightning"),
    ("transformers", "WeightScopeTrainerCallback", "huggingface", "hf"),
])
def test_a_missing_framework_says_what_to_install(framework, cls, module, extra):
    imports = [f"from weightscope.callbacks import {cls}", f"import weightscope.callbacks.{module}"]
    code = (f"import sys; sys.modules[{framework!r}] = None\n"
            "import weightscope.callbacks\n"  # needs no framework
            f"for how in {imports!r}:\n"
            "    try:\n"
            "        exec(how)\n"
            "    except ImportError as exc:\n"
            "        print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    for line in lines:
        assert line.startswith(f"ModuleNotFoundError {cls} needs {framework}"), line
        assert f"pip install 'weightscope[{extra}]'" in line


class ZeroInitNet(torch.nn.Module):
    """A LoRA-style adapter whose B starts at zero, beside an ordinary layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(8, 16)
        self.lora_a = torch.nn.Linear(8, 4, bias=False)
        self.lora_b = torch.nn.Linear(4, 16, bias=False)
        torch.nn.init.zeros_(self.lora_b.weight)
        self.out = torch.nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.inp(x) + self.lora_b(self.lora_a(x))))


def _train_zero_init(tmp_path, hold_at_zero: int = 0, steps: int = 12):
    torch.manual_seed(0)
    model = ZeroInitNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    seen, weights = [], {0: model.lora_b.weight.detach().clone()}
    monitor = WeightMonitor(every_n_steps=1, methods="basic_stats", background=False, output_dir=tmp_path,
                            on_alert=seen.append)
    monitor.keep_records = steps + 1
    monitor.start(model, 0)
    for step in range(1, steps + 1):
        loss = model(torch.randn(16, 8, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if step <= hold_at_zero:
            model.lora_b.weight.grad = None  # B stays at zero for a while (e.g. trained from a later step)
        opt.step()
        weights[step] = model.lora_b.weight.detach().clone()
        monitor.step(model, step)
    monitor.close(model, steps)
    return monitor, seen, weights


def test_a_zero_initialised_layer_trains_without_drift_or_norm_alerts(tmp_path):
    monitor, seen, weights = _train_zero_init(tmp_path)
    by_step = {r.step: r for r in monitor.records}
    first = by_step[1].diff_prev["lora_b"]  # zero -> non-zero: changed without bound, not undefined
    assert first["relative_l2_distance"] == first["l2_norm_ratio"] == float("inf")
    for step in range(2, 13):  # afterwards ordinary finite drifts, as numpy float64 has them
        prev, now = (weights[s].double().numpy() for s in (step - 1, step))
        d = by_step[step].diff_prev["lora_b"]
        assert d["relative_l2_distance"] == pytest.approx(np.linalg.norm(now - prev) / np.linalg.norm(prev), rel=1e-9)
        assert d["l2_norm_ratio"] == pytest.approx(np.linalg.norm(now) / np.linalg.norm(prev), rel=1e-9)
    assert not [a for a in seen if a.layer == "lora_b"], seen  # inf drift/ratio is not a spike or a norm jump
    assert not [a for a in seen if a.rule in ("norm_ratio", "nan")], seen


def test_a_layer_held_at_zero_then_trained_raises_no_drift_spike(tmp_path):
    monitor, seen, _ = _train_zero_init(tmp_path, hold_at_zero=4)
    assert not [a for a in seen if a.layer == "lora_b"], seen
    drifts = [r.diff_prev["lora_b"]["relative_l2_distance"] for r in monitor.records if r.step > 5]
    assert len(drifts) == 7 and all(0 < d < math.inf for d in drifts)  # it trained, and was watched
    # its drift history restarted when it left zero: only the finite drifts since then
    assert len(monitor.state_dict()["alert_state"]["drift"]["lora_b"]) == 7


def test_an_all_zero_layer_is_not_reported_as_ill_conditioned_a_singular_one_is(tmp_path):
    torch.manual_seed(0)
    model = ZeroInitNet()
    with torch.no_grad():
        model.lora_a.weight[1:] = model.lora_a.weight[0]  # rank 1, not zero: truly singular
    seen = []
    monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats", "spectral"], background=False,
                            output_dir=tmp_path, on_alert=seen.append)
    monitor.start(model, 0)
    monitor.close()
    base = monitor.records[0].results
    assert base["lora_b"]["spectral"]["condition_number"] == math.inf  # what the scan says, unchanged
    assert [(a.rule, a.layer) for a in seen if a.rule == "condition_number"] == [("condition_number", "lora_a")]


def test_a_damaged_history_does_not_stop_a_resume(tmp_path):
    model, kwargs, state = _run_keeping_state_at(tmp_path, steps=4, keep_at=2)
    history = tmp_path / "weightscope.jsonl"
    data = bytearray(history.read_bytes())
    data[10] = 0xFF  # not UTF-8: the first record is damaged
    history.write_bytes(bytes(data))
    resumed = WeightMonitor(**kwargs)
    resumed.load_state_dict(state)
    resumed.start(model, 2)  # must not raise
    resumed.step(model, 3)
    resumed.close(model, 3)
    lines = history.read_bytes().splitlines()
    assert lines[0] == bytes(data).splitlines()[0]  # the damaged line stays where it was
    assert [json.loads(x)["step"] for x in lines[1:]] == [2, 3]  # 4 moved aside, 3 appended
    assert [json.loads(x)["step"] for x in (tmp_path / "weightscope.jsonl.superseded").read_bytes().splitlines()] == [4]


def test_a_completing_final_record_repeats_no_alert_even_with_a_window_of_one(tmp_path):
    seen = []
    monitor = WeightMonitor(every_n_steps=1, methods=["basic_stats", "spectral"], output_dir=tmp_path,
                            full_scan_every=3, background=False, alert_window=1, on_alert=seen.append)
    train(monitor, steps=7, fault_at=7)  # an Inf at the last step, whose snapshot is a thinned one
    assert [(a.rule, a.layer, a.step) for a in seen if a.rule == "nan"] == [("nan", "mid", 7)]
    final = monitor.records[-1]
    assert final.kind == "final" and final.summary["layers_alerting"] == 1  # mid, still alerting


def test_a_failing_histogram_costs_the_snapshot_nothing_else(tmp_path, monkeypatch, caplog):
    import weightscope.monitor.monitor as mon

    def no_histogram(tensor, bins=64):  # as torch.histogram on CUDA: no kernel
        raise NotImplementedError("histogram: no CUDA kernel")

    monkeypatch.setattr(mon, "histogram_summary", no_histogram)
    monitor = WeightMonitor(every_n_steps=2, methods="basic_stats", log_histograms=True, background=False,
                            output_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        train(monitor, steps=4)
    steps = [(r["step"], bool(r["diff_prev"])) for r in read_jsonl(tmp_path / "weightscope.jsonl")]
    assert steps == [(0, False), (2, True), (4, True)]
    assert sum("histograms failed" in r.getMessage() for r in caplog.records) == 1


class _Wide(torch.nn.Module):
    """Matrices big enough (> torch's 32768-element grain) for intra-op threads to split reductions."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(384, 256)
        self.b = torch.nn.Linear(256, 384)


def test_records_analysed_while_training_waits_match_a_scan_bit_for_bit(tmp_path):
    import weightscope

    torch.manual_seed(0)
    model = _Wide()
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # training's own count, which the analysis must not inherit
    try:
        monitor = WeightMonitor(every_n_steps=100, methods=["basic_stats", "spectral", "quantization"],
                                output_dir=tmp_path)
        monitor.start(model, 0)  # CPU weights: analysed on this thread, while training waits
        with torch.no_grad():
            model.a.weight.mul_(1.5)
        monitor.close(model, 1)  # the final snapshot, also on this thread
    finally:
        torch.set_num_threads(before)
    baseline, final = monitor.records
    assert (baseline.kind, final.kind) == ("baseline", "final")
    scanned = weightscope.scan(model, methods=["basic_stats", "spectral", "quantization"], progress=False)
    for layer in ("a", "b"):
        assert final.results[layer] == scanned[layer]  # exact: same threads per tensor as a scan
    w = model.a.weight.detach().double().numpy()
    assert final.results["a"]["spectral"]["condition_number"] == pytest.approx(np.linalg.cond(w), rel=1e-9)


def test_cpu_of_analysis_on_pool_threads_is_counted(tmp_path):
    import time

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(768, 768, bias=False) for _ in range(4)])
    methods = ["basic_stats", "spectral", "quantization"]

    def baseline(out):
        monitor = WeightMonitor(every_n_steps=100, methods=methods, output_dir=out, num_workers=2,
                                save_baseline=False)
        cpu0 = time.process_time()
        monitor.start(model, 0)  # analysed by 2 pool threads while this one waits
        used = time.process_time() - cpu0
        monitor.close()
        return used, monitor.stats.analysis_cpu_s

    baseline(tmp_path / "warm-up")  # first-call costs (imports, LAPACK set-up) out of the way
    used, counted = baseline(tmp_path / "run")
    # The calling thread's own clock sees almost none of it; the budget must see all of it.
    assert 0.8 * used <= counted <= 1.02 * used


def test_a_fresh_run_in_a_used_folder_sets_the_earlier_runs_history_aside(tmp_path, caplog):
    first = WeightMonitor(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, max_pending=16)
    train(first, steps=4)
    history = tmp_path / "weightscope.jsonl"
    earlier = history.read_bytes().splitlines()
    assert [json.loads(x)["step"] for x in earlier] == [0, 2, 4]
    # A second run, no state restored, continuing from step 2 (its own weights from then on).
    second = WeightMonitor(every_n_steps=2, methods="basic_stats", output_dir=tmp_path, max_pending=16)
    torch.manual_seed(1)
    model = TinyNet()
    with caplog.at_level(logging.WARNING, logger="weightscope.monitor"):
        second.start(model, 2)
        second.step(model, 3)
        second.close(model, 3)
    lines = history.read_bytes().splitlines()
    assert lines[0] == earlier[0]  # step 0 lies before this run: kept
    assert [(json.loads(x)["step"], json.loads(x)["kind"]) for x in lines] == [
        (0, "baseline"), (2, "baseline"), (3, "final")]
    assert (tmp_path / "weightscope.jsonl.superseded").read_bytes().splitlines() == earlier[1:]
    assert sum("records of an earlier run" in r.getMessage() for r in caplog.records) == 1
    # The new run's numbers are its own weights'.
    w = model.inp.weight.detach().double().numpy()
    assert json.loads(lines[1])["layers"]["inp"]["basic_stats"]["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-12)
