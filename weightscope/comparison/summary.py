"""Whole-model figures of a comparison: counts, global distance, per block and per module kind."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .matching import normalize_name
from .pair_metrics import norm_ratio
from .ranking import layer_score, score_metric


def split_block(layer: str) -> tuple[str | None, str]:
    """``"transformer.h.3.attn.c_attn"`` -> ``("h.3", "attn.c_attn")``; ``"wte"`` -> ``(None, "wte")``.

    The block is the name up to its first all-digit segment (the layer index),
    wrapper prefixes removed; the module kind is what follows, which is the
    same in every block (``self_attn.q_proj``, ``mlp.c_fc``, ...).
    """
    parts = normalize_name(layer).split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            rest = ".".join(parts[i + 1 :])
            return ".".join(parts[: i + 1]), rest or ".".join(parts)
    return None, ".".join(parts)


def block_of(layer: str) -> str:
    """The ``by_block`` group of a layer: its block (``"h.3"``), or outside numbered blocks its module.

    ``"transformer.wte"`` -> ``"wte"``, ``"lm_head"`` -> ``"lm_head"``; a bias goes with its
    module's weight (``"transformer.ln_f.bias"`` -> ``"ln_f"``), as it does inside a block.
    """
    block, rest = split_block(layer)
    return block if block is not None else rest.removesuffix(".bias")


def unchanged(metrics: dict[str, Any]) -> bool | None:
    """Whether a pair holds the same values (None: no tensors compared).

    Value equality in float64, not bit equality (``identical``): the same values
    stored as float16 and float32, or 0.0 and -0.0, are unchanged. ``max_abs_diff``
    is exactly 0 only then (it is NaN for NaN/Inf weights, which are unchanged
    only when bit-identical).
    """
    identical = metrics.get("identical")
    if not isinstance(identical, bool):
        return None
    return identical or _num(metrics.get("max_abs_diff")) == 0.0


def _num(value: Any) -> float | None:
    """A number as float (NaN and inf included); None, bools and the rest as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class _Totals:
    """Sums that give the L2 distance and cosine over a set of layers as if they were one vector.

    The figures follow the per-layer rules: a group whose weights are all zero
    in model 1 has relative distance inf (0 if model 2 is all zeros too), and
    a group holding a layer with NaN/Inf weights has NaN figures.
    """

    def __init__(self) -> None:
        self.layers = 0
        self.changed = 0
        self.tensor_layers = 0  # layers with tensor-level metrics
        self.non_finite = False  # a layer with NaN/Inf weights (its pair metrics are NaN)
        self.dd = self.aa = self.bb = self.ab = 0.0
        self.scores: list[float] = []

    def add(self, metrics: dict[str, Any], score: float | None) -> None:
        self.layers += 1
        if score is not None:
            self.scores.append(score)
        dist, na, nb = (_num(metrics.get(k)) for k in ("l2_distance", "model1_l2_norm", "model2_l2_norm"))
        if dist is None or na is None or nb is None:
            return  # no tensors compared for this layer (saved stats)
        self.tensor_layers += 1
        self.changed += unchanged(metrics) is False
        if not (math.isfinite(dist) and math.isfinite(na) and math.isfinite(nb)):
            self.non_finite = True
            return
        self.dd += dist * dist
        self.aa += na * na
        self.bb += nb * nb
        if na > 0 and nb > 0:  # else ⟨A, B⟩ = 0 (the layer's cosine is NaN or, both zero, 1)
            cos = _num(metrics.get("cosine_similarity"))
            self.ab += (cos if cos is not None and math.isfinite(cos) else 0.0) * na * nb

    def figures(self) -> dict[str, Any]:
        tensors = self.tensor_layers > 0
        dist = rel = cos = None
        if tensors and self.non_finite:
            dist = rel = cos = math.nan
        elif tensors:
            dist = math.sqrt(self.dd)
            rel = norm_ratio(dist, math.sqrt(self.aa), 0.0)
            na, nb = math.sqrt(self.aa), math.sqrt(self.bb)
            if self.changed == 0:
                cos = 1.0  # every layer holds the same values: exactly 1, not 1 - 2 ulp from the division
            elif na > 0 and nb > 0:
                cos = max(-1.0, min(1.0, self.ab / (na * nb)))
            else:
                cos = 1.0 if na == nb == 0 else math.nan
        return {
            "layers": self.layers,
            "changed_layers": self.changed if tensors else None,
            "l2_distance": dist,
            "relative_l2_distance": rel,
            "cosine_similarity": cos,
            "mean_score": sum(self.scores) / len(self.scores) if self.scores else None,
            "max_score": max(self.scores) if self.scores else None,
        }


def _grouped(
    items: Iterable[tuple[str, dict[str, Any], float | None]], group: Callable[[str], str]
) -> dict[str, Any]:
    groups: dict[str, _Totals] = {}
    for layer, metrics, score in items:
        groups.setdefault(group(layer), _Totals()).add(metrics, score)
    return {k: t.figures() for k, t in groups.items()}


def _module_of(layer: str) -> str:
    return split_block(layer)[1]


def dtype_changed(metrics: dict[str, Any]) -> bool:
    """Whether a compared layer is stored in another dtype in model 2 (both dtypes known)."""
    d1, d2 = metrics.get("dtype1"), metrics.get("dtype2")
    return isinstance(d1, str) and isinstance(d2, str) and d1 != d2


def summarize(comparison: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` entry of a comparison, from its other entries.

    ``identical_layers``/``changed_layers`` count layers by their values
    (see :func:`unchanged`: a lossless dtype change is not a change, though
    the layer's own ``identical`` is False); they are None when no tensors
    were compared (unknowable from stats). ``dtype_changed_layers`` counts the
    compared layers stored in another dtype. ``by_block`` covers every
    compared layer (see :func:`block_of`). Scores are the default
    ranking score (see :func:`weightscope.comparison.ranking.score_metric`);
    ``mean_score``/``max_score`` leave out NaN scores and are inf when a
    layer's score is. Global distances and cosines follow the per-layer
    rules (inf, NaN) described in :class:`_Totals`.
    """
    layers: dict[str, dict[str, Any]] = comparison.get("layer_comparisons", {})
    metric = score_metric(comparison)
    ok = {k: m for k, m in layers.items() if "error" not in m}
    items = [(k, m, layer_score(m, metric)) for k, m in ok.items()]
    total = _Totals()
    for _, m, score in items:
        total.add(m, score)
    known = [same for same in map(unchanged, ok.values()) if same is not None]
    tensors = bool(known)
    overall = total.figures()
    return {
        "compared_layers": len(ok),
        "identical_layers": sum(known) if tensors else None,
        "changed_layers": len(known) - sum(known) if tensors else None,
        "dtype_changed_layers": sum(map(dtype_changed, ok.values())),
        "shape_mismatches": len(comparison.get("shape_mismatches", {})),
        "only_in_model1": len(comparison.get("only_in_model1", [])),
        "only_in_model2": len(comparison.get("only_in_model2", [])),
        "errors": len(layers) - len(ok),
        "score_metric": metric,
        "global_l2_distance": overall["l2_distance"],
        "global_relative_l2_distance": overall["relative_l2_distance"],
        "global_cosine_similarity": overall["cosine_similarity"],
        "by_block": _grouped(items, block_of),
        "by_module": _grouped(items, _module_of),
    }
