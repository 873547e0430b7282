"""The Python API's entry points with awkward inputs: one clear WeightScope error, or the right layers.

``weightscope.scan`` / ``Scope(...)`` / ``Scope.scan`` / ``weightscope.compare`` / ``Scope.compare_with``:
wrong-typed arguments, closed scopes, meta-device modules, run folders, nested state dicts, and
``layers=``/``exclude=`` across a wrapper prefix (a Lightning ``.ckpt`` against its HF folder).
Expected values come from numpy float64.
"""

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import weightscope
from weightscope import ConfigError, DeviceError, Scope, SourceError, WeightScopeError

GEN_SEED = 0
BLOCKS = ("h.0.attn.c_attn", "h.0.mlp.c_fc", "h.1.attn.c_attn", "h.1.mlp.c_fc")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy().ravel()


def _relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    x, y = _np(a), _np(b)
    return float(np.linalg.norm(y - x) / np.linalg.norm(x))


def _one_line_error(info: pytest.ExceptionInfo, kind: type) -> str:
    assert type(info.value) is kind or isinstance(info.value, kind)
    message = str(info.value)
    assert "\n" not in message and message
    return message


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(GEN_SEED)


# -- layers= / exclude= across wrapper prefixes ---------------------------------------------------


@pytest.fixture
def ckpt_and_folder(tmp_path, gen):
    """A Lightning-style ``.ckpt`` (``model.`` prefix) and the HF folder it was exported to, slightly changed."""
    hf = {f"transformer.{b}.weight": torch.randn(8, 6, generator=gen) for b in BLOCKS}
    hf["transformer.wte.weight"] = torch.randn(10, 8, generator=gen)
    hf["lm_head.weight"] = torch.randn(10, 8, generator=gen)  # untied here: a real layer on both sides
    lightning = {f"model.{k}": t + 0.01 * torch.randn(t.shape, generator=gen) for k, t in hf.items()}
    ckpt = tmp_path / "epoch=0-step=100.ckpt"
    torch.save({"state_dict": lightning, "epoch": 0, "global_step": 100}, ckpt)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(hf, folder / "model.safetensors")
    return ckpt, folder, lightning, hf


def test_layers_filter_selects_the_same_layers_on_both_sides(ckpt_and_folder):
    ckpt, folder, lightning, hf = ckpt_and_folder
    c = weightscope.compare(ckpt, folder, layers=r"^transformer\.h\.0")
    assert c["mode"] == "tensors"
    assert sorted(c["layer_comparisons"]) == ["model.transformer.h.0.attn.c_attn", "model.transformer.h.0.mlp.c_fc"]
    assert c["only_in_model1"] == [] and c["only_in_model2"] == []
    assert c["summary"]["compared_layers"] == 2
    for layer, entry in c["layer_comparisons"].items():
        name2 = c["name_mapping"][layer]
        assert name2 == layer.removeprefix("model.")
        expected = _relative_l2(lightning[f"{layer}.weight"], hf[f"{name2}.weight"])
        assert entry["relative_l2_distance"] == pytest.approx(expected, rel=1e-9)
    assert sorted(c["model1_stats"]) == sorted(c["layer_comparisons"])
    assert sorted(c["model2_stats"]) == sorted(c["name_mapping"].values())


def test_exclude_filter_leaves_nothing_only_in_either_side(ckpt_and_folder):
    ckpt, folder, lightning, hf = ckpt_and_folder
    for a, b in ((ckpt, folder), (folder, ckpt)):
        c = weightscope.compare(a, b, exclude=r"^transformer\.h")
        assert c["only_in_model1"] == [] and c["only_in_model2"] == []
        compared = {k.removeprefix("model.") for k in c["layer_comparisons"]}
        assert compared == {"transformer.wte", "lm_head"}
    unfiltered = weightscope.compare(ckpt, folder)
    assert unfiltered["summary"]["compared_layers"] == 6
    assert unfiltered["only_in_model1"] == [] and unfiltered["only_in_model2"] == []


def test_a_pattern_on_one_sides_wrapper_selects_the_pair(ckpt_and_folder):
    """``^model\\.`` names only the .ckpt's spelling; the pair is selected on both sides all the same."""
    ckpt, folder, lightning, hf = ckpt_and_folder
    c = weightscope.compare(ckpt, folder, layers=r"^model\.transformer\.h\.1\.mlp")
    assert list(c["layer_comparisons"]) == ["model.transformer.h.1.mlp.c_fc"]
    assert c["only_in_model1"] == [] and c["only_in_model2"] == []
    entry = c["layer_comparisons"]["model.transformer.h.1.mlp.c_fc"]
    expected = _relative_l2(lightning["model.transformer.h.1.mlp.c_fc.weight"], hf["transformer.h.1.mlp.c_fc.weight"])
    assert entry["relative_l2_distance"] == pytest.approx(expected, rel=1e-9)


def test_filters_apply_alike_to_saved_results(ckpt_and_folder, tmp_path):
    ckpt, folder, lightning, hf = ckpt_and_folder
    saved = tmp_path / "ckpt_scan.json"
    weightscope.scan(ckpt, methods="basic_stats").save(saved)
    c = weightscope.compare(saved, folder, layers=r"^transformer\.h\.0", methods="basic_stats")
    assert c["mode"] == "stats"
    assert sorted(c["layer_comparisons"]) == ["model.transformer.h.0.attn.c_attn", "model.transformer.h.0.mlp.c_fc"]
    assert c["only_in_model1"] == [] and c["only_in_model2"] == []
    for layer, entry in c["layer_comparisons"].items():
        a, b = lightning[f"{layer}.weight"], hf[f"{c['name_mapping'][layer]}.weight"]
        assert entry["l2_norm_ratio"] == pytest.approx(np.linalg.norm(_np(b)) / np.linalg.norm(_np(a)), rel=1e-9)


# -- a nested state dict is tensors, not saved results -------------------------------------------


def test_nested_state_dict_compares_its_tensors(gen):
    a = {"encoder": {"fc": {"weight": torch.randn(6, 4, generator=gen)}},
         "decoder": {"fc": {"weight": torch.randn(4, 6, generator=gen)}}}
    b = {part: {"fc": {"weight": a[part]["fc"]["weight"] * 1.5}} for part in a}
    scanned = weightscope.scan(a, methods="basic_stats")
    assert sorted(scanned) == ["decoder.fc", "encoder.fc"]
    c = weightscope.compare(a, b)
    assert c["mode"] == "tensors"
    assert sorted(c["layer_comparisons"]) == ["decoder.fc", "encoder.fc"]
    for part in a:
        entry = c["layer_comparisons"][f"{part}.fc"]
        x, y = _np(a[part]["fc"]["weight"]), _np(b[part]["fc"]["weight"])
        assert entry["l2_norm_ratio"] == pytest.approx(np.linalg.norm(y) / np.linalg.norm(x), rel=1e-9)
        assert entry["l2_distance"] == pytest.approx(np.linalg.norm(y - x), rel=1e-9)
        assert c["model1_stats"][f"{part}.fc"]["basic_stats"]["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-12)
    same = weightscope.compare(a, a)
    assert same["summary"]["identical_layers"] == 2


def test_saved_results_as_dicts_still_compare_from_stats(gen):
    sd = {"fc.weight": torch.randn(5, 5, generator=gen)}
    later = {"fc.weight": sd["fc.weight"] * 1.5 + 0.25}
    r, r2 = weightscope.scan(sd, methods="basic_stats"), weightscope.scan(later, methods="basic_stats")
    x, y = _np(sd["fc.weight"]), _np(later["fc.weight"])
    for obj, obj2 in ((dict(r), dict(r2)), (r.to_json_dict(), r2.to_json_dict())):
        c = weightscope.compare(obj, obj2)
        assert c["mode"] == "stats"
        entry = c["layer_comparisons"]["fc"]
        assert entry["l2_norm_ratio"] == pytest.approx(np.linalg.norm(y) / np.linalg.norm(x), rel=1e-9)
        assert entry["mean_diff"] == pytest.approx(y.mean() - x.mean(), rel=1e-9)
        assert entry["std_diff"] == pytest.approx(y.std() - x.std(), rel=1e-9)
        assert entry["l2_distance"] is None  # not knowable from stats
        assert weightscope.compare(obj, obj)["layer_comparisons"]["fc"]["l2_norm_ratio"] == 1.0


# -- a run folder given to scan ------------------------------------------------------------------


def test_run_folder_error_names_the_python_api(tmp_path, gen):
    run = tmp_path / "run"
    for step in (100, 200):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        save_file({"w.weight": torch.randn(3, 3, generator=gen)}, run / f"checkpoint-{step}" / "model.safetensors")
    with pytest.raises(SourceError) as info:
        weightscope.scan(run)
    message = _one_line_error(info, SourceError)
    assert "checkpoint-100, checkpoint-200" in message and "training run" in message
    assert f"weightscope.scan_run({str(run)!r})" in message and f"CLI: weightscope scan --model {run}" in message

    flat = tmp_path / "flat"
    flat.mkdir()
    for step in (1, 2, 3):
        save_file({"w.weight": torch.randn(3, 3, generator=gen)}, flat / f"step_{step}.safetensors")
    with pytest.raises(SourceError) as info:
        Scope(flat)
    message = _one_line_error(info, SourceError)
    assert "holds 3 separate checkpoints" in message
    assert f"weightscope.scan_run({str(flat)!r})" in message and "CLI: weightscope scan --model" in message
    assert "scan the folder as a training run" not in message


# -- compare_with's device -----------------------------------------------------------------------


def test_compare_with_takes_an_explicit_device(gen):
    a = {"fc.weight": torch.randn(4, 4, generator=gen)}
    b = {"fc.weight": a["fc.weight"] * 2}
    scope = Scope(a, device="cpu")
    c = scope.compare_with(b, device="cpu")
    assert c["layer_comparisons"]["fc"]["l2_norm_ratio"] == pytest.approx(2.0, rel=1e-12)
    with pytest.raises(DeviceError):  # the explicit device is the one used, not the Scope's
        scope.compare_with(b, device="cpu:1")


# -- wrong-typed arguments -----------------------------------------------------------------------

BAD_ENGINE_ARGS = [
    ({"methods": 123}, ConfigError, "methods must be"),
    ({"methods": ["basic_stats", 3]}, ConfigError, "methods must be"),
    ({"methods": "nope"}, WeightScopeError, "nope"),
    ({"layers": 123}, ConfigError, "layers must be a regular expression"),
    ({"layers": ["0"]}, ConfigError, "layers must be a regular expression"),
    ({"exclude": 1.5}, ConfigError, "exclude must be a regular expression"),
    ({"layers": "("}, ConfigError, "invalid layers regex"),
    ({"num_workers": "2"}, ConfigError, "num_workers must be an integer >= 1, got '2'"),
    ({"num_workers": 2.5}, ConfigError, "num_workers must be an integer >= 1, got 2.5"),
    ({"num_workers": True}, ConfigError, "num_workers must be an integer >= 1, got True"),
    ({"num_workers": 0}, ConfigError, "num_workers must be an integer >= 1, got 0"),
    ({"parallel": "yes"}, ConfigError, "parallel must be True or False, got 'yes'"),
    ({"include_vectors": 1}, ConfigError, "include_vectors must be True or False"),
    ({"device": "cpu:1"}, DeviceError, "device 'cpu:1' does not exist"),
    ({"device": "tpu"}, DeviceError, "unknown device 'tpu'"),
]


def _entry_points(sd):
    """(name, call) for every public entry point; call(**kwargs) runs it on ``sd``."""

    def scope_scan(**kw):
        device = kw.pop("device", "cpu")
        return Scope(sd, device=device).scan(**kw)

    def compare_with(**kw):
        return Scope(sd).compare_with(sd, **kw)

    return [
        ("weightscope.scan", lambda **kw: weightscope.scan(sd, **kw)),
        ("Scope.scan", scope_scan),
        ("weightscope.compare", lambda **kw: weightscope.compare(sd, sd, **kw)),
        ("Scope.compare_with", compare_with),
    ]


@pytest.mark.parametrize(("kwargs", "kind", "text"), BAD_ENGINE_ARGS, ids=lambda v: repr(v)[:40])
def test_wrong_arguments_raise_one_clear_error(kwargs, kind, text, gen):
    sd = {"fc.weight": torch.randn(4, 4, generator=gen)}
    for name, call in _entry_points(sd):
        with pytest.raises(kind) as info:
            call(**kwargs)
        assert isinstance(info.value, WeightScopeError), name
        assert text in _one_line_error(info, kind), name


@pytest.mark.parametrize("threshold", ["0.1", None, -0.5, float("nan"), True])
def test_bad_threshold(threshold, gen):
    sd = {"fc.weight": torch.randn(4, 4, generator=gen)}
    for call in (lambda: weightscope.compare(sd, sd, threshold=threshold),
                 lambda: Scope(sd).compare_with(sd, threshold=threshold)):
        with pytest.raises(ConfigError, match="threshold must be a number >= 0"):
            call()


def test_numeric_threshold_types_are_accepted(gen):
    a = torch.randn(6, 6, generator=gen)
    b = a + 0.2 * torch.randn(6, 6, generator=gen)
    x, y = _np(a), _np(b)
    expected = 100 * np.mean(np.abs(y - x) > 0.1 * np.abs(x))
    for threshold in (0.1, np.float64(0.1)):
        c = weightscope.compare({"w.weight": a}, {"w.weight": b}, threshold=threshold)
        assert c["layer_comparisons"]["w"]["significant_change_percentage"] == pytest.approx(expected)
    assert weightscope.compare({"w.weight": a}, {"w.weight": b}, threshold=0)["threshold"] == 0.0


def test_arguments_are_checked_before_anything_is_opened(tmp_path):
    missing = tmp_path / "nope.safetensors"  # opening it would be a SourceError
    with pytest.raises(ConfigError):
        weightscope.scan(missing, num_workers="2")
    with pytest.raises(ConfigError):
        weightscope.compare(missing, missing, layers=5)
    with pytest.raises(ConfigError):
        weightscope.compare(missing, missing, threshold="0.1")
    with pytest.raises(WeightScopeError, match="unknown_method"):
        weightscope.compare(missing, missing, methods="unknown_method")
    with pytest.raises(DeviceError):
        Scope(missing, device="cpu:1")
    with pytest.raises(ConfigError, match="revision must be"):
        Scope(missing, revision=3)


def test_valid_arguments_still_work(gen):
    sd = {"a.weight": torch.randn(6, 4, generator=gen), "b.weight": torch.randn(4, 4, generator=gen)}
    r = weightscope.scan(sd, methods=("basic_stats",), parallel=False, num_workers=1, layers=r"^a", device="cpu:0")
    assert list(r) == ["a"]
    assert r["a"]["basic_stats"]["std"] == pytest.approx(_np(sd["a.weight"]).std(), rel=1e-9)
    c = Scope(sd).compare_with(sd, methods=["basic_stats"], parallel=True, num_workers=2, exclude="^b")
    assert list(c["layer_comparisons"]) == ["a"]


# -- a closed Scope ------------------------------------------------------------------------------


def test_a_closed_scope_raises_once(gen, caplog, tmp_path):
    sd = {f"l{i}.weight": torch.randn(4, 4, generator=gen) for i in range(3)}
    path = tmp_path / "m.safetensors"
    save_file(sd, path)
    for source in (sd, path):
        scope = Scope(source)
        scope.scan(methods="basic_stats")
        scope.close()
        assert scope.closed
        with caplog.at_level(logging.WARNING, logger="weightscope"):
            caplog.clear()
            with pytest.raises(SourceError, match="this Scope is closed") as info:
                scope.scan()
            _one_line_error(info, SourceError)
            with pytest.raises(SourceError, match="this Scope is closed"):
                scope.compare_with(sd)
            with pytest.raises(SourceError, match="this Scope is closed"):
                weightscope.compare(sd, scope)
            with pytest.raises(SourceError, match="this Scope is closed"):
                Scope(sd).compare_with(scope)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with Scope(sd) as scope:
        assert not scope.closed
    assert scope.closed


# -- meta-device modules -------------------------------------------------------------------------


def test_a_meta_module_is_one_error():
    with torch.device("meta"):
        module = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    for call in (lambda: weightscope.scan(module), lambda: Scope(module),
                 lambda: weightscope.compare(module, module),
                 lambda: weightscope.scan({k: v for k, v in module.state_dict().items()})):
        with pytest.raises(SourceError, match="meta device") as info:
            call()
        assert "no data" in _one_line_error(info, SourceError)


def test_a_gpt2_built_on_meta_is_one_error():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel(cfg)
    with pytest.raises(SourceError, match=r"nn.Module\(GPT2LMHeadModel\): its weights are on the meta device"):
        weightscope.scan(model, methods="basic_stats")


def test_some_meta_tensors_only_fail_their_layers(gen):
    real = torch.randn(5, 3, generator=gen)
    sd = {"real.weight": real, "ghost.weight": torch.empty(4, 4, device="meta")}
    r = weightscope.scan(sd, methods="basic_stats")
    assert r["real"]["basic_stats"]["mean"] == pytest.approx(_np(real).mean(), rel=1e-9, abs=1e-12)
    assert "meta device" in r["ghost"]["basic_stats"]["error"]


# -- DeviceError wording -------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_error_names_the_api_and_the_cli(gen):
    sd = {"fc.weight": torch.randn(4, 4, generator=gen)}
    with pytest.raises(DeviceError) as info:
        weightscope.scan(sd, device="cuda")
    message = _one_line_error(info, DeviceError)
    assert "device='cpu'" in message and "CLI: --device cpu" in message


def test_unknown_device_error_names_the_api_and_the_cli():
    with pytest.raises(DeviceError) as info:
        Scope({"w": torch.ones(2, 2)}, device="gpu")
    message = _one_line_error(info, DeviceError)
    assert "device='cpu'" in message and "--device" in message
