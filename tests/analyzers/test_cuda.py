"""The analyzers on a CUDA device give the CPU results (runs only where a GPU is present)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightscope.analyzers import ALL_METHODS, _stats, analyze_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ill = torch.randn(300, 120, generator=g, dtype=torch.float64)
    u, _, vt = torch.linalg.svd(ill, full_matrices=False)
    ill = (u * torch.logspace(0, -7, 120, dtype=torch.float64)) @ vt  # cond 1e7: the QR route
    nan = torch.randn(200, 150, generator=g)
    nan[3, 4] = float("nan")
    return {
        "f32": torch.randn(700, 520, generator=g) * 0.02,
        "bf16": (torch.randn(384, 1000, generator=g) * 0.02).bfloat16(),
        "f64_wide": torch.randn(64, 3000, generator=g, dtype=torch.float64),
        "conv": torch.randn(32, 16, 3, 3, generator=g),
        "ill": ill,
        "nan": nan,
        "zeros": torch.zeros(40, 50),
        "vector": torch.randn(1000, generator=g),
    }


def _close(a, b, path: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        if math.isinf(a) or math.isinf(b):
            assert a == b, path
        else:
            assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", list(_tensors()))
@pytest.mark.parametrize("direct_limit", [_stats.DIRECT_LIMIT, 1000])  # both order-statistics routes
def test_cuda_matches_cpu(name, direct_limit, monkeypatch):
    monkeypatch.setattr(_stats, "DIRECT_LIMIT", direct_limit)
    t = _tensors()[name]
    cpu = analyze_tensor(t, list(ALL_METHODS), device="cpu")
    gpu = analyze_tensor(t, list(ALL_METHODS), device="cuda")
    for m in cpu:
        assert "error" not in gpu[m], (m, gpu[m])
    _close(gpu, cpu, name)


def test_cuda_quantiles_match_numpy(monkeypatch):
    from weightscope.analyzers.view import TensorView

    monkeypatch.setattr(_stats, "DIRECT_LIMIT", 1000)
    a = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    v = TensorView(torch.from_numpy(a), device="cuda")
    qs = (0.1, 0.25, 0.5, 0.75, 0.9)
    assert v.quantiles(qs) == pytest.approx([np.percentile(a.astype(np.float64), 100 * q) for q in qs], rel=1e-15)
