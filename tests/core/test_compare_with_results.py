"""compare_with(<results of a live scan>) compares tensors while the scanned source is unchanged.

The contract's workflow: scan two models, then ``base_scope.compare_with(finetuned_results)``.
Results returned by ``Scope.scan`` re-read their source (reusing their saved stats); a changed
or vanished source falls back to stats mode with one warning; results read back from a file
always compare from their stats.
"""

import json
import logging
import os
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import weightscope
from weightscope import Scope
from weightscope.core import comparator
from weightscope.core.comparator import find_most_changed_layers
from weightscope.core.results import ScanResults

METHODS = ["basic_stats", "spectral"]
WARNING_LOGGER = "weightscope.core.comparator"


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy().ravel()


def _reference(a: torch.Tensor, b: torch.Tensor) -> dict:
    x, y = _f64(a), _f64(b)
    na, nb = np.linalg.norm(x), np.linalg.norm(y)
    return {"relative_l2_distance": np.linalg.norm(y - x) / na, "l2_distance": np.linalg.norm(y - x),
            "cosine_similarity": float(x @ y / (na * nb)), "l2_norm_ratio": nb / na}


@pytest.fixture
def models(tmp_path):
    """QA's repro: 'reinit' re-initialised at the same norm (orthogonal to the base), 'scaled' x1.02."""
    g = torch.Generator().manual_seed(7)
    reinit, scaled = torch.randn(48, 32, generator=g), torch.randn(48, 32, generator=g)
    r = torch.randn(48, 32, generator=g)
    r = r - (r * reinit).sum() / (reinit * reinit).sum() * reinit  # orthogonal: ‖B−A‖/‖A‖ = √2
    r = r * reinit.norm() / r.norm()
    base = {"reinit.weight": reinit, "scaled.weight": scaled}
    tuned = {"reinit.weight": r.contiguous(), "scaled.weight": scaled * 1.02}
    save_file(base, tmp_path / "base.safetensors")
    save_file(tuned, tmp_path / "tuned.safetensors")
    return tmp_path / "base.safetensors", tmp_path / "tuned.safetensors", base, tuned


def _ranked(comparison):
    return [(layer, round(score, 2)) for layer, score, _ in find_most_changed_layers(comparison, top_k=10)]


def _count_analyses(monkeypatch):
    calls = []
    real = comparator.analyze_tensor

    def counting(tensor, methods, device="cpu"):
        calls.append(tuple(tensor.shape))
        return real(tensor, methods, device=device)

    monkeypatch.setattr(comparator, "analyze_tensor", counting)
    return calls


def test_live_results_compare_like_the_path(models, monkeypatch, caplog):
    base_path, tuned_path, base, tuned = models
    base_scope, tuned_scope = Scope(base_path), Scope(tuned_path)
    base_results = base_scope.scan(methods=["all"], parallel=False)
    tuned_results = tuned_scope.scan(methods=["all"], parallel=False)
    assert tuned_results.source == str(tuned_path) and tuned_results.rereadable

    by_path = base_scope.compare_with(str(tuned_path), methods=METHODS, parallel=False)
    calls = _count_analyses(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        by_results = base_scope.compare_with(tuned_results, methods=METHODS, parallel=False)
    assert caplog.records == []
    assert len(calls) == 2  # the base's two layers; the tuned side reuses its saved stats

    assert by_path["mode"] == by_results["mode"] == "tensors"
    assert _ranked(by_path) == _ranked(by_results) == [("reinit", 1.41), ("scaled", 0.02)]
    assert by_results["model2"] == str(tuned_path)
    for layer in ("reinit", "scaled"):
        got, ref = by_results["layer_comparisons"][layer], _reference(base[f"{layer}.weight"], tuned[f"{layer}.weight"])
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (layer, key)
        assert got["tensors_compared"] is True
        x, y = _f64(base[f"{layer}.weight"]), _f64(tuned[f"{layer}.weight"])
        assert got["significant_change_percentage"] == pytest.approx(100 * np.mean(np.abs(y - x) > 0.01 * np.abs(x)))
        sv = np.linalg.svd((y - x).reshape(base[f"{layer}.weight"].shape), compute_uv=False)
        assert got["update_rank_90"] == int(np.argmax(np.cumsum(sv**2) >= 0.9 * np.sum(sv**2))) + 1
        for key in ("l2_distance", "cosine_similarity", "l2_norm_ratio", "update_rank_90"):
            assert got[key] == pytest.approx(by_path["layer_comparisons"][layer][key], rel=1e-9, abs=1e-12)
        # Saved stats reused, cut to the methods compared; the same numbers a fresh analysis gives.
        assert by_results["model2_stats"][layer] == {m: tuned_results[layer][m] for m in METHODS}
        for key in ("condition_number", "stable_rank", "max_singular_value"):
            assert by_results["model2_stats"][layer]["spectral"][key] == pytest.approx(
                by_path["model2_stats"][layer]["spectral"][key], rel=1e-9)
    assert by_results["layer_comparisons"]["reinit"]["cosine_similarity"] == pytest.approx(0.0, abs=1e-6)
    assert by_results["layer_comparisons"]["scaled"]["cosine_similarity"] == pytest.approx(1.0, abs=1e-12)

    # Both sides results, their scopes closed: each reopens its own file (and the one-call form works).
    base_scope.close()
    tuned_scope.close()
    both = weightscope.compare(base_results, tuned_results, methods=METHODS, parallel=False)
    assert both["mode"] == "tensors" and _ranked(both) == [("reinit", 1.41), ("scaled", 0.02)]
    assert both["model1_stats"]["reinit"] == {m: base_results["reinit"][m] for m in METHODS}


def test_methods_the_scan_lacks_are_analysed(models, monkeypatch):
    base_path, tuned_path, base, tuned = models
    tuned_results = weightscope.scan(tuned_path, methods="basic_stats", parallel=False)
    calls = _count_analyses(monkeypatch)
    c = weightscope.compare(base_path, tuned_results, methods=METHODS, parallel=False)
    assert c["mode"] == "tensors" and len(calls) == 4  # both sides: the saved stats lack spectral
    assert set(c["model2_stats"]["reinit"]) == set(METHODS)
    for key, side in (("model1_stats", base), ("model2_stats", tuned)):  # each side's own tensors, numpy float64
        for layer in ("reinit", "scaled"):
            w = side[f"{layer}.weight"].double().numpy()
            sv = np.linalg.svd(w, compute_uv=False)
            stats = c[key][layer]
            assert stats["spectral"]["max_singular_value"] == pytest.approx(sv[0], rel=1e-9), (key, layer)
            assert stats["spectral"]["condition_number"] == pytest.approx(sv[0] / sv[-1], rel=1e-6), (key, layer)
            assert stats["basic_stats"]["mean"] == pytest.approx(w.mean(), rel=1e-9), (key, layer)
    assert c["layer_comparisons"]["scaled"]["max_singular_value_ratio"] == pytest.approx(1.02, rel=1e-6)


def test_only_the_scanned_layers_take_part(models):
    base_path, tuned_path, _, _ = models
    tuned_results = weightscope.scan(tuned_path, methods="basic_stats", layers="scaled", parallel=False)
    c = weightscope.compare(base_path, tuned_results, parallel=False)
    assert c["mode"] == "tensors" and sorted(c["layer_comparisons"]) == ["scaled"]
    assert c["only_in_model1"] == ["reinit"]  # as when comparing these results' stats


def test_a_changed_file_falls_back_to_stats_with_one_warning(models, caplog):
    base_path, tuned_path, base, tuned = models
    tuned_results = weightscope.scan(tuned_path, methods=METHODS, parallel=False)
    before = os.stat(tuned_path)
    # Rewritten in place: same names, shapes and size, other values.
    save_file({k: -v for k, v in tuned.items()}, tuned_path)
    # The coarse filesystem clock could give the rewrite the scan-time mtime; make it later for sure.
    os.utime(tuned_path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert os.stat(tuned_path).st_size == before.st_size

    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        first = weightscope.compare(base_path, tuned_results, methods=METHODS, parallel=False)
        second = Scope(base_path).compare_with(tuned_results, methods=METHODS, parallel=False)
    warnings = [r.getMessage() for r in caplog.records if "saved stats" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per results object
    assert "changed since it was scanned" in warnings[0] and str(tuned_path) in warnings[0]
    for c in (first, second):
        assert c["mode"] == "stats"
        assert c["model2_stats"]["reinit"] == tuned_results["reinit"]  # the scan's stats, not the new file's
        reinit = c["layer_comparisons"]["reinit"]
        assert reinit["cosine_similarity"] is None and reinit["l2_distance"] is None
    # Stats mode ranks by |l2_norm_ratio − 1|: the same-norm re-init scores ~0, last.
    scores = dict(_ranked(first))
    assert list(scores) == ["scaled", "reinit"] and scores["scaled"] == 0.02 and scores["reinit"] == 0.0


def test_a_deleted_file_falls_back_to_stats(models, caplog):
    base_path, tuned_path, _, _ = models
    tuned_results = weightscope.scan(tuned_path, methods="basic_stats", parallel=False)
    tuned_path.unlink()
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        c = weightscope.compare(base_path, tuned_results, parallel=False)
    assert c["mode"] == "stats"
    assert any("no longer exists" in r.getMessage() for r in caplog.records)


def test_results_read_back_from_a_file_stay_in_stats_mode(models, tmp_path, caplog):
    base_path, tuned_path, _, _ = models
    live = weightscope.scan(tuned_path, methods=METHODS, parallel=False)
    saved = live.save(tmp_path / "tuned-scan.json")
    # The handle is not saved.
    assert set(json.loads(saved.read_text())) == {"format", "source", "methods", "weightscope_version",
                                                  "aliases", "skipped", "stored_dtypes", "stored_shapes",
                                                  "layers"}
    loaded = ScanResults.load(saved)
    assert loaded.source == str(tuned_path) and tuned_path.exists() and not loaded.rereadable
    unpickled = pickle.loads(pickle.dumps(live))
    assert unpickled == live and unpickled.source == live.source and not unpickled.rereadable
    assert set(vars(unpickled)) == {"source", "methods", "aliases", "skipped", "stored_dtypes",
                                    "stored_shapes"}  # no handle
    others = (loaded, saved, str(saved), json.loads(saved.read_text()), dict(live), unpickled,
              ScanResults.from_json_dict(live.to_json_dict()))
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        for other in others:
            c = weightscope.compare(base_path, other, methods=METHODS, parallel=False)
            assert c["mode"] == "stats", type(other)
            assert c["layer_comparisons"]["reinit"]["cosine_similarity"] is None
            assert _ranked(c) == [("scaled", 0.02), ("reinit", 0.0)]
    assert caplog.records == []  # the documented rule, not a failure: no warning
    # And by hand.
    live.forget_source()
    assert weightscope.compare(base_path, live, methods=METHODS, parallel=False)["mode"] == "stats"


def test_results_of_in_memory_models_compare_from_their_stats(caplog):
    """A module's tensors change in place (a fused optimizer step does not even bump their version
    counter): its results must never re-read them, or a before/after comparison reads "no change"."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.Linear(16, 8))
    before = weightscope.scan(model, methods="basic_stats", parallel=False)
    assert not before.rereadable
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    for _ in range(5):
        model(torch.randn(4, 24)).sum().backward()
        opt.step()
        opt.zero_grad()
    with caplog.at_level(logging.WARNING, logger=WARNING_LOGGER):
        c = Scope(model).compare_with(before, methods=["basic_stats"], parallel=False)
    assert c["mode"] == "stats" and not caplog.records  # by design, nothing to warn about
    for layer, i in (("0", 0), ("1", 1)):
        got = c["layer_comparisons"][layer]
        now = model[i].weight.detach().double().numpy()
        # model 1 is the scope (the trained weights), model 2 the results from before training
        assert got["l2_norm_ratio"] == pytest.approx(
            before[layer]["basic_stats"]["l2_norm"] / np.linalg.norm(now), rel=1e-9)
        assert got["l2_norm_ratio"] != 1.0  # the training is seen
    sd = {"w": torch.ones(4, 4)}
    assert not weightscope.scan(sd, methods="basic_stats", parallel=False).rereadable
