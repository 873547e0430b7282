"""Parallel and sequential analysis give exactly the same results (product notes, section 2).

Not "close": every value equal, bit for bit (NaN equal to NaN, -0.0 not equal to 0.0), for every
method, whatever ``parallel``/``num_workers``, the machine's core count or the caller's own torch
thread count. BLAS/LAPACK and ATen reductions round differently on different thread counts, so
this holds only because the engine runs every analysis task on a fixed number of threads.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import weightscope
import weightscope.core.engine as engine
from weightscope.analyzers import ALL_METHODS

PARALLEL_SETTINGS = [
    {"parallel": True, "num_workers": 1},
    {"parallel": True, "num_workers": 2},
    {"parallel": True, "num_workers": 4},
    {"parallel": True},  # num_workers = core count
]


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """``a == b`` on every value of nested dicts/lists, with NaN == NaN and the sign of zero checked."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        if math.isnan(a):
            assert math.isnan(b), f"{path}: nan vs {b!r}"
        else:
            assert a == b and math.copysign(1.0, a) == math.copysign(1.0, b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def count_values(obj: Any) -> int:
    if isinstance(obj, dict):
        return sum(count_values(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_values(v) for v in obj)
    return 1


@pytest.fixture
def many_cores(monkeypatch):
    """Pretend the machine has 8 cores: the thread count the engine used to derive from the core
    count then differs between settings even on a 1- or 2-core test machine."""
    monkeypatch.setattr(engine, "cpu_count", lambda: 8)


def model(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(700, 64, generator=g) * 0.02
    sparse = torch.randn(200, 100, generator=g)
    sparse[torch.rand(200, 100, generator=g) < 0.7] = 0.0
    return {
        "big.weight": torch.randn(1100, 960, generator=g) * 0.02,  # > 1M elements
        "emb.weight": emb,
        "fc.weight": torch.randn(256, 512, generator=g) * 0.05 + 0.01,
        "fc.bias": torch.randn(256, generator=g),
        "half.weight": (torch.randn(96, 128, generator=g) * 0.1).to(torch.bfloat16),
        "wide64.weight": torch.randn(60, 200, generator=g, dtype=torch.float64),
        "sparse.weight": sparse,
        "const.weight": torch.full((32, 48), 0.5),
        "lm_head.weight": emb,  # tied: folded into emb
    }


def test_scan_is_bitwise_identical_parallel_and_sequential(many_cores):
    tensors = model()
    seq = weightscope.scan(tensors, methods="all", parallel=False, include_vectors=True)
    assert set(seq) >= {"big", "emb", "fc", "fc.bias", "half", "wide64", "sparse", "const"}
    assert all(set(seq[layer]) == set(ALL_METHODS) for layer in ("big", "emb", "sparse"))
    assert seq["big"]["spectral"]["condition_number"] > 1
    for kw in PARALLEL_SETTINGS:
        par = weightscope.scan(tensors, methods="all", include_vectors=True, **kw)
        assert_identical(dict(seq), dict(par), f"scan {kw}")
    assert count_values(dict(seq)) > 100


def test_one_tensor_alone_and_the_callers_thread_count_do_not_matter(many_cores):
    t = {"w.weight": torch.randn(512, 1536, generator=torch.Generator().manual_seed(1))}
    seq = weightscope.scan(t, methods="all", parallel=False)
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for kw in [{"parallel": False}, *PARALLEL_SETTINGS]:
                assert_identical(dict(seq), dict(weightscope.scan(t, methods="all", **kw)), f"threads={n} {kw}")
                assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_compare_is_bitwise_identical_parallel_and_sequential(many_cores):
    base = model(0)
    tuned = {k: v.clone() for k, v in base.items()}
    g = torch.Generator().manual_seed(7)
    tuned["big.weight"] += 1e-3 * torch.randn(1100, 8, generator=g) @ torch.randn(8, 960, generator=g)
    tuned["fc.weight"] += 1e-4 * torch.randn(256, 512, generator=g)
    tuned["lm_head.weight"] = tuned["emb.weight"]
    del tuned["const.weight"]  # only in model 1
    tuned["extra.weight"] = torch.randn(40, 30, generator=g)  # only in model 2
    kwargs = {"methods": list(ALL_METHODS), "include_vectors": True}
    seq = weightscope.compare(base, tuned, parallel=False, **kwargs)
    assert "big" in seq["layer_comparisons"] and seq["only_in_model1"] == ["const"]
    for kw in PARALLEL_SETTINGS:
        assert_identical(seq, weightscope.compare(base, tuned, **kwargs, **kw), f"compare {kw}")
