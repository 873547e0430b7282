"""``weightscope scan`` on run folders, in-process (the CLI's own main), output read back."""

import json

import pytest
from run_builders import STEPS, copy_run

from weightscope.cli.main import main
from weightscope.run.trajectory import RUN_FORMAT


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
    assert set(data) >= {"checkpoints", "drift", "alerts"}
    assert data["methods"] == ["basic_stats", "spectral"]

    table = tmp_path / "exp.csv"
    assert main(["scan", "--model", str(run), "--methods", "basic_stats", "spectral", "--output", str(table),
                 "--last", "2"]) == 0
    printed = capsys.readouterr()
    # 4 and 6 are cached, and so is 4->6 (the previous-checkpoint diff of the first run).
    assert "(0 scanned, 0 comparisons)" in printed.err
    header, *rows = table.read_text().splitlines()
    assert header == "step,layer,metric,value" and {r.split(",")[0] for r in rows} == {"4", "6"}


def test_single_model_folder_keeps_plain_scan(hf_run, capsys):
    assert main(["scan", "--model", str(hf_run / "checkpoint-2"), "--methods", "basic_stats", "--quiet"]) == 0
    assert "WeightScope scan" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "2"], "is not a run folder"),
        (["--tensorboard", "tb"], "is not a run folder"),
    ],
)
def test_run_flags_on_a_single_model_say_so_in_one_line(hf_run, capsys, args, message):
    assert main(["scan", "--model", str(hf_run / "checkpoint-2"), "--quiet", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("weightscope: error:") and message in err


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
