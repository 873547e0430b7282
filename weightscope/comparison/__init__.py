"""Pair metrics, name matching and summaries for comparing two models.

Pure functions of tensors or of plain dicts; the orchestration (sources,
engine, progress) lives in :mod:`weightscope.core.comparator`.
"""

from __future__ import annotations

from .distribution import distribution_metrics, wasserstein
from .matching import Matching, match_layers, normalize_name
from .pair_metrics import DIFF_KEYS, bitwise_equal, diff_metrics
from .ranking import (
    STATS_SCORE,
    TENSOR_SCORE,
    change_score,
    find_most_changed_layers,
    lowest_first,
    score_label,
    score_metric,
)
from .stats_diff import STATS_METRICS, norm_change, stats_metrics
from .summary import block_of, split_block, summarize, unchanged
from .update_spectrum import UPDATE_KEYS, spectrum_metrics, update_spectrum

__all__ = [
    "DIFF_KEYS",
    "STATS_METRICS",
    "STATS_SCORE",
    "TENSOR_SCORE",
    "UPDATE_KEYS",
    "Matching",
    "bitwise_equal",
    "block_of",
    "change_score",
    "diff_metrics",
    "distribution_metrics",
    "find_most_changed_layers",
    "lowest_first",
    "match_layers",
    "norm_change",
    "normalize_name",
    "score_label",
    "score_metric",
    "spectrum_metrics",
    "split_block",
    "stats_metrics",
    "summarize",
    "unchanged",
    "update_spectrum",
    "wasserstein",
]
