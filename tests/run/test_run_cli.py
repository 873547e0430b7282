"""``weightscope scan`` on run folders, in-process (the CLI's own main), output read back."""

import json

import numpy as np
import pytest
import torch
from run_builders import STEPS, copy_run, hf_weights
from safetensors.torch import save_file

from weightscope.cli.main import main
from weightscope.run.trajectory import RUN_FORMAT

LAYER = "transformer.h.0.mlp.c_fc"


def _strict(path):
    return json.loads(path.read_text(), parse_constant=lambda t: pytest.fail(f"non-strict JSON token {t}"))


def test_run_folder_report_json_then_cached_rerun(hf_run, tmp_path, capsys):
    run = copy_run(hf_run, tmp_path / "run")
    out = tmp_path / "exp.json"
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "spectral", "--output", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"WeightScope run {run}: 3 checkpoints (steps 2..6)" in printed.out
    for section in ("layers by drift", "No alerts.", "Trends of the top 10 layers by condition number"):
        assert section in printed.out
    assert "3 checkpoints in" in printed.err and "(3 scanned, 3 comparisons)" in printed.err
    data = _strict(out)
    assert data["format"] == RUN_FORMAT and [c["step"] for c in data["checkpoints"]] == STEPS
    assert data["methods"] == ["basic_stats", "spectral"] and data["alerts"] == []
    weights = {s: hf_weights(run / f"checkpoint-{s}") for s in STEPS}

    def reference(step, layer):
        w = weights[step][layer]
        sv = np.linalg.svd(w, compute_uv=False)
        return {"basic_stats.l2_norm": np.linalg.norm(w), "spectral.condition_number": sv[0] / sv[-1]}

    for cp in data["checkpoints"]:
        assert set(cp["layers"]) == set(weights[cp["step"]])
        for layer in (LAYER, "transformer.wte"):
            want = reference(cp["step"], layer)
            assert cp["layers"][layer]["basic_stats"]["l2_norm"] == pytest.approx(want["basic_stats.l2_norm"], rel=1e-9)
            assert cp["layers"][layer]["spectral"]["condition_number"] == pytest.approx(
                want["spectral.condition_number"], rel=1e-9)

    table = tmp_path / "exp.csv"
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "spectral", "--output", str(table),
                 "--last", "2"]) == 0
    printed = capsys.readouterr()
    # 4 and 6 are cached, and so is 4->6 (the previous-checkpoint diff of the first run).
    assert "(0 scanned, 0 comparisons)" in printed.err
    header, *rows = table.read_text().splitlines()
    assert header == "step,layer,metric,value" and {r.split(",")[0] for r in rows} == {"4", "6"}
    # The cached numbers are still each checkpoint's own (numpy float64 of its weights, drift included).
    cells = {tuple(r.split(",")[:3]): float(r.split(",")[3]) for r in rows}
    for step in (4, 6):
        for metric, want in reference(step, LAYER).items():
            assert cells[str(step), LAYER, metric] == pytest.approx(want, rel=1e-9), (step, metric)
    a, b = weights[4][LAYER], weights[6][LAYER]
    assert cells["6", LAYER, "drift_relative_l2_distance"] == pytest.approx(
        np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)


def test_single_model_folder_keeps_plain_scan(hf_run, capsys):
    assert main(["scan", "--model", str(hf_run / "checkpoint-2"), "--methods", "basic_stats", "--quiet"]) == 0
    assert "WeightScope scan" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "2"], "is not a run folder"),
        (["--steps", "1,2"], "is not a run folder"),
        (["--last", "2"], "is not a run folder"),
        (["--tensorboard", "tb"], "is not a run folder"),
    ],
)
@pytest.mark.parametrize("quiet", [["--quiet"], []])
def test_run_flags_on_a_single_model_say_so_in_one_line(hf_run, capsys, args, message, quiet):
    assert main(["scan", "--model", str(hf_run / "checkpoint-2"), *quiet, *args]) == 1
    err = capsys.readouterr().err
    # Nothing before the error either: no blank line left by a progress bar that never had a run.
    assert err.startswith("weightscope: error:") and len(err.splitlines()) == 1 and message in err, repr(err)


def test_unknown_step_and_bad_flags(hf_run, capsys):
    assert main(["scan", "--model", str(hf_run), "--steps", "3", "--no-cache", "--quiet"]) == 1
    assert "no checkpoint at step 3; steps in this run: 2, 4, 6" in capsys.readouterr().err
    for bad in (["--steps", "two"], ["--every", "0"], ["--last", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(["scan", "--model", str(hf_run), *bad])
        assert exc.value.code == 2
    assert main(["scan", "--model", str(hf_run), "--no-cache", "--cache", "x", "--quiet"]) == 1
    assert "contradict" in capsys.readouterr().err


def test_sparkline_scales_marks_missing_nan_inf_and_takes_logs():
    from weightscope.run.report import sparkline

    assert sparkline([0.0, 7.0, 3.5]) == "▁█▅"  # (3.5 - 0) / 7 * 7 = 3.5 -> rounds to 4
    assert sparkline([1.0, None, float("nan"), float("inf"), 8.0]) == "▁·?!█"
    assert sparkline([1.0, 10.0, 100.0], log=True) == "▁▅█"  # decades are evenly spaced
    assert sparkline([2.0, 2.0]) == "▄▄" and sparkline([]) == ""


def test_sharded_model_missing_a_shard_is_the_models_error_not_a_run(sharded_model, tmp_path, capsys):
    import shutil

    import numpy as np
    from run_builders import sharded_weights

    from weightscope.errors import SourceError
    from weightscope.sources import open_source

    # Whole: a plain scan, every layer's norm as numpy float64 has it from the shards themselves.
    out = tmp_path / "whole.json"
    assert main(["scan", "--model", str(sharded_model), "--methods", "basic_stats", "--quiet",
                 "--output", str(out)]) == 0
    assert "WeightScope scan of" in capsys.readouterr().out
    layers = _strict(out)["layers"]
    ref = sharded_weights(sharded_model)
    assert set(layers) == set(ref) and len(ref) == 10
    for layer, w in ref.items():
        assert layers[layer]["basic_stats"]["l2_norm"] == pytest.approx(np.linalg.norm(w), rel=1e-9)

    broken = shutil.copytree(sharded_model, tmp_path / "broken")
    (broken / "model-00003-of-00007.safetensors").unlink()
    with pytest.raises(SourceError) as exc:
        open_source(broken)
    assert "names shard files that are missing: model-00003-of-00007.safetensors" in str(exc.value)
    assert main(["scan", "--model", str(broken), "--methods", "basic_stats", "--quiet"]) == 1
    printed = capsys.readouterr()
    assert "run folder" not in printed.out and "checkpoints" not in printed.out
    assert printed.err.strip() == f"weightscope: error: {exc.value}"
    assert not (broken / ".weightscope-cache").exists()
    # A run flag on it: still an error, that says what the folder is and what is wrong with it.
    assert main(["scan", "--model", str(broken), "--last", "2", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds one sharded model" in err and "model-00003-of-00007" in err


def test_a_run_scan_that_analyses_nothing_says_why(hf_run, tmp_path, capsys):
    run = copy_run(hf_run, tmp_path / "run")
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "--layers", "^nomatch",
                 "--no-cache", "--quiet"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "warning" in line]
    assert said == ["weightscope: warning: nothing analysed in 3 checkpoints: every tensor is filtered out by "
                    "--layers '^nomatch'"], err


def _bracketed_run(folder):
    """``folder/step_{1,2}.safetensors`` with a layer ``net[red]`` that turns NaN at step 2 (a nan alert)."""
    folder.mkdir()
    g = torch.Generator().manual_seed(5)
    weights = {1: torch.randn(8, 4, generator=g)}
    weights[2] = weights[1] * 1.01
    weights[2][0, 0] = float("nan")
    for step, w in weights.items():
        save_file({"net[red].weight": w, "fc.weight": torch.full((4, 4), float(step))},
                  str(folder / f"step_{step}.safetensors"))
    return weights


def test_run_report_prints_bracketed_folder_layer_and_alert_as_written(tmp_path, capsys):
    run = tmp_path / "exp[v2]"
    weights = _bracketed_run(run)
    (run / "final[v2].pt").write_bytes(b"")  # no step: listed as ignored, under its own name
    out = tmp_path / "exp[v2].json"
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "--no-cache", "-q", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"WeightScope run {run}: 2 checkpoints (steps 1..2)" in printed.out, printed.out
    assert "ignored final[v2].pt: no step in its name" in printed.out
    alerts = [[cell.strip() for cell in line.split("│")[1:-1]]
              for line in printed.out.splitlines() if "ERROR" in line]
    assert alerts == [["2", "ERROR", "nan", "net[red]", "1 NaN and 0 Inf values in net[red]"]], printed.out
    assert f"Results written to {out}" in printed.err
    data = _strict(out)
    assert [a["layer"] for a in data["alerts"] if a["rule"] == "nan"] == ["net[red]"]
    first = data["checkpoints"][0]["layers"]["net[red]"]["basic_stats"]
    assert first["l2_norm"] == pytest.approx(np.linalg.norm(weights[1].double().numpy()), rel=1e-12)


def test_replay_paths_are_checked_before_the_run_is_scanned(tmp_path, capsys):
    run = tmp_path / "run"
    _bracketed_run(run)
    (tmp_path / "mk.py").write_text("print('hi')\n")
    for flag, path, said in (
        ("--tensorboard", tmp_path / "mk.py", f"cannot write TensorBoard logs to {tmp_path / 'mk.py'}: it is a file, "
                                               "not a folder"),
        ("--tensorboard", tmp_path / "mk.py" / "tb", f"{tmp_path / 'mk.py'} is a file, not a folder"),
        # A file, like --output: its folder must exist (it was created, unlike --output's).
        ("--jsonl", tmp_path / "nonexist" / "x.jsonl", f"folder {tmp_path / 'nonexist'} does not exist"),
    ):
        assert main(["scan", "--model", str(run), flag, str(path), "-q"]) == 1
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("weightscope: error:") and said in err, err
        assert not (run / ".weightscope-cache").exists()  # checked before any scan
    assert not (tmp_path / "nonexist").exists()
    # A TensorBoard folder that does not exist yet is made, with its parents, as TensorBoard does.
    assert main(["scan", "--model", str(run), "--tensorboard", str(tmp_path / "new" / "tb"), "-q", "--no-cache"]) == 0
    assert any((tmp_path / "new" / "tb").glob("events.out.tfevents.*"))
