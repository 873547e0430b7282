"""`weightscope compare` as a user runs it: a real subprocess on real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}  # wide tables: names are not wrapped
    return subprocess.run([sys.executable, "-m", "weightscope", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env=env)


def _strict(text: str):
    def reject(token):
        raise ValueError(f"non-strict JSON token {token}")
    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    g = torch.Generator().manual_seed(7)
    a = {f"h.{i}.mlp.c_fc.weight": torch.randn(24, 12, generator=g) for i in range(3)}
    a["wte.weight"] = torch.randn(40, 12, generator=g)
    a["h.0.ln.weight"] = torch.zeros(12)  # zero norm: ratio inf and cosine NaN in Python -> null in the file
    b = {k: v.clone() for k, v in a.items()}
    b["h.2.mlp.c_fc.weight"] = a["h.2.mlp.c_fc.weight"] * 4
    b["wte.weight"] = torch.randn(44, 12, generator=g)
    b["h.0.ln.weight"] = torch.ones(12)
    save_file(a, root / "a.safetensors")
    torch.save({f"module.{k}": v for k, v in b.items()}, root / "b.pt")
    return root


def test_compare_writes_strict_json_and_prints_the_top_changes(models):
    out = models / "comparison.json"
    proc = _cli("compare", "--model1", str(models / "a.safetensors"), "--model2", str(models / "b.pt"),
                "--methods", "basic_stats", "spectral", "--top-changes", "2", "--include-vectors",
                "--output", str(out), "--quiet", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    data = _strict(out.read_text())
    assert data["layer_comparisons"]["h.0.ln"]["relative_l2_distance"] is None
    assert data["layer_comparisons"]["h.0.ln"]["cosine_similarity"] is None
    assert data["summary"]["identical_layers"] == 2 and data["summary"]["changed_layers"] == 2
    assert data["name_mapping"]["h.2.mlp.c_fc"] == "module.h.2.mlp.c_fc"
    assert "wte" in data["shape_mismatches"]
    assert "h.2.mlp.c_fc" in proc.stdout and "Top 2 changes" in proc.stdout
    assert "2 identical, 2 changed" in proc.stdout
    assert "Shape mismatches" in proc.stdout


def test_scan_json_as_a_model(models):
    from weightscope.core.scope import scan

    scan(models / "a.safetensors", methods="basic_stats").save(models / "a-scan.json")
    out = models / "from-scan.json"
    proc = _cli("compare", "--model1", str(models / "a-scan.json"), "--model2", str(models / "b.pt"),
                "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    data = _strict(out.read_text())
    assert data["mode"] == "stats"
    assert data["layer_comparisons"]["h.2.mlp.c_fc"]["l2_distance"] is None
    assert "identical/changed unknown" in proc.stdout


def test_missing_path_is_one_line_exit_1(models):
    proc = _cli("compare", "--model1", str(models / "missing.safetensors"), "--model2", str(models / "b.pt"), "-q")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightscope: error:") and "missing.safetensors" in lines[0]


def test_bad_flag_is_usage_exit_2(models):
    proc = _cli("compare", "--model1", "x", "--model2", "y", "--no-such-flag")
    assert proc.returncode == 2
    proc = _cli("compare", "--model1", "x", "--model2", "y", "--rank-by", "nonsense")
    assert proc.returncode == 2
