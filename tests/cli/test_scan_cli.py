import csv
import json
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
    assert bs["max"] == finite.max() and bs["min"] == finite.min()  # float32 values: exact in float64
    assert math.isclose(bs["l2_norm"], np.linalg.norm(finite), rel_tol=1e-12)
    assert math.isclose(bs["mean"], finite.mean(), rel_tol=1e-12)
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
    # Each row holds its own tensor's numbers (read back with safetensors' numpy API, finite values, float64).
    from safetensors.numpy import load_file

    tensors = load_file(path)
    for row, name in zip(rows, ["a.bias", "a.weight", "zero.weight"]):
        x = tensors[name].astype(np.float64).ravel()
        finite = x[np.isfinite(x)]
        assert int(row["basic_stats.numel"]) == x.size and int(row["basic_stats.nan_count"]) == np.isnan(x).sum()
        for stat, want in (("l2_norm", np.linalg.norm(finite)), ("mean", finite.mean()), ("std", finite.std()),
                           ("min", finite.min()), ("max", finite.max()), ("abs_mean", np.abs(finite).mean())):
            assert float(row[f"basic_stats.{stat}"]) == pytest.approx(want, rel=1e-9, abs=1e-12), (name, stat)


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
    # The comparison is of the first and last weights training saved, as numpy float64 has them.
    from safetensors.numpy import load_file

    ckpts = tmp_path / "d" / "training" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000000.safetensors", "step-000090.safetensors"]
    first, last = (load_file(ckpts / name) for name in ("step-000000.safetensors", "step-000090.safetensors"))
    matrices = [k.removesuffix(".weight") for k, v in first.items() if v.ndim == 2 and k.endswith(".weight")]
    assert sorted(comparison["layer_comparisons"]) == sorted(matrices)
    for layer, got in comparison["layer_comparisons"].items():
        a, b = (t[f"{layer}.weight"].astype(np.float64) for t in (first, last))
        assert got["relative_l2_distance"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)
    # One snapshot every 6 steps; the planted x8 is caught at its step, in its layer, and nothing else is.
    records = [json.loads(line) for line in (tmp_path / "d" / "training" / "weightscope.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(0, 91, 6)) and records[-1]["kind"] == "final"
    alerts = [(a["step"], a["layer"], a["rule"]) for r in records for a in r["alerts"]]
    assert (60, "model.transformer.h.2.mlp.c_fc", "norm_ratio") in alerts
    assert {(step, layer) for step, layer, _ in alerts} == {(60, "model.transformer.h.2.mlp.c_fc")}
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


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("weightscope: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_and_after_the_subcommand(cli, where):
    args = ["scan", "--model", "nope.safetensors"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    proc = cli(*args)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "SourceError" in proc.stderr


def test_without_debug_the_error_is_one_line(cli):
    assert "nope.safetensors" in _one_error_line(cli("scan", "--model", "nope.safetensors"))


def test_comma_separated_methods_select_exactly_those(cli, model_file, tmp_path):
    path, w, _ = model_file
    out = tmp_path / "scan.json"
    cli("scan", "-m", path, "--methods", "spectral,quantization", "-o", out, "-q", check_rc=0)
    data = strict_load(out)
    assert data["methods"] == ["spectral", "quantization"]
    assert set(data["layers"]["zero"]) == {"spectral", "quantization"}
    # Mixed forms too: a space-separated list whose items hold commas.
    out2 = tmp_path / "scan2.json"
    cli("scan", "-m", path, "--methods", "sparsity,basic_stats", "esd", "-o", out2, "-q", check_rc=0)
    assert strict_load(out2)["methods"] == ["basic_stats", "esd", "sparsity"]
    assert strict_load(out2)["layers"]["zero"]["sparsity"]["sparsity_levels"]["0"] == 100.0


def test_comma_separated_methods_in_run_folder_mode(cli, tmp_path):
    g = torch.Generator().manual_seed(2)
    weights = {}
    for step in (1, 2):
        (tmp_path / "run" / f"checkpoint-{step}").mkdir(parents=True)
        weights[step] = torch.randn(12, 6, generator=g)
        save_file({"fc.weight": weights[step]}, str(tmp_path / "run" / f"checkpoint-{step}" / "model.safetensors"))
    out = tmp_path / "run.json"
    cli("scan", "-m", tmp_path / "run", "--methods", "basic_stats,spectral", "--no-cache", "-o", out, "-q",
        check_rc=0)
    data = strict_load(out)
    assert data["methods"] == ["basic_stats", "spectral"]
    # both methods ran, on each checkpoint's own weights
    assert [cp["step"] for cp in data["checkpoints"]] == [1, 2]
    for cp in data["checkpoints"]:
        w = weights[cp["step"]].double().numpy()
        sv = np.linalg.svd(w, compute_uv=False)
        assert sorted(cp["layers"]["fc"]) == ["basic_stats", "spectral"]
        assert cp["layers"]["fc"]["basic_stats"]["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-9)
        assert cp["layers"]["fc"]["spectral"]["condition_number"] == pytest.approx(sv[0] / sv[-1], rel=1e-9)


def test_csv_and_parquet_hold_null_not_inf(cli, tmp_path):
    """A singular matrix's condition number is inf in Python; files say null (README: Metrics)."""
    pd = pytest.importorskip("pandas")
    diag = torch.diag(torch.tensor([4.0, 2.0, 0.5]))  # condition number 8, exactly
    save_file({"zero.weight": torch.zeros(4, 4), "diag.weight": diag}, str(tmp_path / "m.safetensors"))
    out = tmp_path / "scan.csv"
    cli("scan", "-m", tmp_path / "m.safetensors", "--methods", "basic_stats,spectral", "-o", out, "-q", check_rc=0)
    rows = {r["layer"]: r for r in csv.DictReader(out.open())}
    assert not [cell for row in rows.values() for cell in row.values() if "inf" in cell.lower()]
    assert rows["zero"]["spectral.condition_number"] == ""  # an empty cell: NaN / null when read back
    assert math.isclose(float(rows["diag"]["spectral.condition_number"]), np.linalg.cond(diag.double().numpy()))
    frame = pd.read_csv(out).set_index("layer")
    assert math.isnan(frame.loc["zero", "spectral.condition_number"])

    pq = pytest.importorskip("pyarrow.parquet")
    out_pq = tmp_path / "scan.parquet"
    cli("scan", "-m", tmp_path / "m.safetensors", "--methods", "spectral", "-o", out_pq, "-q", check_rc=0)
    table = pq.read_table(out_pq).to_pydict()
    by_layer = dict(zip(table["layer"], table["spectral.condition_number"]))
    assert by_layer["zero"] is None and math.isclose(by_layer["diag"], 8.0)


@pytest.mark.parametrize(
    "output, needle",
    [
        ("outdir", "outdir: it is a folder"),
        ("missing/dir/x.json", "folder missing/dir does not exist"),
        ("out.xyz", "unsupported extension '.xyz' (supported: .json, .csv, .parquet)"),
        ("out", "no extension (supported: .json, .csv, .parquet)"),
    ],
)
def test_bad_output_path_fails_before_the_scan(cli, tmp_path, output, needle):
    (tmp_path / "outdir").mkdir()
    # The model does not exist: the output error coming first shows nothing was read or scanned.
    line = _one_error_line(cli("scan", "-m", "no-such-model.safetensors", "-o", output))
    assert needle in line and ".tmp" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir"]  # nothing written, not even a temp file


def test_bad_output_path_fails_before_a_run_folder_scan(cli, tmp_path):
    for step in (1, 2):
        folder = tmp_path / "run" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"fc.weight": torch.ones(4, 4) * step}, str(folder / "model.safetensors"))
    line = _one_error_line(cli("scan", "-m", tmp_path / "run", "-o", "scan.txt"))
    assert "unsupported extension '.txt'" in line
    assert not (tmp_path / "run" / ".weightscope-cache").exists()  # the run was not scanned


@pytest.mark.parametrize(
    "tensors, args, needle",
    [
        ({"a.bias": torch.ones(4), "ln.weight": torch.ones(4)}, [],
         "of 2 tensors, 2 are 1-D (biases, norms): add --include-vectors for their basic_stats"),
        ({"ids": torch.arange(6).reshape(2, 3)}, [], "of 1 tensor, 1 is not floating point"),
        ({"fc.weight": torch.ones(3, 3), "fc.bias": torch.ones(3)}, ["--layers", "nomatch"],
         "of 2 tensors, 2 are filtered out by --layers 'nomatch'"),
        ({"fc.weight": torch.ones(3, 3), "fc.bias": torch.ones(3), "ids": torch.arange(2)}, ["--exclude", "weight"],
         "of 3 tensors, 1 is 1-D (biases, norms): add --include-vectors for their basic_stats; "
         "1 is not floating point (integer/bool tensors are never analysed); 1 is filtered out by --exclude 'weight'"),
    ],
)
def test_a_scan_that_analyses_nothing_warns_why(cli, tmp_path, tensors, args, needle):
    save_file(tensors, str(tmp_path / "m.safetensors"))
    out = tmp_path / "scan.json"
    proc = cli("scan", "-m", tmp_path / "m.safetensors", *args, "-o", out, "-q")
    assert proc.returncode == 0, proc.stderr  # documented: a warning, not an error
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("weightscope: warning: nothing analysed: "), proc.stderr
    assert needle in warnings[0]
    assert strict_load(out)["layers"] == {}


def test_a_scan_with_layers_has_no_warning(cli, model_file):
    path, _, _ = model_file
    proc = cli("scan", "-m", path, "--methods", "basic_stats", "-q", check_rc=0)
    assert "warning" not in proc.stderr


def test_nothing_analysed_counts_tensors_the_source_left_out(tmp_path, monkeypatch, capsys):
    from weightscope.cli.main import main
    from weightscope.sources import safetensors_file

    save_file({"a.weight": torch.randn(4, 6).half(), "a.bias": torch.randn(4)}, str(tmp_path / "m.safetensors"))
    monkeypatch.delitem(safetensors_file.SAFETENSORS_DTYPES, "F16")  # as on a torch without that dtype
    assert main(["scan", "--model", str(tmp_path / "m.safetensors"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "of 2 tensors, 1 is 1-D" in err and "1 is skipped for other reasons" in err and "filtered" not in err
