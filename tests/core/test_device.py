"""Device names resolved once, on the thread whose current device they mean."""

from __future__ import annotations

import torch

from weightscope.core.device import pinned_to_current


def test_bare_cuda_names_the_current_device_of_the_resolving_thread(monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)  # a DDP rank set to cuda:3
    assert pinned_to_current(torch.device("cuda")) == torch.device("cuda", 3)
    assert pinned_to_current(torch.device("cuda", 1)) == torch.device("cuda", 1)  # explicit: kept
    assert pinned_to_current(torch.device("cpu")) == torch.device("cpu")
