"""Device selection for the analyzers."""

from __future__ import annotations

import torch

from ..errors import DeviceError

_CHOICES = "pass device='cpu', 'cuda', 'cuda:N' or 'auto' (CLI: --device cpu, cuda, cuda:N or auto)"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when present) or a torch.device.

    A DeviceError otherwise, worded for the Python API and the CLI alike (``device=`` / ``--device``).
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r}: {_CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} was asked for but CUDA is not available here; "
                              "pass device='cpu' or 'auto' (CLI: --device cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible; "
                              f"pass device='cuda:N' with N < {torch.cuda.device_count()} (CLI: --device cuda:N)")
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r} is not supported: {_CHOICES}")
    elif dev.index not in (None, 0):  # torch accepts "cpu:1", but there is one CPU device
        raise DeviceError(f"device {device!r} does not exist: {_CHOICES}")
    if dev.type == "cuda":
        _load_cuda_linalg(dev)
    return dev


def pinned_to_current(dev: torch.device) -> torch.device:
    """``cuda`` with the calling thread's current device as its index; any other device unchanged.

    A bare ``cuda`` means the *current* device, which is per thread: resolved on a training
    thread (a DDP rank set to ``cuda:1``), it names that rank's GPU on the analysis threads
    too, instead of their default ``cuda:0``.
    """
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _load_cuda_linalg(dev: torch.device) -> None:
    """torch loads its CUDA linalg library lazily, and two worker threads doing so at once fail
    with "lazy wrapper should be called at most once" (pytorch/pytorch#90613): load it up front."""
    torch.linalg.eigvalsh(torch.eye(1, dtype=torch.float64, device=dev))
