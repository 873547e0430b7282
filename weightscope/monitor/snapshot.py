"""Snapshots: a detached copy of the selected weights, taken while training waits as little as possible.

The copy is the only thing the training loop waits for. CPU weights are
copied into reused host buffers (one memcpy, no page faults). CUDA weights go
into reused pinned host buffers with
``non_blocking=True`` on the current stream, so the host returns at once and
the optimizer's next in-place update is ordered after the copy by the stream
itself; the analysis thread waits on a CUDA event before it reads. With
``device="cuda"`` the copy stays on the GPU (a device-side clone).

Sharded weights are gathered with the framework's own tools, on every rank,
because those are collective calls: FSDP2 / DTensor (``full_tensor()``),
FSDP1 (``summon_full_params``) and DeepSpeed ZeRO-3 (``GatheredParameters``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..core.engine import select_tensors
from ..sources import MemorySource

log = logging.getLogger(__name__)
#: How many layer names the warning about an empty selection lists.
_NAMES_SHOWN = 8


#: What a host buffer is made for: (shape, dtype, pinned).
Spec = tuple[tuple[int, ...], torch.dtype, bool]


@dataclass
class Snapshot:
    """Copies of the selected weights at one step, keyed by layer name."""

    step: int
    tensors: dict[str, torch.Tensor]
    frozen: frozenset[str] = frozenset()
    blocking_s: float = 0.0
    #: The weights were on an accelerator (training is not competing with analysis for the cores).
    from_gpu: bool = False
    #: What host buffers this snapshot was copied into (empty for device-side copies).
    specs: tuple[Spec, ...] = ()
    _events: list[Any] = field(default_factory=list, repr=False)  # CUDA events, one per device copied from
    _release: Callable[[], None] | None = field(default=None, repr=False)

    def wait(self) -> None:
        """Block until asynchronous device-to-host copies have landed (no-op on CPU)."""
        for event in self._events:
            event.synchronize()
        self._events = []

    def release(self) -> None:
        """Hand pinned buffers back for reuse; the snapshot must not be read afterwards."""
        if self._release is not None:
            self._release()
            self._release = None
        self.tensors = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class BufferPool:
    """Sets of host buffers, one buffer per selected tensor, reused across snapshots.

    Fresh memory costs page faults on first touch (a multi-MB clone is mostly
    faulting, not copying) and pinning costs a driver call, so the buffers of
    a snapshot that is no longer needed go back here for the next one. Whole
    sets, keyed by the selection's specs: one lookup while training waits.
    Sets for an older selection (a layer was added, say) are dropped.
    """

    def __init__(self) -> None:
        self._specs: tuple[Spec, ...] | None = None
        self._free: list[list[torch.Tensor]] = []
        self._lock = threading.Lock()

    def take(self, specs: tuple[Spec, ...]) -> list[torch.Tensor]:
        with self._lock:
            if specs == self._specs and self._free:
                return self._free.pop()
            if specs != self._specs:
                self._specs, self._free = specs, []
        return [torch.empty(shape, dtype=dtype, device="cpu", pin_memory=pinned) for shape, dtype, pinned in specs]

    def give(self, specs: tuple[Spec, ...], buffers: list[torch.Tensor]) -> None:
        with self._lock:
            if specs == self._specs:
                self._free.append(buffers)

    def reserve(self, specs: tuple[Spec, ...]) -> None:
        """Make sure one free set is ready, its pages already faulted in."""
        if not specs:
            return
        with self._lock:
            if specs == self._specs and self._free:
                return
        # device="cpu": host buffers even under torch.set_default_device("cuda")
        buffers = [torch.empty(shape, dtype=dtype, device="cpu", pin_memory=pinned)
                   for shape, dtype, pinned in specs]
        for b in buffers:
            b.zero_()  # first touch here, not during the copy the training loop waits for
        with self._lock:
            if specs != self._specs:
                self._specs, self._free = specs, []
            self._free.append(buffers)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "full_tensor")


def sharding_kind(model: torch.nn.Module) -> str | None:
    """``"dtensor"``, ``"fsdp1"``, ``"zero3"`` or None (every rank holds full weights)."""
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            return "fsdp1"
    for p in model.parameters():
        if _is_dtensor(p):
            return "dtensor"
        if hasattr(p, "ds_id") and hasattr(p, "ds_status"):
            return "zero3"
    return None


@contextlib.contextmanager
def full_parameters(model: torch.nn.Module, kind: str | None) -> Iterator[None]:
    """Inside: every rank sees full FSDP1 / ZeRO-3 parameters (collective; DTensors are gathered per tensor)."""
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, recurse=True):
            yield
    elif kind == "zero3":
        import deepspeed  # only present when the model is already a ZeRO-3 model

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield


def _clean(name: str) -> str:
    # FSDP1 and torch.compile insert wrapper names that users never wrote.
    for junk in ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(junk, "")
    return name


def model_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter by its clean name, tied ones under each name (the selection folds them)."""
    return {_clean(n): p for n, p in model.named_parameters(remove_duplicate=False)}


class _Registrations:
    """Counts parameter and submodule registrations in any module of the process.

    A bound selection (see :meth:`Selector.bind`) is valid while this count
    stands still and its own parameters are the same objects: a parameter
    added anywhere bumps the count. The hooks are torch's global ones, installed
    once and left in place: each costs an integer increment per registration.
    """

    epoch = 0
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return
        from torch.nn.modules import module as nn_module

        def bump(*_: Any) -> None:
            cls.epoch += 1

        nn_module.register_module_parameter_registration_hook(bump)
        nn_module.register_module_module_registration_hook(bump)
        cls.installed = True


@dataclass(frozen=True)
class Selected:
    """The tensors a snapshot copies: layer keys, the tensors, the frozen keys, the buffers they need."""

    keys: list[str]
    tensors: list[torch.Tensor]
    frozen: frozenset[str]
    specs: tuple[Spec, ...]
    on_gpu: bool
    #: Every CUDA device the tensors live on (a model split across GPUs has several): the copies
    #: are queued on each one's current stream, and the snapshot waits on an event per device.
    cuda_devices: tuple[torch.device, ...] = ()

    @classmethod
    def of(cls, chosen: list[tuple[str, torch.Tensor]], frozen: frozenset[str]) -> Selected:
        specs = tuple((tuple(t.shape), t.dtype, t.is_cuda) for _, t in chosen)
        on_gpu = any(s[2] for s in specs) or any(t.device.type != "cpu" for _, t in chosen[:1])
        cuda_devices = tuple(dict.fromkeys(t.device for _, t in chosen if t.is_cuda))
        return cls([k for k, _ in chosen], [t for _, t in chosen], frozen, specs, on_gpu, cuda_devices)


@dataclass
class _Binding:
    """A model's selected parameters, with their owners, for a walk-free re-check."""

    model: weakref.ref[torch.nn.Module]  # not id(): a freed model's id can come back
    epoch: int
    #: (owning module, attribute name, parameter, requires_grad and shape at binding time)
    owners: list[tuple[torch.nn.Module, str, torch.Tensor, bool, tuple[int, ...]]]
    selected: Selected
    first_device: torch.device | None = None  # ``model.to(other)`` keeps the parameter objects

    def valid_for(self, model: torch.nn.Module) -> bool:
        # Shapes and the device too: ``p.data = other`` and ``model.to()`` keep the objects.
        tensors = self.selected.tensors
        return (self.model() is model and self.epoch == _Registrations.epoch
                and (not tensors or tensors[0].device == self.first_device)
                and all(m._parameters.get(n) is p and p.requires_grad == rg and p.shape == shape
                        for m, n, p, rg, shape in self.owners))


@dataclass
class Selector:
    """Which layers a snapshot copies: the engine's selection rules plus an optional share of them.

    The selection is cached while the model's parameters stay the same
    objects with the same shapes and ``requires_grad``, which keeps it off the
    training loop's clock after the first snapshot.
    """

    layers: str | None = None
    exclude: str | None = None
    include_vectors: bool = False
    #: In ``distributed="split"`` mode: the layer keys this rank analyses (None: all).
    share: Callable[[list[tuple[str, int]]], set[str]] | None = None
    _cache: tuple[Any, list[tuple[str, str]], frozenset[str]] | None = field(default=None, repr=False)
    _binding: _Binding | None = field(default=None, repr=False)

    def select(self, params: dict[str, torch.Tensor]) -> tuple[list[tuple[str, str]], frozenset[str]]:
        """``[(layer key, parameter name)]`` in model order, and the frozen layer keys among them."""
        signature = tuple((n, id(p), tuple(p.shape), p.requires_grad) for n, p in params.items())
        if self._cache is not None and self._cache[0] == signature:
            return self._cache[1], self._cache[2]
        source = MemorySource(params, "snapshot")
        sel = select_tensors(source.refs(), layers=self.layers, exclude=self.exclude,
                             include_vectors=self.include_vectors)
        chosen = [(key, ref.name) for key, ref in sel.layers]
        if not chosen and (self.layers or self.exclude):
            self._warn_nothing_matches(source)
        if self.share is not None:
            keep = self.share([(key, params[name].numel()) for key, name in chosen])
            chosen = [(key, name) for key, name in chosen if key in keep]
        frozen = frozenset(key for key, name in chosen if not source.requires_grad.get(name, True))
        self._cache = (signature, chosen, frozen)
        return chosen, frozen

    def _warn_nothing_matches(self, source: MemorySource) -> None:
        # Said once per model structure (the selection is cached): easy to miss otherwise, since
        # Lightning prefixes the module's attribute name (``model.``) to every layer.
        names = [key for key, _ in select_tensors(source.refs(), include_vectors=self.include_vectors).layers]
        shown = ", ".join(names[:_NAMES_SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > _NAMES_SHOWN else "")
        log.warning("weightscope: no layer matches layers=%r exclude=%r, so nothing is monitored; the model's "
                    "layers: %s", self.layers, self.exclude, shown or "none")

    def bind(self, model: torch.nn.Module) -> Selected:
        """The selected parameters of an unsharded model.

        After the first call, a check of the selected parameters' owners
        (about 1 µs each) replaces the walk over the whole module tree, which
        on a cold cache took a third of a small model's snapshot; what the
        copy needs (keys, buffer specs) is kept with the binding.
        """
        b = self._binding
        if b is not None and b.valid_for(model):
            return b.selected
        _Registrations.install()
        epoch = _Registrations.epoch
        owners: dict[str, tuple[torch.nn.Module, str, torch.Tensor]] = {}
        for prefix, module in model.named_modules(remove_duplicate=False):
            for pname, p in module._parameters.items():
                if p is not None:
                    owners[_clean(f"{prefix}.{pname}" if prefix else pname)] = (module, pname, p)
        chosen, frozen = self.select({name: p for name, (_, _, p) in owners.items()})
        picked = [(*owners[name], owners[name][2].requires_grad, tuple(owners[name][2].shape)) for _, name in chosen]
        selected = Selected.of([(key, owners[name][2]) for key, name in chosen], frozen)
        first = selected.tensors[0].device if selected.tensors else None
        self._binding = _Binding(weakref.ref(model), epoch, picked, selected, first)
        return selected


def take_snapshot(
    model: torch.nn.Module,
    step: int,
    selector: Selector,
    *,
    target: torch.device,
    pool: BufferPool | None = None,
    keep: bool = True,
    sharding: str | None = None,
) -> Snapshot | None:
    """Copy the selected weights of ``model``.

    Every rank must call this when weights are sharded (``sharding`` from
    :func:`sharding_kind`; ``keep=False`` on the ranks that only take part in
    the gather); it returns None there.
    """
    t0 = time.perf_counter()
    pool = pool or BufferPool()
    with torch.no_grad():
        if sharding is None:
            sel = selector.bind(model)
        else:
            with full_parameters(model, sharding):
                # Gathered parameters are new objects at every gather: select by name each time.
                params = model_parameters(model)
                names, frozen = selector.select(params)
                chosen = [(key, params[name]) for key, name in names]
                if sharding == "dtensor":
                    return _gather_and_copy(chosen, frozen, step, target, pool, t0, keep)
                if not keep:
                    return None
                return _copy(Selected.of(chosen, frozen), step, target, pool, t0)
        return _copy(sel, step, target, pool, t0) if keep else None


def _gather_and_copy(chosen: list[tuple[str, torch.Tensor]], frozen: frozenset[str], step: int,
                     target: torch.device, pool: BufferPool, t0: float, keep: bool) -> Snapshot | None:
    """DTensor (FSDP2) weights: gathered one full tensor at a time (a collective: every rank, same
    order) and copied before the next, never all at once, which would hold the whole unsharded
    model on every rank. A gathered tensor is freed as soon as its copy is queued: the caching
    allocator reuses the memory only in stream order, after the copy."""
    sel = Selected.of(chosen, frozen)  # a DTensor has the global shape, dtype and the local device
    gathered = (p.full_tensor() if _is_dtensor(p) else p for _, p in chosen)
    if not keep:
        for _ in gathered:  # still a collective on this rank
            pass
        return None
    return _copy(replace(sel, tensors=gathered), step, target, pool, t0)  # type: ignore[arg-type]


def _copy(sel: Selected, step: int, target: torch.device, pool: BufferPool, t0: float) -> Snapshot:
    """The copy itself (under no_grad: no autograd history, no detach() needed)."""
    release = None
    specs: tuple[Spec, ...] = ()
    # Non-blocking only from CUDA, where an event tells when the copy has landed (MPS and other
    # accelerators copy blocking).
    asynchronous = bool(sel.cuda_devices)
    if target.type == "cpu":
        buffers = pool.take(sel.specs)
        for buf, t in zip(buffers, sel.tensors):
            buf.copy_(t, non_blocking=asynchronous)
        tensors = dict(zip(sel.keys, buffers))
        specs = sel.specs
        if buffers:
            release = lambda: pool.give(specs, buffers)  # noqa: E731
    else:
        tensors = {key: t.to(target, copy=True) for key, t in zip(sel.keys, sel.tensors)}
    devices = list(sel.cuda_devices)
    if target.type == "cuda" and target not in devices:
        devices.append(target)
    # A copy runs on the current stream of its source tensor's device, not of the current device:
    # one event per device, each recorded on that device's current stream. blocking=True: the
    # analysis thread sleeps on it rather than spinning a core.
    events = []
    for device in devices:
        event = torch.cuda.Event(blocking=True)
        event.record(torch.cuda.current_stream(device))
        events.append(event)
    return Snapshot(step, tensors, sel.frozen, time.perf_counter() - t0, sel.on_gpu, specs, events, release)
