"""Saved scan results as either side: what stats allow, nulls (not zeros) for the rest, no rescans."""

import json

import pytest
import torch

from weightscope.comparison import DIFF_KEYS
from weightscope.core.comparator import compare_sources, find_most_changed_layers
from weightscope.core.engine import scan_source
from weightscope.core.results import ScanResults

TENSOR_ONLY = ("l2_distance", "relative_l2_distance", "cosine_similarity", "max_abs_diff",
               "significant_change_percentage", "identical")


def _stats(mean, std, l2, shape=(4, 4), cond=None):
    out = {"basic_stats": {"mean": mean, "std": std, "l2_norm": l2, "shape": list(shape), "dtype": "float32"}}
    if cond is not None:
        out["spectral"] = {"condition_number": cond, "stable_rank": 2.0, "max_singular_value": 3.0}
    return out


def test_results_vs_results_gives_stats_metrics_and_nulls():
    r1 = {"a": _stats(0.0, 1.0, 10.0, cond=5.0), "b": _stats(0.1, 1.0, 4.0, cond=5.0),
          "v": _stats(0.0, 1.0, 1.0, shape=(4,)), "only1": _stats(0, 1, 1)}
    r2 = {"a": _stats(0.5, 2.0, 25.0, cond=20.0), "b": _stats(0.1, 1.0, 4.4, cond=5.0),
          "v": _stats(9, 9, 9, shape=(4,))}
    c = compare_sources(r1, r2)
    assert c["mode"] == "stats" and c["methods"] == ["basic_stats", "spectral"]  # what both results have
    a = c["layer_comparisons"]["a"]
    assert a["mean_diff"] == 0.5 and a["std_diff"] == 1.0 and a["l2_norm_ratio"] == 2.5
    assert a["condition_number_ratio"] == 4.0 and a["stable_rank_diff"] == 0.0
    for key in TENSOR_ONLY:
        assert a[key] is None, key  # unknowable without tensors: null, never 0
    assert a["update_rank_90"] is None and a["tensors_compared"] is False
    assert "v" not in c["layer_comparisons"]  # vectors only with include_vectors, as for tensors
    assert c["only_in_model1"] == ["only1"]
    s = c["summary"]
    assert s["identical_layers"] is None and s["changed_layers"] is None and s["global_l2_distance"] is None
    assert s["score_metric"] == "norm_change"
    # Fallback score |l2_norm_ratio - 1|: a (1.5) before b (0.1).
    ranked = find_most_changed_layers(c)
    assert [(layer, round(score, 12)) for layer, score, _ in ranked] == [("a", 1.5), ("b", 0.1)]
    text = json.dumps(c, allow_nan=False)
    assert json.loads(text)["layer_comparisons"]["a"]["l2_distance"] is None


def test_missing_stats_are_null_not_zero():
    r1 = {"a": {"basic_stats": {"mean": 1.0, "shape": [2, 2]}}}
    r2 = {"a": {"basic_stats": {"mean": 1.5, "shape": [2, 2], "l2_norm": 3.0}}}
    a = compare_sources(r1, r2)["layer_comparisons"]["a"]
    assert a["mean_diff"] == 0.5
    assert a["std_diff"] is None and a["l2_norm_ratio"] is None and a["norm_change"] is None


def test_shape_mismatch_from_results():
    c = compare_sources({"emb": _stats(0, 1, 10, shape=(50, 8))}, {"emb": _stats(0, 2, 30, shape=(60, 8))})
    mm = c["shape_mismatches"]["emb"]
    assert mm["std_diff"] == 1.0 and mm["wasserstein_distance"] is None and mm["tensors_compared"] is False


def test_tensors_vs_saved_scan_file_reads_each_tensor_once(tmp_path, counting_source, gen):
    a = {"x.weight": torch.randn(12, 6, generator=gen), "y.weight": torch.randn(6, 6, generator=gen),
         "x.bias": torch.randn(12, generator=gen)}
    b = {k: t * 2 for k, t in a.items()}
    saved = scan_source(counting_source(b), ["basic_stats"], include_vectors=True)
    path = saved.save(tmp_path / "b-scan.json")

    live = counting_source(a)
    for other in (path, str(path), saved, json.loads(path.read_text()), dict(saved)):
        live.loads.clear()
        c = compare_sources(live, other)
        assert sorted(live.loads) == ["x.weight", "y.weight"]  # one load each, no rescan of anything
        assert c["mode"] == "stats"
        x = c["layer_comparisons"]["x"]
        assert x["mean_diff"] == pytest.approx(float(a["x.weight"].double().mean()), rel=1e-9)
        for key in TENSOR_ONLY:
            assert x[key] is None, key
        assert c["only_in_model2"] == []  # the saved bias is a vector the live side leaves out
        assert c["model2_stats"]["x"] == saved["x"]
    # The other way round: saved results as model 1.
    live.loads.clear()
    back = compare_sources(path, live)
    assert sorted(live.loads) == ["x.weight", "y.weight"]
    assert back["only_in_model1"] == back["only_in_model2"] == []
    assert back["layer_comparisons"]["x"]["l2_norm_ratio"] == pytest.approx(0.5, rel=1e-9)


def test_results_on_both_sides_load_nothing(counting_source, gen):
    src = counting_source({"w": torch.randn(5, 5, generator=gen)})
    r = scan_source(src, ["basic_stats"])
    src.loads.clear()
    c = compare_sources(r, ScanResults(dict(r), source="copy"))
    assert src.loads == []
    assert c["layer_comparisons"]["w"]["mean_diff"] == 0.0
    assert set(DIFF_KEYS) <= set(c["layer_comparisons"]["w"])


def test_a_bad_scan_file_is_a_user_error(tmp_path):
    from weightscope.errors import WeightScopeError

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WeightScopeError, match="not valid JSON"):
        compare_sources(bad, bad)


def test_stats_mode_agrees_with_tensor_mode(counting_source, gen):
    a = {f"l{i}.weight": torch.randn(20, 12, generator=gen) * (i + 1) for i in range(3)}
    b = {k: t * 1.2 + 0.05 * torch.randn(t.shape, generator=gen) for k, t in a.items()}
    methods = ["basic_stats", "spectral"]
    live = compare_sources(counting_source(a), counting_source(b), methods=methods)
    saved = compare_sources(scan_source(counting_source(a), methods), scan_source(counting_source(b), methods))
    assert saved["methods"] == methods
    assert list(live["layer_comparisons"]) == list(saved["layer_comparisons"]) == ["l0", "l1", "l2"]
    for layer, m in live["layer_comparisons"].items():
        s = saved["layer_comparisons"][layer]
        for key in ("mean_diff", "std_diff", "l2_norm_ratio", "norm_change", "condition_number_ratio",
                    "stable_rank_diff", "max_singular_value_ratio", "model1_l2_norm", "model2_l2_norm"):
            assert s[key] == pytest.approx(m[key], rel=1e-9, abs=1e-12), (layer, key)
    # Saved scans keep their per-side stats, identical to a live run's.
    assert saved["model1_stats"] == live["model1_stats"]


def test_a_state_dict_is_not_mistaken_for_results(gen):
    nested = {"model": {"w": torch.ones(3, 3)}}
    c = compare_sources(nested, {"state_dict": {"w": 2 * torch.ones(3, 3)}, "epoch": 1})
    assert c["mode"] == "tensors" and c["layer_comparisons"]["w"]["l2_norm_ratio"] == 2.0


@pytest.fixture
def resized(tmp_path, gen):
    """A vocab resize and a plain change, saved as safetensors and as scans without basic_stats."""
    from safetensors.torch import save_file

    from weightscope.core.scope import scan

    emb = torch.randn(10, 6, generator=gen)
    a = {"wte.weight": emb, "fc.weight": torch.randn(6, 6, generator=gen)}
    b = {"wte.weight": torch.cat([emb, torch.randn(3, 6, generator=gen)]), "fc.weight": a["fc.weight"] * 1.1}
    for name, sd in (("a", a), ("b", b)):
        save_file(sd, tmp_path / f"{name}.safetensors")
        results = scan(tmp_path / f"{name}.safetensors", methods="spectral", parallel=False)
        results.save(tmp_path / f"{name}-spectral.json")
    return tmp_path, a, b


def test_scans_without_basic_stats_still_see_a_shape_change(resized):
    root, a, b = resized
    saved = json.loads((root / "b-spectral.json").read_text())
    assert "basic_stats" not in saved["layers"]["wte"]
    assert saved["stored_shapes"] == {k.removesuffix(".weight"): list(v.shape) for k, v in b.items()}
    for m1, m2 in ((root / "a-spectral.json", root / "b-spectral.json"),  # both saved
                   (root / "a.safetensors", root / "b-spectral.json")):  # tensors against a saved scan
        c = compare_sources(m1, m2, methods=["spectral"])
        assert c["mode"] == "stats"
        assert list(c["shape_mismatches"]) == ["wte"] and list(c["layer_comparisons"]) == ["fc"]
        mm = c["shape_mismatches"]["wte"]
        assert (mm["shape1"], mm["shape2"]) == (list(a["wte.weight"].shape), list(b["wte.weight"].shape))
        assert c["layer_comparisons"]["fc"]["shape"] == [6, 6]
        assert c["summary"]["shape_mismatches"] == 1


def test_a_scan_file_from_before_stored_shapes_still_compares(resized):
    root, _, _ = resized
    old = json.loads((root / "b-spectral.json").read_text())
    del old["stored_shapes"]
    (root / "b-old.json").write_text(json.dumps(old))
    c = compare_sources(root / "a-spectral.json", root / "b-old.json", methods=["spectral"])
    assert c["mode"] == "stats" and set(c["layer_comparisons"]) == {"wte", "fc"}  # shape of b unknown
    assert ScanResults.load(root / "b-old.json").stored_shapes == {}


def test_a_layer_with_nan_weights_is_nan_from_saved_stats_as_from_tensors(counting_source, gen):
    import math

    import numpy as np

    a = {"ok.weight": torch.randn(20, 12, generator=gen), "bad.weight": torch.randn(20, 12, generator=gen)}
    b = {k: t + 1e-4 * torch.randn(t.shape, generator=gen) for k, t in a.items()}
    b["bad.weight"][3, 4] = float("nan")
    methods = ["basic_stats"]
    live = compare_sources(counting_source(a), counting_source(b), methods=methods)
    saved = compare_sources(scan_source(counting_source(a), methods), scan_source(counting_source(b), methods))
    for c in (live, saved):
        bad = c["layer_comparisons"]["bad"]
        # The finite weights alone would say "unchanged" (ratio ~1): a layer that broke is not frozen.
        assert all(math.isnan(bad[k]) for k in ("mean_diff", "std_diff", "l2_norm_ratio")), bad
        ok = c["layer_comparisons"]["ok"]
        x, y = (t["ok.weight"].double().numpy() for t in (a, b))
        assert ok["l2_norm_ratio"] == pytest.approx(np.linalg.norm(y) / np.linalg.norm(x), rel=1e-9)
        assert [layer for layer, _, _ in find_most_changed_layers(c, top_k=None)][-1] == "bad"
