"""The feature notes' example code (the public contract) on checkpoints with zero-initialised and NaN layers.

The two snippets below are copied verbatim from the feature notes (section 3,
"完整工作流", and section 4, scenario 3). They format every ranking score
with ``:.4f`` and compare every ``l2_norm_ratio`` with ``<``, so a single
None crashes them. Expected values come from numpy float64.
"""

import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from weightscope import Scope
from weightscope.comparison.update_spectrum import UPDATE_KEYS
from weightscope.core.comparator import compare_sources, find_most_changed_layers

WORKFLOW = '''
from weightscope import Scope
from weightscope.core.comparator import find_most_changed_layers
import json

# 1. 分析基础模型
print("Analyzing base model...")
base_scope = Scope("llama2-7b")
base_results = base_scope.scan(methods=["all"], parallel=True, num_workers=8)

# 保存基础分析
with open("base_analysis.json", 'w') as f:
    json.dump(base_results, f, indent=2)

# 2. 分析微调模型
print("Analyzing fine-tuned model...")
finetuned_scope = Scope("llama2-7b-chat")
finetuned_results = finetuned_scope.scan(methods=["all"], parallel=True, num_workers=8)

# 3. 比较两个模型
print("Comparing models...")
comparison = base_scope.compare_with(finetuned_results, methods=["basic_stats", "spectral"])

# 4. 找出变化最大的层
most_changed = find_most_changed_layers(comparison, top_k=10)

print("\\nTop 10 most changed layers:")
for i, (layer, score, metrics) in enumerate(most_changed, 1):
    print(f"{i}. {layer}: change_score={score:.4f}")
    
# 5. 识别量化敏感层
print("\\nQuantization-sensitive layers in fine-tuned model:")
for layer, stats in finetuned_results.items():
    if "quantization" in stats:
        outliers = stats["quantization"]["extreme_outlier_percentage"]
        if outliers > 1.0:
            print(f"  - {layer}: {outliers:.2f}% outliers")
'''

SCENARIO_3 = '''
base_scope = Scope("pretrained_model")
finetuned_scope = Scope("finetuned_model")

comparison = base_scope.compare_with("finetuned_model")

# 识别"冻结"层（几乎没变化）
frozen_layers = []
adapted_layers = []

for layer, metrics in comparison["layer_comparisons"].items():
    l2_ratio = metrics["l2_norm_ratio"]
    
    if 0.99 < l2_ratio < 1.01:
        frozen_layers.append(layer)
    elif l2_ratio > 1.1 or l2_ratio < 0.9:
        adapted_layers.append(layer)

print(f"Frozen layers: {len(frozen_layers)}")
print(f"Heavily adapted layers: {len(adapted_layers)}")
'''

LORA_B = "model.layers.0.self_attn.q_proj.lora_B"  # zero-initialised, then trained
ADALN = "model.layers.1.adaLN_modulation"  # zero-initialised, still zero
NAN = "model.layers.1.mlp.down_proj"  # one NaN in the fine-tune
SCALED = "model.layers.1.self_attn.q_proj"


def _checkpoints():
    g = torch.Generator().manual_seed(42)
    base = {f"model.layers.{i}.{kind}.weight": torch.randn(32, 24, generator=g) * 0.05
            for i in range(2) for kind in ("self_attn.q_proj", "mlp.down_proj")}
    base[f"{LORA_B}.weight"] = torch.zeros(32, 4)
    base[f"{ADALN}.weight"] = torch.zeros(48, 32)
    tuned = {k: v + 1e-4 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    tuned[f"{LORA_B}.weight"] = 0.01 * torch.randn(32, 4, generator=g)
    tuned[f"{ADALN}.weight"] = torch.zeros(48, 32)
    tuned[f"{SCALED}.weight"] = base[f"{SCALED}.weight"] * 1.5
    tuned[f"{NAN}.weight"][7, 3] = float("nan")
    return base, tuned


@pytest.fixture
def models(tmp_path, monkeypatch):
    """The notes' model names as local HF-style folders, in the working directory the snippets run in."""
    base, tuned = _checkpoints()
    for name, tensors in (("llama2-7b", base), ("llama2-7b-chat", tuned),
                          ("pretrained_model", base), ("finetuned_model", tuned)):
        (tmp_path / name).mkdir()
        save_file(tensors, tmp_path / name / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return base, tuned


def _ref(a: torch.Tensor, b: torch.Tensor) -> dict:
    """numpy float64 reference with the documented conventions for zero norms and non-finite weights."""
    x, y = a.double().numpy().ravel(), b.double().numpy().ravel()
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return {"relative_l2_distance": math.nan, "l2_norm_ratio": math.nan, "l2_distance": math.nan}
    na, nb, dist = np.linalg.norm(x), np.linalg.norm(y), np.linalg.norm(y - x)
    return {
        "l2_distance": dist,
        "relative_l2_distance": dist / na if na > 0 else (0.0 if dist == 0 else math.inf),
        "l2_norm_ratio": nb / na if na > 0 else (1.0 if nb == 0 else math.inf),
    }


def _same(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_feature_notes_workflow_runs_verbatim(models, capsys):
    base, tuned = models
    namespace: dict = {}
    exec(compile(WORKFLOW, "feature-notes section 3", "exec"), namespace)
    comparison = namespace["comparison"]
    assert comparison["mode"] == "tensors"
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ": change_score=" in ln]
    ranked = [ln.split(". ", 1)[1].split(": ")[0] for ln in lines]
    refs = {layer: _ref(base[f"{layer}.weight"], tuned[f"{layer}.weight"])["relative_l2_distance"]
            for layer in comparison["layer_comparisons"]}
    # Largest first, inf (grown from zero) on top, NaN (undefined) last.
    expected = sorted(refs, key=lambda k: (math.isnan(refs[k]), -refs[k] if not math.isnan(refs[k]) else 0))
    assert ranked == expected and ranked[0] == LORA_B and ranked[-1] == NAN
    assert lines[0].endswith("change_score=inf") and lines[-1].endswith("change_score=nan")
    for line, layer in zip(lines, ranked):
        if math.isfinite(refs[layer]):
            assert line.endswith(f"change_score={refs[layer]:.4f}")


def test_feature_notes_scenario_3_runs_verbatim(models, capsys):
    base, tuned = models
    namespace: dict = {"Scope": Scope}
    exec(compile(SCENARIO_3, "feature-notes section 4 scenario 3", "exec"), namespace)
    ratios = {layer: _ref(base[f"{layer}.weight"], tuned[f"{layer}.weight"])["l2_norm_ratio"]
              for layer in namespace["comparison"]["layer_comparisons"]}
    frozen = [k for k, r in ratios.items() if 0.99 < r < 1.01]
    adapted = [k for k, r in ratios.items() if not 0.99 < r < 1.01 and (r > 1.1 or r < 0.9)]
    assert namespace["frozen_layers"] == frozen and ADALN in frozen  # 0 -> 0: ratio 1.0
    assert namespace["adapted_layers"] == adapted and set(adapted) == {LORA_B, SCALED}  # inf and 1.5
    assert NAN not in frozen + adapted
    out = capsys.readouterr().out
    assert f"Frozen layers: {len(frozen)}" in out and f"Heavily adapted layers: {len(adapted)}" in out


def test_zero_init_and_nan_layers_end_to_end_with_spectral(counting_source, caplog):
    base, tuned = _checkpoints()
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        c = compare_sources(counting_source(base), counting_source(tuned), methods=["basic_stats", "spectral"])
    assert not [r for r in caplog.records if "failed" in r.getMessage()]  # no eigh failure on the NaN layer
    lc = c["layer_comparisons"]
    assert c["summary"]["errors"] == 0 and not any("error" in m for m in lc.values())
    for layer, m in lc.items():
        a, b = base[f"{layer}.weight"], tuned[f"{layer}.weight"]
        for key, want in _ref(a, b).items():
            assert isinstance(m[key], float) and _same(m[key], want), (layer, key, m[key], want)
        assert m["shape"] == list(a.shape) and m["tensors_compared"] is True

    lora = lc[LORA_B]
    assert lora["relative_l2_distance"] == lora["l2_norm_ratio"] == lora["norm_change"] == math.inf
    dw = tuned[f"{LORA_B}.weight"].double().numpy()
    sv = np.linalg.svd(dw, compute_uv=False)
    energy = np.cumsum(sv**2) / np.sum(sv**2)
    assert lora["update_rank_90"] == int(np.searchsorted(energy, 0.9 * (1 - 1e-12)) + 1)
    assert lora["update_stable_rank"] == pytest.approx(np.sum(sv**2) / sv[0] ** 2, rel=1e-9)

    zero = lc[ADALN]
    assert (zero["relative_l2_distance"], zero["l2_norm_ratio"], zero["cosine_similarity"]) == (0.0, 1.0, 1.0)
    assert zero["update_rank_90"] == 0 and zero["norm_change"] == 0.0

    bad = lc[NAN]  # the diff is kept (shape, dtypes, norms); the ΔW spectrum is skipped, NaN
    assert bad["dtype1"] == bad["dtype2"] == "float32" and bad["identical"] is False
    assert bad["model1_l2_norm"] == pytest.approx(np.linalg.norm(base[f"{NAN}.weight"].double().numpy()), rel=1e-9)
    assert all(math.isnan(bad[k]) for k in (*UPDATE_KEYS, "cosine_similarity", "max_abs_diff", "mean_diff"))

    by_module = c["summary"]["by_module"]
    assert by_module["self_attn.q_proj.lora_B"]["relative_l2_distance"] == math.inf
    assert by_module["self_attn.q_proj.lora_B"]["max_score"] == math.inf
    assert (by_module["adaLN_modulation"]["relative_l2_distance"], by_module["adaLN_modulation"]["cosine_similarity"]) \
        == (0.0, 1.0)
    assert math.isnan(by_module["mlp.down_proj"]["relative_l2_distance"])
    q = [k for k in lc if k.endswith("self_attn.q_proj")]
    x = np.concatenate([base[f"{k}.weight"].double().numpy().ravel() for k in q])
    y = np.concatenate([tuned[f"{k}.weight"].double().numpy().ravel() for k in q])
    assert by_module["self_attn.q_proj"]["relative_l2_distance"] == pytest.approx(
        np.linalg.norm(y - x) / np.linalg.norm(x), rel=1e-9)
    assert by_module["self_attn.q_proj"]["cosine_similarity"] == pytest.approx(
        x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), rel=1e-9)
    assert math.isnan(c["summary"]["global_relative_l2_distance"])  # the model holds a NaN layer


def test_a_failing_update_spectrum_keeps_the_layers_diff(counting_source, monkeypatch, caplog, gen):
    import weightscope.core.comparator as comparator

    a = {"w.weight": torch.randn(16, 12, generator=gen)}
    b = {"w.weight": a["w.weight"] + 0.1 * torch.randn(16, 12, generator=gen)}

    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(comparator, "update_spectrum", broken)
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        c = compare_sources(counting_source(a), counting_source(b), methods=["basic_stats", "spectral"])
    m = c["layer_comparisons"]["w"]
    assert "error" not in m and c["summary"]["errors"] == 0
    ref = _ref(a["w.weight"], b["w.weight"])
    assert all(_same(m[k], v) for k, v in ref.items())
    assert all(math.isnan(m[k]) for k in UPDATE_KEYS)
    assert any("update spectrum of w failed" in r.getMessage() for r in caplog.records)


def test_scenario_3_loop_on_a_comparison_from_saved_stats(models):
    from weightscope.core.results import ScanResults

    base, tuned = models
    Scope("finetuned_model").scan(methods=["basic_stats"]).save("finetuned.json")
    comparison = Scope("pretrained_model").compare_with(ScanResults.load("finetuned.json"))
    assert comparison["mode"] == "stats"
    frozen, adapted = [], []
    for layer, metrics in comparison["layer_comparisons"].items():
        l2_ratio = metrics["l2_norm_ratio"]
        if 0.99 < l2_ratio < 1.01:
            frozen.append(layer)
        elif l2_ratio > 1.1 or l2_ratio < 0.9:
            adapted.append(layer)
    assert sorted(comparison["layer_comparisons"]) == sorted(k.removesuffix(".weight") for k in base)
    # From stats, the ratio is that of the two saved norms: numpy float64, with the documented 0/0 and x/0.
    # (The NaN layer is left out: its saved l2_norm is over the finite weights, unlike a tensor comparison.)
    ratios = {layer: _ref(base[f"{layer}.weight"], tuned[f"{layer}.weight"])["l2_norm_ratio"]
              for layer in comparison["layer_comparisons"] if layer != NAN}
    for layer, want in ratios.items():
        assert _same(comparison["layer_comparisons"][layer]["l2_norm_ratio"], want), layer
    assert [k for k in frozen if k != NAN] == [k for k, r in ratios.items() if 0.99 < r < 1.01]
    assert ADALN in frozen and set(adapted) == {LORA_B, SCALED}  # 0 -> 0: ratio 1.0; inf and 1.5


def test_stats_mode_says_which_methods_the_saved_scans_lack(tmp_path, caplog):
    import logging

    import weightscope

    g = torch.Generator().manual_seed(0)
    a = {"fc.weight": torch.randn(8, 6, generator=g).bfloat16()}
    b = {"fc.weight": (1.1 * a["fc.weight"].float()).bfloat16()}
    sa = weightscope.scan(a, methods="spectral", parallel=False).save(tmp_path / "a.json")
    sb = weightscope.scan(b, methods="spectral", parallel=False).save(tmp_path / "b.json")
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        c = weightscope.compare(str(sa), str(sb), methods=["spectral", "esd"], parallel=False)
    said = [r.getMessage() for r in caplog.records if "saved stats without" in r.getMessage()]
    assert len(said) == 2 and all("without esd:" in m for m in said)
    entry = c["layer_comparisons"]["fc"]
    assert entry["alpha_diff"] is None and entry["dtype1"] == entry["dtype2"] == "bfloat16"
    assert entry["max_singular_value_ratio"] == pytest.approx(1.1, rel=1e-2)
