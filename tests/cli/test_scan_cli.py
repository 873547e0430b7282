import csv
import math

import numpy as np
import pytest
import torch
from strict_json import strict_load
from safetensors.torch import save_file

from weightscope import __version__
from weightscope.demo import PLANTED, build_demo_checkpoint


@pytest.fixture
def model_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16, generator=g)
    w[0, 0] = float("nan")
    z = torch.zeros(8, 8)
    path = tmp_path / "m.safetensors"
    save_file({"a.weight": w, "a.bias": torch.randn(32, generator=g), "zero.weight": z,
               "ids": torch.arange(5)}, str(path))
    return path, w, z


def test_scan_writes_strict_json_with_documented_layout(cli, model_file, tmp_path):
    path, w, _ = model_file
    out = tmp_path / "scan.json"
    proc = cli("scan", "--model", path, "--methods", "basic_stats", "spectral", "--output", out, "--quiet",
               check_rc=0)
    data = strict_load(out)
    assert data["format"] == "weightscope.scan/1"
    assert data["methods"] == ["basic_stats", "spectral"]
    assert data["weightscope_version"] == __version__
    assert set(data["layers"]) == {"a", "zero"}
    assert data["skipped"]["ids"].startswith("non-floating")
    bs = data["layers"]["a"]["basic_stats"]
    assert bs["nan_count"] == 1 and bs["numel"] == 512 and bs["shape"] == [32, 16]
    finite = w.double().numpy().ravel()
    finite = finite[np.isfinite(finite)]
    assert math.isclose(bs["max"], finite.max(), rel_tol=1e-6)
    # inf condition number of the all-zero matrix becomes null, not Infinity
    assert data["layers"]["zero"]["spectral"]["condition_number"] is None
    assert "NaN / Inf" in proc.stdout and "a" in proc.stdout


def test_scan_csv_is_one_row_per_layer(cli, model_file, tmp_path):
    path, _, _ = model_file
    out = tmp_path / "scan.csv"
    cli("scan", "--model", path, "--methods", "basic_stats", "--output", out, "--quiet", "--include-vectors",
        check_rc=0)
    rows = list(csv.DictReader(out.open()))
    assert [r["layer"] for r in rows] == ["a.bias", "a", "zero"]  # safetensors header order
    assert float(rows[2]["basic_stats.zeros_percentage"]) == 100.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["scan", "--model", "does/not/exist.safetensors"], "does/not/exist.safetensors"),
        (["scan", "--model", "MODEL", "--methods", "bogus"], "valid methods"),
        (["scan", "--model", "MODEL", "--device", "cuda:3"], "cuda"),
        (["scan", "--model", "MODEL", "--layers", "("], "regex"),
    ],
)
def test_user_errors_are_one_line_exit_1(cli, model_file, args, needle):
    path, _, _ = model_file
    args = [str(path) if a == "MODEL" else a for a in args]
    if "--device" in args and torch.cuda.device_count() > 3:
        pytest.skip("this machine has that device")
    proc = cli(*args)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightscope: error:"), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_truncated_file_is_one_line_error(cli, model_file, tmp_path):
    path, _, _ = model_file
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    proc = cli("scan", "--model", bad)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad.safetensors" in proc.stderr


def test_usage_errors_exit_2_and_version(cli, model_file):
    assert cli("scan").returncode == 2
    assert cli("scan", "--model", "x", "--workers", "zero").returncode == 2
    assert cli("scan", "--model", "x", "--top-issues", "0").returncode == 2
    proc = cli("--version", check_rc=0)
    assert proc.stdout.strip() == f"weightscope {__version__}"
    assert "scan" in cli("--help", check_rc=0).stdout


def test_debug_shows_traceback(cli):
    proc = cli("--debug", "scan", "--model", "nope.safetensors")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_demo_finds_its_planted_faults(cli, tmp_path):
    proc = cli("demo", "--dir", tmp_path / "d", "--quiet", "--no-train", check_rc=0)
    data = strict_load(tmp_path / "d" / "scan.json")
    layers = data["layers"]
    assert set(PLANTED) <= set(layers)
    assert layers["transformer.h.1.attn.c_proj"]["sparsity"]["dead_columns"] == 4
    assert layers["transformer.h.2.mlp.c_fc"]["quantization"]["recommendation"] == "per_channel_or_smoothquant"
    cond = layers["transformer.h.3.mlp.c_proj"]["spectral"]["condition_number"]
    assert cond is None or cond > 1e6  # rank 8 of 128: singular
    assert layers["transformer.h.3.mlp.c_proj"]["spectral"]["numerical_rank"] == 8
    assert "written to" in proc.stderr


def test_demo_training_catches_the_planted_fault_and_compares(cli, tmp_path):
    proc = cli("demo", "--dir", tmp_path / "d", "--quiet", "--steps", "90", check_rc=0)
    assert "caught at step 60" in proc.stdout, proc.stdout
    comparison = strict_load(tmp_path / "d" / "comparison.json")
    top = max(comparison["layer_comparisons"].items(), key=lambda kv: kv[1]["relative_l2_distance"])
    assert top[0] == "transformer.h.2.mlp.c_fc"  # the x8 fault dominates what training changed
    lines = (tmp_path / "d" / "training" / "weightscope.jsonl").read_text().splitlines()
    assert len(lines) >= 90 // 6
    assert "tensorboard --logdir" in proc.stdout


class HParams:
    """A config object in a Lightning checkpoint's hyper_parameters: the CLI never imports this module."""

    def __init__(self, lr):
        self.lr = lr


def test_lightning_ckpt_with_a_config_object_scans(cli, tmp_path):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(24, 12, generator=g)
    torch.save({"state_dict": {"model.fc.weight": w}, "global_step": 10, "hyper_parameters": {"cfg": HParams(0.1)}},
               tmp_path / "last.ckpt")
    out = tmp_path / "scan.json"
    proc = cli("scan", "--model", tmp_path / "last.ckpt", "--methods", "basic_stats", "--output", out, "--quiet",
               check_rc=0)
    assert "test_scan_cli.HParams" in proc.stderr and "placeholders" in proc.stderr
    bs = strict_load(out)["layers"]["model.fc"]["basic_stats"]
    ref = w.double().numpy()
    assert math.isclose(bs["mean"], ref.mean(), rel_tol=1e-12) and math.isclose(bs["std"], ref.std(), rel_tol=1e-12)
