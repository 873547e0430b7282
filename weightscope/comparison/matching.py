"""Pairing the layers of two models by name.

Exact names first; then names with wrapper prefixes removed, so that a
Lightning ``.ckpt`` (``model.…``), a DDP save (``module.…``), a
compiled module (``_orig_mod.…``) or a PEFT model
(``base_model.model.…``, ``….base_layer``) pairs with the plain checkpoint it
came from. A stripped name that is ambiguous on either side is not paired.
Tied weights: a name that one side stores as a real tensor and the other only
as an alias of another tensor is paired with the tensor the alias points to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Removed repeatedly from the front of a name, longest first.
WRAPPER_PREFIXES: tuple[str, ...] = ("base_model.model.", "_orig_mod.", "module.", "model.", "transformer.")
#: Removed wherever it occurs: PEFT's wrapper around the frozen base weight.
WRAPPER_INFIXES: tuple[str, ...] = (".base_layer",)


def without_infixes(name: str) -> str:
    for infix in WRAPPER_INFIXES:
        name = name.replace(infix, "")
    return name


def prefix_forms(name: str) -> list[str]:
    """``name``, then each shorter form as wrapper prefixes come off, one at a time."""
    forms = [name]
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix) :]
                forms.append(name)
                stripped = True
    return forms


def normalize_name(name: str) -> str:
    """``"model.module._orig_mod.layers.0.q_proj.base_layer"`` -> ``"layers.0.q_proj"``."""
    return prefix_forms(without_infixes(name))[-1]


@dataclass
class Matching:
    """Which model-1 layer goes with which model-2 layer.

    ``pairs`` holds ``(name1, name2)`` in model-1 order, where each name is
    either a real layer of its side or an alias (see ``aliases1``/``aliases2``).
    ``mapping`` lists the pairs whose names differ.
    """

    pairs: list[tuple[str, str]] = field(default_factory=list)
    only_in_model1: list[str] = field(default_factory=list)
    only_in_model2: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)


def _unique_by_normal(names: Iterable[str]) -> dict[str, str]:
    """normalized -> name, leaving out normalized names shared by several names."""
    seen: dict[str, str | None] = {}
    for name in names:
        key = normalize_name(name)
        seen[key] = None if key in seen else name
    return {k: v for k, v in seen.items() if v is not None}


def _pair_up(left: Sequence[str], right: Sequence[str]) -> list[tuple[str, str]]:
    """Exact then normalized pairs between two name lists, in ``left`` order."""
    right_set = set(right)
    exact = {n: n for n in left if n in right_set}
    rest_left = [n for n in left if n not in exact]
    rest_right = [n for n in right if n not in exact]
    by_norm = _unique_by_normal(rest_right)
    left_norm = _unique_by_normal(rest_left)
    fuzzy = {name: by_norm[norm] for norm, name in left_norm.items() if norm in by_norm}
    return [(n, exact.get(n) or fuzzy[n]) for n in left if n in exact or n in fuzzy]


def match_layers(
    names1: Sequence[str],
    names2: Sequence[str],
    aliases1: dict[str, str] | None = None,
    aliases2: dict[str, str] | None = None,
) -> Matching:
    """Pair ``names1`` with ``names2`` (real layers of each side; aliases are tied names).

    Aliases that both sides have are not compared again: the tensor they
    point to already is.
    """
    aliases1, aliases2 = aliases1 or {}, aliases2 or {}
    real = _pair_up(names1, names2)
    paired1 = {a for a, _ in real}
    paired2 = {b for _, b in real}
    left1 = [n for n in names1 if n not in paired1]
    left2 = [n for n in names2 if n not in paired2]
    # A real tensor on one side may be stored only as a tied alias on the other.
    extra = _pair_up(left1, list(aliases2))
    extra += [(a, b) for b, a in _pair_up(left2, list(aliases1))]
    paired1 |= {a for a, _ in extra}
    paired2 |= {b for _, b in extra}

    order = {n: i for i, n in enumerate([*names1, *aliases1])}
    pairs = sorted(real + extra, key=lambda p: order[p[0]])
    return Matching(
        pairs=pairs,
        only_in_model1=sorted(n for n in names1 if n not in paired1),
        only_in_model2=sorted(n for n in names2 if n not in paired2),
        mapping={a: b for a, b in pairs if a != b},
    )
