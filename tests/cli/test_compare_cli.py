"""`weightscope compare` QA cases: ranking direction, nothing in common, bad inputs and outputs."""

import csv
import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from strict_json import strict_load


@pytest.fixture
def pair(tmp_path):
    """Model 2 = model 1 with l0 untouched, l1 changed a lot, l2 a little."""
    g = torch.Generator().manual_seed(0)
    a = {f"l{i}.weight": torch.randn(16, 8, generator=g) for i in range(3)}
    b = {k: v.clone() for k, v in a.items()}
    b["l1.weight"] += 0.5 * torch.randn(16, 8, generator=g)
    b["l2.weight"] += 0.05 * torch.randn(16, 8, generator=g)
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors", a, b


def _cosine(x, y):
    x, y = x.double().numpy().ravel(), y.double().numpy().ravel()
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _table_layers(stdout):
    return re.findall(r"^│ (\S+)\s+│", stdout, flags=re.MULTILINE)


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("weightscope: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_rank_by_cosine_similarity_puts_the_least_similar_first(cli, pair):
    m1, m2, a, b = pair
    proc = cli("compare", "--model1", m1, "--model2", m2, "--rank-by", "cosine_similarity", "-q", check_rc=0)
    cos = {k.removesuffix(".weight"): _cosine(a[k], b[k]) for k in a}
    assert _table_layers(proc.stdout) == sorted(cos, key=cos.get) == ["l1", "l2", "l0"]
    assert "lowest = most changed" in proc.stdout


def test_rank_by_a_distance_stays_largest_first(cli, pair):
    m1, m2, a, b = pair
    proc = cli("compare", "--model1", m1, "--model2", m2, "--rank-by", "max_abs_diff", "-q", check_rc=0)
    diff = {k.removesuffix(".weight"): float((b[k] - a[k]).abs().max()) for k in a}
    assert _table_layers(proc.stdout) == sorted(diff, key=diff.get, reverse=True)
    assert "lowest" not in proc.stdout


def test_no_names_in_common_between_two_checkpoints_says_so(cli, pair, tmp_path):
    m1, _, _, _ = pair
    save_file({"x.weight": torch.ones(4, 4)}, str(tmp_path / "other.safetensors"))
    proc = cli("compare", "--model1", m1, "--model2", tmp_path / "other.safetensors", "-q", check_rc=0)
    assert "No layers compared: no layer names in common (3 in model 1, 1 in model 2)" in proc.stdout
    assert "wrapper prefixes" in proc.stdout
    assert "saved stats" not in proc.stdout  # both sides are tensors
    assert "Only in model 2 (1): x" in proc.stdout


def test_saved_stats_line_is_kept_for_scan_files(cli, pair, tmp_path):
    m1, m2, a, b = pair
    cli("scan", "-m", m1, "--methods", "basic_stats", "-o", tmp_path / "s1.json", "-q", check_rc=0)
    out = tmp_path / "c.json"
    proc = cli("compare", "--model1", tmp_path / "s1.json", "--model2", m2, "-q", "-o", out, check_rc=0)
    assert "3 layers compared from saved stats" in proc.stdout
    # What saved stats allow, as numpy float64 has it: model 1's side from the scan file, model 2's from tensors.
    lc = strict_load(out)["layer_comparisons"]
    assert sorted(lc) == ["l0", "l1", "l2"]
    for key in a:
        x, y = a[key].double().numpy(), b[key].double().numpy()
        got = lc[key.removesuffix(".weight")]
        assert got["tensors_compared"] is False and got["relative_l2_distance"] is None  # needs both tensors
        assert got["model1_l2_norm"] == pytest.approx(np.linalg.norm(x), rel=1e-9)
        assert got["model2_l2_norm"] == pytest.approx(np.linalg.norm(y), rel=1e-9)
        assert got["l2_norm_ratio"] == pytest.approx(np.linalg.norm(y) / np.linalg.norm(x), rel=1e-9)
        assert got["mean_diff"] == pytest.approx(y.mean() - x.mean(), rel=1e-9, abs=1e-12)
        assert got["std_diff"] == pytest.approx(y.std() - x.std(), rel=1e-9, abs=1e-12)
    # ranked by how far the norm moved: l1 (+0.5 noise) above l2 (+0.05) above l0 (untouched)
    assert _table_layers(proc.stdout) == ["l1", "l2", "l0"]


def test_an_empty_json_object_is_not_a_scan_file(cli, pair, tmp_path):
    _, m2, _, _ = pair
    (tmp_path / "empty.json").write_text("{}")
    line = _one_error_line(cli("compare", "--model1", tmp_path / "empty.json", "--model2", m2))
    assert "empty.json is not a WeightScope scan file" in line


@pytest.mark.parametrize(
    "output, needle",
    [
        ("outdir", "outdir: it is a folder"),
        ("missing/c.json", "folder missing does not exist"),
        ("c.txt", "unsupported extension '.txt' (supported: .json, .csv, .parquet)"),
    ],
)
def test_bad_output_path_fails_before_comparing(cli, tmp_path, output, needle):
    (tmp_path / "outdir").mkdir()
    # Neither model exists: the output error coming first shows nothing was read.
    line = _one_error_line(cli("compare", "--model1", "no1.safetensors", "--model2", "no2.safetensors",
                               "-o", output))
    assert needle in line


def test_compare_csv_holds_null_where_python_has_inf(cli, tmp_path):
    pytest.importorskip("pandas")
    a = {"s.weight": torch.eye(4), "v.weight": torch.eye(4)}
    b = {"s.weight": torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0])), "v.weight": 2 * torch.eye(4)}
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    out = tmp_path / "c.csv"
    cli("compare", "--model1", tmp_path / "a.safetensors", "--model2", tmp_path / "b.safetensors",
        "--methods", "basic_stats,spectral", "-o", out, "-q", check_rc=0)
    rows = {r["layer"]: r for r in csv.DictReader(out.open())}
    assert not [c for r in rows.values() for c in r.values() if "inf" in c.lower()]
    assert rows["s"]["condition_number_ratio"] == ""  # cond(B) = inf over cond(A) = 1: inf in Python
    assert float(rows["v"]["condition_number_ratio"]) == 1.0 and float(rows["v"]["l2_norm_ratio"]) == 2.0
    assert float(rows["s"]["l2_distance"]) == 1.0  # ‖B − A‖ = one unit entry


@pytest.mark.parametrize("command", ["scan", "compare"])
@pytest.mark.parametrize("workers", ["0", "-2", "two"])
def test_workers_below_one_is_bad_usage_exit_2(cli, pair, command, workers):
    m1, m2, _, _ = pair
    models = ["--model", m1] if command == "scan" else ["--model1", m1, "--model2", m2]
    proc = cli(command, *models, "--workers", workers, "-q")
    assert proc.returncode == 2, proc.stderr
    assert "argument --workers: expected a positive integer" in proc.stderr and "Traceback" not in proc.stderr


def test_zero_initialised_layer_ranks_first_and_a_nan_layer_last(cli, tmp_path):
    g = torch.Generator().manual_seed(3)
    a = {f"w{i}.weight": torch.randn(12, 8, generator=g) for i in range(3)}
    a["lora_B.weight"] = torch.zeros(12, 4)
    a["gate.weight"] = torch.zeros(8, 8)
    b = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in a.items()}
    b["lora_B.weight"] = 0.02 * torch.randn(12, 4, generator=g)
    b["gate.weight"] = torch.zeros(8, 8)
    b["w1.weight"][2, 2] = float("nan")
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    out = tmp_path / "c.json"
    proc = cli("compare", "--model1", tmp_path / "a.safetensors", "--model2", tmp_path / "b.safetensors",
               "--methods", "basic_stats", "spectral", "-o", out, "-q", check_rc=0)
    assert "failed" not in proc.stderr  # the NaN layer's ΔW spectrum is skipped, not an error
    layers = _table_layers(proc.stdout)
    rel = {k: np.linalg.norm((b[f"{k}.weight"] - a[f"{k}.weight"]).double().numpy())
           / np.linalg.norm(a[f"{k}.weight"].double().numpy()) for k in ("w0", "w2")}
    assert layers == ["lora_B", *sorted(rel, key=rel.get, reverse=True), "gate", "w1"]
    first = next(line for line in proc.stdout.splitlines() if line.startswith("│ lora_B"))
    assert first.split("│")[2].strip() == "inf"  # the score column
    data = json.loads(out.read_text(), parse_constant=lambda token: pytest.fail(f"non-strict JSON {token}"))
    lc = data["layer_comparisons"]
    assert lc["lora_B"]["relative_l2_distance"] is None and lc["lora_B"]["l2_norm_ratio"] is None  # inf -> null
    assert lc["gate"]["relative_l2_distance"] == 0.0 and lc["gate"]["l2_norm_ratio"] == 1.0
    assert lc["w1"]["l2_distance"] is None and lc["w1"]["update_rank_90"] is None and "error" not in lc["w1"]
    assert lc["w1"]["shape"] == [12, 8]


def test_csv_has_resized_layers_and_a_bad_rank_by_still_saves(cli, tmp_path):
    pytest.importorskip("pandas")
    from scipy.stats import wasserstein_distance

    g = torch.Generator().manual_seed(0)
    emb, fc = torch.randn(10, 6, generator=g), torch.randn(6, 6, generator=g)
    grown = torch.cat([emb, torch.randn(2, 6, generator=g)])
    save_file({"wte.weight": emb, "fc.weight": fc}, str(tmp_path / "a.safetensors"))
    save_file({"wte.weight": grown, "fc.weight": 1.1 * fc}, str(tmp_path / "b.safetensors"))
    out = tmp_path / "c.csv"
    cli("compare", "--model1", tmp_path / "a.safetensors", "--model2", tmp_path / "b.safetensors",
        "-o", out, "-q", check_rc=0)
    rows = {r["layer"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"wte", "fc"}
    assert rows["wte"]["shape_mismatch"] == "True" and rows["fc"]["shape_mismatch"] == "False"
    want = wasserstein_distance(emb.double().numpy().ravel(), grown.double().numpy().ravel())
    assert float(rows["wte"]["wasserstein_distance"]) == pytest.approx(want, rel=1e-9)
    # A --rank-by this comparison lacks fails the report, not the saved file.
    out2 = tmp_path / "c.json"
    proc = cli("compare", "--model1", tmp_path / "a.safetensors", "--model2", tmp_path / "b.safetensors",
               "--rank-by", "update_rank_90", "-o", out2, "-q")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"Comparison written to {out2}" and len(lines) == 2  # the file first, then one error line
    assert lines[1].startswith("weightscope: error: no layer has a numeric 'update_rank_90'; rank by one of: ")
    assert json.loads(out2.read_text())["layer_comparisons"]["fc"]["l2_norm_ratio"] == pytest.approx(1.1, rel=1e-6)


def _rows(stdout):
    """Table rows as {layer: [cells]} in printed order (the first table in the output)."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("│ "):
            cells = [c.strip() for c in line.strip("│").split("│")]
            rows.setdefault(cells[0], cells[1:])
    return rows


@pytest.fixture
def zeroed(tmp_path):
    """A zero-initialised LoRA B that trained, a layer zeroed out, and three that drift."""
    g = torch.Generator().manual_seed(5)
    a = {f"w{i}.weight": torch.randn(12, 8, generator=g) for i in range(3)}
    a["lora_B.weight"] = torch.zeros(12, 4)
    a["pruned.weight"] = torch.randn(8, 8, generator=g)
    b = {k: v + 0.3 * (i + 1) * torch.randn(v.shape, generator=g) for i, (k, v) in enumerate(a.items())}
    b["lora_B.weight"] = 0.02 * torch.randn(12, 4, generator=g)
    b["pruned.weight"] = torch.zeros(8, 8)
    b["w1.weight"] = 0.5 * a["w1.weight"]  # halved: a big change of norm, cosine 1
    b["w2.weight"] = 1.01 * a["w2.weight"]  # grew 1 %
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors", a, b


def test_rank_by_cosine_puts_a_layer_with_one_all_zero_side_first(cli, zeroed):
    m1, m2, a, b = zeroed
    proc = cli("compare", "--model1", m1, "--model2", m2, "--rank-by", "cosine_similarity", "-q", check_rc=0)
    cos = {}
    for k in a:
        x, y = a[k].double().numpy().ravel(), b[k].double().numpy().ravel()
        nx, ny = np.linalg.norm(x), np.linalg.norm(y)
        cos[k.removesuffix(".weight")] = float(x @ y / (nx * ny)) if nx and ny else float("nan")
    undefined = [k for k in cos if np.isnan(cos[k])]
    assert undefined == ["lora_B", "pruned"]  # exactly one side all zeros: no direction, changed the most
    defined = sorted((k for k in cos if k not in undefined), key=cos.get)
    assert _table_layers(proc.stdout) == [*undefined, *defined]
    rows = _rows(proc.stdout)
    assert rows["lora_B"][0] == "-inf" and rows["lora_B"][2] == "nan"  # score, then the cosine itself


def test_rank_by_l2_norm_ratio_ranks_shrinking_like_growing(cli, zeroed):
    m1, m2, a, b = zeroed
    proc = cli("compare", "--model1", m1, "--model2", m2, "--rank-by", "l2_norm_ratio", "-q", check_rc=0)
    ratio = {}
    for k in a:
        na, nb = np.linalg.norm(a[k].double().numpy()), np.linalg.norm(b[k].double().numpy())
        ratio[k.removesuffix(".weight")] = nb / na if na else np.inf
    assert ratio["pruned"] == 0 and ratio["lora_B"] == np.inf
    change = {k: abs(np.log(r)) if 0 < r < np.inf else np.inf for k, r in ratio.items()}
    assert _table_layers(proc.stdout) == sorted(change, key=lambda k: (-change[k], list(a).index(f"{k}.weight")))
    assert _table_layers(proc.stdout).index("w1") < _table_layers(proc.stdout).index("w2")  # x0.5 above x1.01
    assert "score = |ln l2_norm_ratio|" in proc.stdout
    rows = _rows(proc.stdout)
    assert float(rows["w1"][3]) == pytest.approx(ratio["w1"], rel=1e-3)  # the norm ratio column stays the ratio
    assert float(rows["w1"][0]) == pytest.approx(np.log(2), rel=1e-3)


def test_a_dtype_change_alone_is_not_counted_as_a_change(cli, tmp_path):
    g = torch.Generator().manual_seed(8)
    a = {f"h.{i}.fc.weight": torch.randn(8, 8, generator=g).half() for i in range(3)}
    b = {k: v.float() for k, v in a.items()}
    b["h.2.fc.weight"] = b["h.2.fc.weight"] * 2
    assert sum(np.array_equal(a[k].double().numpy(), b[k].double().numpy()) for k in a) == 2
    save_file(a, str(tmp_path / "a.safetensors"))
    save_file(b, str(tmp_path / "b.safetensors"))
    out = tmp_path / "c.json"
    proc = cli("compare", "--model1", tmp_path / "a.safetensors", "--model2", tmp_path / "b.safetensors",
               "-o", out, "-q", check_rc=0)
    assert "3 layers compared: 2 identical, 1 changed" in proc.stdout
    assert "3 stored in another dtype: float16 -> float32" in proc.stdout
    data = strict_load(out)
    assert (data["summary"]["identical_layers"], data["summary"]["changed_layers"]) == (2, 1)
    assert data["summary"]["dtype_changed_layers"] == 3
    assert not any(m["identical"] for m in data["layer_comparisons"].values())  # bitwise, as documented


def test_scan_files_without_basic_stats_show_shape_mismatches(cli, tmp_path):
    g = torch.Generator().manual_seed(9)
    emb = torch.randn(20, 6, generator=g)
    save_file({"wte.weight": emb, "fc.weight": torch.randn(6, 6, generator=g)}, str(tmp_path / "a.safetensors"))
    save_file({"wte.weight": torch.cat([emb, emb[:4]]), "fc.weight": torch.randn(6, 6, generator=g)},
              str(tmp_path / "b.safetensors"))
    for name in ("a", "b"):
        cli("scan", "-m", tmp_path / f"{name}.safetensors", "--methods", "spectral",
            "-o", tmp_path / f"{name}.json", "-q", check_rc=0)
    out = tmp_path / "c.json"
    proc = cli("compare", "--model1", tmp_path / "a.json", "--model2", tmp_path / "b.json", "-o", out, "-q",
               check_rc=0)
    assert "Shape mismatches" in proc.stdout
    assert _rows(proc.stdout.split("Shape mismatches")[1])["wte"][:2] == ["20x6", "24x6"]
    data = strict_load(out)
    assert list(data["shape_mismatches"]) == ["wte"] and list(data["layer_comparisons"]) == ["fc"]
