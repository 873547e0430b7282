import threading
import time

import numpy as np
import pytest
import torch

from weightscope.core.engine import ANALYSIS_THREADS, layer_key, run_tasks, scan_source, select_tensors
from weightscope.errors import UnknownMethodError, WeightScopeError
from weightscope.sources.base import TensorRef, TensorSource


class DictSource(TensorSource):
    """A minimal source over a dict, independent of weightscope.sources' own formats."""

    def __init__(self, tensors, storage=None):
        self.tensors = tensors
        self.storage = storage or {}
        self.description = "dict"
        self.loads = []

    def refs(self):
        def loader(name):
            def load():
                self.loads.append(name)
                return self.tensors[name]
            return load
        return [TensorRef(n, tuple(t.shape), t.dtype, loader(n), self.storage.get(n)) for n, t in self.tensors.items()]


def test_run_tasks_keeps_task_order_and_bounds_concurrency():
    live, peak, lock = [0], [0], threading.Lock()
    started = []

    def fn(x):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            started.append(x)
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return x * 10

    tasks = [3, 1, 7, 2, 9, 4, 8]
    out = run_tasks(tasks, fn, weight=lambda x: x, parallel=True, num_workers=2)
    assert out == [30, 10, 70, 20, 90, 40, 80]
    assert peak[0] <= 2
    assert started[:2] == [9, 8]  # largest first


def test_run_tasks_sequential_equals_parallel_and_propagates_errors():
    assert run_tasks([1, 2, 3], lambda x: x + 1, parallel=False) == [2, 3, 4]

    def boom(x):
        if x == 2:
            raise RuntimeError("bad")
        return x

    with pytest.raises(RuntimeError, match="bad"):
        run_tasks([1, 2, 3, 4], boom, parallel=True, num_workers=2)
    with pytest.raises(WeightScopeError):
        run_tasks([1], lambda x: x, num_workers=0)


def test_tasks_run_on_a_fixed_thread_count_and_the_callers_is_restored():
    before = torch.get_num_threads()
    seen = run_tasks([1, 2, 3], lambda _x: torch.get_num_threads(), parallel=True, num_workers=2)
    assert seen == [ANALYSIS_THREADS] * 3
    assert torch.get_num_threads() == before
    assert run_tasks([1, 2], lambda _x: torch.get_num_threads(), parallel=False) == [ANALYSIS_THREADS] * 2
    assert run_tasks([1], lambda _x: torch.get_num_threads(), parallel=True) == [ANALYSIS_THREADS]
    assert run_tasks([1, 2], lambda _x: torch.get_num_threads(), parallel=True, num_workers=1) == [ANALYSIS_THREADS] * 2
    assert torch.get_num_threads() == before


def test_select_tensors_keys_filters_and_ties():
    w = torch.randn(4, 3)
    src = DictSource(
        {
            "emb.weight": w,
            "h.0.fc.weight": torch.randn(5, 4),
            "h.0.fc.bias": torch.randn(5),
            "pos_ids": torch.arange(4).reshape(1, 4),
            "lm_head.weight": w,
            "h.1.fc.weight": torch.randn(5, 4),
        },
        storage={"emb.weight": "s0", "lm_head.weight": "s0"},
    )
    sel = select_tensors(src.refs())
    assert [k for k, _ in sel.layers] == ["emb", "h.0.fc", "h.1.fc"]
    assert sel.aliases == {"lm_head": "emb"}
    assert sel.skipped["pos_ids"].startswith("non-floating")
    assert "h.0.fc.bias" in sel.skipped

    sel = select_tensors(src.refs(), include_vectors=True, layers=r"^h\.0\.")
    assert [k for k, _ in sel.layers] == ["h.0.fc", "h.0.fc.bias"]
    sel = select_tensors(src.refs(), exclude=r"fc")
    assert [k for k, _ in sel.layers] == ["emb"]
    with pytest.raises(WeightScopeError, match="invalid layers regex"):
        select_tensors(src.refs(), layers="(")
    assert layer_key("a.weight.weight") == "a.weight"


def test_scan_source_parallel_matches_sequential_in_checkpoint_order():
    g = torch.Generator().manual_seed(0)
    tensors = {f"l{i}.weight": torch.randn(8 + 4 * i, 16, generator=g) for i in range(6)}
    seq = scan_source(DictSource(tensors), "all", parallel=False)
    par = scan_source(DictSource(tensors), ["all"], parallel=True, num_workers=2)
    assert list(seq) == [f"l{i}" for i in range(6)] == list(par)
    assert seq == par
    for i in range(6):  # and each layer holds its own tensor's numbers (numpy float64)
        w = tensors[f"l{i}.weight"].double().numpy()
        got = par[f"l{i}"]
        assert got["basic_stats"]["shape"] == list(w.shape)
        assert got["basic_stats"]["mean"] == pytest.approx(w.mean(), rel=1e-12)
        assert got["spectral"]["max_singular_value"] == pytest.approx(np.linalg.norm(w, 2), rel=1e-9)
    assert seq.methods == ["basic_stats", "spectral", "esd", "quantization", "sparsity"]


def test_scan_source_loads_each_tensor_once_and_survives_a_bad_tensor():
    good = torch.randn(6, 6)

    class Broken(DictSource):
        def refs(self):
            refs = super().refs()
            bad = TensorRef("bad.weight", (3, 3), torch.float32, lambda: (_ for _ in ()).throw(OSError("truncated")))
            return refs + [bad]

    src = Broken({"good.weight": good})
    res = scan_source(src, "basic_stats", parallel=True, num_workers=2)
    assert src.loads == ["good.weight"]
    assert "error" in res["bad"]["basic_stats"] and "truncated" in res["bad"]["basic_stats"]["error"]
    assert res["good"]["basic_stats"]["numel"] == 36


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UnknownMethodError, match="valid methods: basic_stats, spectral"):
        scan_source(DictSource({"a.weight": torch.randn(2, 2)}), ["spectrall"])


def test_thread_counts_of_caller_and_new_threads_are_restored():
    """Like the monitor's analysis thread: one torch thread of its own in a process whose default
    (what threads created later start with) is 3. A scan from it changes neither."""
    before = torch.get_num_threads()
    out = {}
    ready, go = threading.Event(), threading.Event()

    def analysis():
        torch.get_num_threads()
        torch.set_num_threads(1)
        ready.set()
        go.wait()
        out["par"] = run_tasks([1, 2, 3], lambda _x: torch.get_num_threads(), parallel=True, num_workers=2)
        out["own_after_par"] = torch.get_num_threads()
        out["seq"] = run_tasks([1, 2], lambda _x: torch.get_num_threads(), parallel=False)
        out["own_after_seq"] = torch.get_num_threads()

    def fresh_thread_count():
        seen = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        return seen[0]

    try:
        torch.set_num_threads(3)
        t = threading.Thread(target=analysis)
        t.start()
        ready.wait()
        torch.set_num_threads(3)  # the analysis thread's set_num_threads changed the default: put it back
        go.set()
        t.join()
        assert out == {"par": [ANALYSIS_THREADS] * 3, "own_after_par": 1, "seq": [ANALYSIS_THREADS] * 2,
                       "own_after_seq": 1}
        assert torch.get_num_threads() == 3
        assert fresh_thread_count() == 3
    finally:
        torch.set_num_threads(before)


def test_overlapping_scans_on_two_threads_leave_the_default_thread_count_alone():
    import time

    from weightscope.core import engine

    fresh = lambda: engine._on_new_thread(torch.get_num_threads)  # noqa: E731
    before = fresh()
    go = threading.Barrier(2)

    def slow(_):
        time.sleep(0.2)
        return 0

    def scan_after(delay):
        torch.get_num_threads()
        go.wait()
        time.sleep(delay)
        engine.run_tasks([1], slow, parallel=False)

    threads = [threading.Thread(target=scan_after, args=(d,)) for d in (0.0, 0.1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fresh() == before
