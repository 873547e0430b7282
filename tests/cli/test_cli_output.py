"""What the CLI prints and when: text as typed (not rich markup), files before the report, progress, up-front checks."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from strict_json import strict_load

from weightscope.cli.main import EXIT_STDOUT_CLOSED, main


@pytest.fixture
def bracketed_model(tmp_path):
    """``ckpt[red].safetensors`` holding ``blk[bold].weight`` with a NaN: names rich would read as markup."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(16, 8, generator=g)
    w[1, 1] = float("nan")
    path = tmp_path / "ckpt[red].safetensors"
    save_file({"blk[bold].weight": w, "fc.weight": torch.randn(8, 8, generator=g)}, str(path))
    return path, w


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("weightscope: error:"), proc.stderr
    return lines[0]


def test_bracketed_paths_and_layer_names_print_as_written(cli, bracketed_model, tmp_path):
    path, w = bracketed_model
    proc = cli("scan", "--model", path.name, "--methods", "basic_stats", "-q", "-o", "out[red].json", check_rc=0)
    assert "WeightScope scan of ckpt[red].safetensors:" in proc.stdout, proc.stdout
    assert "blk[bold]" in proc.stdout  # the NaN table's row
    assert "Results written to out[red].json" in proc.stderr, proc.stderr
    layer = strict_load(tmp_path / "out[red].json")["layers"]["blk[bold]"]["basic_stats"]
    assert layer["nan_count"] == 1 and layer["numel"] == w.numel()



def test_compare_prints_bracketed_paths_and_layer_names_as_written(cli, bracketed_model, tmp_path):
    path, w = bracketed_model
    other = tmp_path / "b[red].safetensors"
    g = torch.Generator().manual_seed(4)
    save_file({"blk[bold].weight": torch.randn(16, 8, generator=g), "fc.weight": torch.randn(8, 8, generator=g),
               "extra[x].weight": torch.randn(2, 2, generator=g)}, str(other))
    proc = cli("compare", "--model1", path.name, "--model2", other.name, "-q", "-o", "c[red].json", check_rc=0)
    assert "ckpt[red].safetensors -> b[red].safetensors" in proc.stdout, proc.stdout
    assert "fc" in proc.stdout and "extra[x]" in proc.stdout  # a ranked row, an unpaired layer
    assert "Comparison written to c[red].json" in proc.stderr, proc.stderr
    saved = strict_load(tmp_path / "c[red].json")
    assert saved["only_in_model2"] == ["extra[x]"]

def _with_closed_stdout(tmp_path, *args):
    """Run the CLI with a stdout nobody reads any more (``| head`` after its first line, minus the race)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "weightscope", *map(str, args)], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write)


def test_closed_stdout_keeps_the_results_file_and_exits_141(bracketed_model, tmp_path):
    path, w = bracketed_model
    proc = _with_closed_stdout(tmp_path, "scan", "--model", path, "--methods", "basic_stats", "-o", "v.json")
    assert proc.returncode == EXIT_STDOUT_CLOSED == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    layers = strict_load(tmp_path / "v.json")["layers"]
    assert layers["fc"]["basic_stats"]["numel"] == 64


def test_closed_stdout_keeps_a_run_folders_files(tmp_path):
    g = torch.Generator().manual_seed(4)
    run = tmp_path / "run"
    run.mkdir()
    weights = {step: torch.randn(6, 4, generator=g) for step in (1, 2)}
    for step, w in weights.items():
        save_file({"fc.weight": w}, str(run / f"step_{step}.safetensors"))
    proc = _with_closed_stdout(tmp_path, "scan", "--model", run, "--methods", "basic_stats", "--no-cache",
                               "-o", "run.json", "--jsonl", "history.jsonl")
    assert proc.returncode == 141 and "Traceback" not in proc.stderr, proc.stderr
    checkpoints = strict_load(tmp_path / "run.json")["checkpoints"]
    assert [cp["step"] for cp in checkpoints] == [1, 2]
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == [1, 2]
    for cp, rec in zip(checkpoints, history):
        ref = np.linalg.norm(weights[cp["step"]].double().numpy())
        assert cp["layers"]["fc"]["basic_stats"]["l2_norm"] == pytest.approx(ref, rel=1e-12)
        assert rec["layers"]["fc"]["basic_stats"]["l2_norm"] == pytest.approx(ref, rel=1e-12)
    a, b = (weights[s].double().numpy() for s in (1, 2))
    assert history[1]["diff_prev"]["fc"]["relative_l2_distance"] == pytest.approx(
        np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)


def test_demo_dir_that_is_a_file_fails_up_front_in_one_line(cli, tmp_path):
    (tmp_path / "mk.py").write_text("print('hi')\n")
    line = _one_error_line(cli("demo", "--dir", "mk.py", "--no-train"))
    assert line == "weightscope: error: cannot write the demo's files to mk.py: it is a file, not a folder"
    line = _one_error_line(cli("demo", "--dir", "mk.py/sub", "--no-train"))
    assert "mk.py is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mk.py"]


def test_demo_paths_and_install_hint_print_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "lightning", None)  # as without Lightning installed
    assert main(["demo", "--dir", "d[red]", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "Built a GPT-2-style checkpoint in d[red]/model with planted faults" in printed.out, printed.out
    assert "Full results (strict JSON) written to d[red]/scan.json" in printed.err
    assert "(pip install 'weightscope[all]')" in printed.err, printed.err
    assert strict_load(tmp_path / "d[red]" / "scan.json")["layers"]


def test_demo_training_shows_its_progress_when_not_a_terminal(cli, tmp_path):
    proc = cli("demo", "--dir", "d", "--steps", "20", check_rc=0)
    said = [line for line in proc.stderr.splitlines() if line.startswith("training: step ")]
    done = [int(line.split()[2].split("/")[0]) for line in said]
    assert done == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20], proc.stderr  # a line every tenth of the steps
    assert all(line.endswith("/20") for line in said)


def test_demo_progress_on_a_terminal_is_a_live_bar_with_messages_above(monkeypatch):
    from weightscope.cli import demo_cmd

    out = io.StringIO()
    monkeypatch.setattr(demo_cmd, "stderr", Console(file=out, force_terminal=True, color_system=None, width=100))
    with demo_cmd.StepProgress("training") as bar:
        for step in range(1, 11):
            bar.update(step, 10)
            if step == 5:
                bar.print("step 5: planted a fault [x8]")
    text = out.getvalue()
    assert "10/10" in text and "step 5: planted a fault [x8]" in text


def test_heavy_tail_table_lists_only_layers_with_a_fitted_alpha(cli, tmp_path):
    g = torch.Generator().manual_seed(6)
    weights = {"lora_A.weight": torch.randn(8, 64, generator=g), "lora_B.weight": torch.randn(64, 8, generator=g),
               "dense.weight": torch.randn(64, 64, generator=g)}
    save_file(weights, str(tmp_path / "adapter.safetensors"))
    # The fit needs 10 nonzero eigenvalues of W^T W: a rank-8 factor has 8.
    fitted = [k.removesuffix(".weight") for k, w in weights.items() if np.linalg.matrix_rank(w.double().numpy()) >= 10]
    assert fitted == ["dense"]
    proc = cli("scan", "--model", "adapter.safetensors", "--methods", "esd", "-q", "-o", "s.json", check_rc=0)
    table = proc.stdout.split("heavy-tail alpha")[1]
    listed = [line.strip("│").split("│")[0].strip() for line in table.splitlines() if line.startswith("│ ")]
    assert listed == fitted, proc.stdout
    layers = strict_load(tmp_path / "s.json")["layers"]
    assert [k for k in layers if layers[k]["esd"]["alpha"] is not None] == fitted  # NaN is stored as null


def test_all_zero_matrices_are_named_apart_from_the_condition_number_table(cli, tmp_path):
    g = torch.Generator().manual_seed(7)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -4, 16, dtype=torch.float64)  # condition number 1e4 by construction
    weights = {"lora_B.weight": torch.zeros(32, 16), "ill.weight": (u[:, :16] * s) @ v.T,
               "fine.weight": torch.randn(32, 16, generator=g)}
    save_file({k: w.float().contiguous() for k, w in weights.items()}, str(tmp_path / "m.safetensors"))
    proc = cli("scan", "--model", "m.safetensors", "--methods", "spectral", "-q", check_rc=0)
    table = proc.stdout.split("by condition number")[1].split("all-zero")[0]
    listed = [line.strip("│").split("│")[0].strip() for line in table.splitlines() if line.startswith("│ ")]
    conds = {k: np.linalg.cond(w.float().double().numpy()) for k, w in weights.items() if k != "lora_B.weight"}
    assert listed == [k.removesuffix(".weight") for k in sorted(conds, key=conds.get, reverse=True)]
    assert conds["ill.weight"] == pytest.approx(1e4, rel=1e-2)
    assert "1 all-zero matrices (condition number inf" in proc.stdout and "lora_B" in proc.stdout.split("all-zero")[1]
