"""Snapshots copy exactly the selected weights, also after the model changes under a bound selection."""

from __future__ import annotations

import torch

from weightscope.monitor.snapshot import BufferPool, Selector, take_snapshot

CPU = torch.device("cpu")


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))


def _snap(model, selector, pool, step=0):
    snap = take_snapshot(model, step, selector, target=CPU, pool=pool)
    assert snap is not None
    return snap


def test_copies_equal_the_weights_and_do_not_alias_them():
    model, selector, pool = _net(), Selector(), BufferPool()
    snap = _snap(model, selector, pool)
    assert list(snap.tensors) == ["0", "2"]
    for key, module in (("0", model[0]), ("2", model[2])):
        assert torch.equal(snap.tensors[key], module.weight)
        assert snap.tensors[key].data_ptr() != module.weight.data_ptr()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    assert not torch.equal(snap.tensors["0"], model[0].weight)  # a copy, not a view


def test_bound_selection_follows_replaced_added_and_frozen_parameters():
    model, selector, pool = _net(), Selector(), BufferPool()
    first = _snap(model, selector, pool)
    assert first.frozen == frozenset()

    # A parameter object swapped in (not copied into): the next snapshot reads the new one.
    new_weight = torch.nn.Parameter(torch.full((4, 6), 7.0))
    model[2]._parameters["weight"] = new_weight  # bypasses every registration hook
    assert torch.equal(_snap(model, selector, pool, 1).tensors["2"], new_weight)

    # Freezing a layer shows in the frozen set at once.
    model[0].weight.requires_grad_(False)
    assert _snap(model, selector, pool, 2).frozen == frozenset({"0"})

    # A layer added after the selection was bound is picked up.
    model.append(torch.nn.Linear(4, 3))
    snap = _snap(model, selector, pool, 3)
    assert list(snap.tensors) == ["0", "2", "3"]
    assert torch.equal(snap.tensors["3"], model[3].weight)

    # A parameter registered on an existing module likewise.
    model[3].extra = torch.nn.Parameter(torch.ones(5, 5))
    assert "3.extra" in _snap(model, selector, pool, 4).tensors

    # The same parameter object with new data of another shape.
    model[3].weight.data = torch.full((2, 4), 5.0)
    assert torch.equal(_snap(model, selector, pool, 5).tensors["3"], torch.full((2, 4), 5.0))


def test_released_buffers_are_reused_and_a_new_selection_drops_the_old_ones():
    model, selector, pool = _net(), Selector(), BufferPool()
    first = _snap(model, selector, pool)
    ptrs = {k: t.data_ptr() for k, t in first.tensors.items()}
    first.release()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    second = _snap(model, selector, pool, 1)
    assert {k: t.data_ptr() for k, t in second.tensors.items()} == ptrs  # the same memory, new values
    assert torch.equal(second.tensors["0"], model[0].weight)
    model.append(torch.nn.Linear(4, 3))  # a new selection: sets for the old one are not kept
    second.release()
    third = _snap(model, selector, pool, 2)
    assert list(third.tensors) == ["0", "2", "3"] and pool._free == []


def test_one_selector_serves_one_model_at_a_time():
    a, b = _net(), torch.nn.Sequential(torch.nn.Linear(5, 5))
    selector, pool = Selector(), BufferPool()
    _snap(a, selector, pool)
    snap = _snap(b, selector, pool)
    assert list(snap.tensors) == ["0"] and torch.equal(snap.tensors["0"], b[0].weight)
