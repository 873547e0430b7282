"""compare_sources on in-memory inputs: modules, state dicts, tied weights, loads, failures."""

import math

import pytest
import torch

from weightscope.core.comparator import compare_sources
from weightscope.analyzers import analyze_tensor


class TinyLM(torch.nn.Module):
    def __init__(self, tie: bool) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(40, 8)
        self.h = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(2))
        self.lm_head = torch.nn.Linear(8, 40, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight


def test_tied_alias_is_compared_with_the_untied_tensor():
    torch.manual_seed(0)
    tied = TinyLM(tie=True)
    untied = {k: v.detach().clone() for k, v in TinyLM(tie=False).state_dict().items()}
    untied.update({k: v.detach().clone() for k, v in tied.state_dict().items() if k != "lm_head.weight"})
    untied["lm_head.weight"] = tied.wte.weight.detach() * 2
    c = compare_sources(tied, untied)
    assert c["aliases"]["model1"] == {"lm_head": "wte"}
    head = c["layer_comparisons"]["lm_head"]
    assert head["l2_norm_ratio"] == pytest.approx(2.0, rel=1e-7)  # compared with wte's data
    assert c["layer_comparisons"]["wte"]["identical"] is True
    assert c["only_in_model1"] == c["only_in_model2"] == []
    assert "lm_head" not in c["model1_stats"]  # the alias has no stats of its own ...
    assert "lm_head" in c["model2_stats"]  # ... the real tensor does


def test_each_tensor_is_loaded_once(counting_source, gen):
    a = {f"l{i}.weight": torch.randn(24, 12, generator=gen) for i in range(6)}
    b = {k: (t if i % 2 else t + 1) for i, (k, t) in enumerate(a.items())}
    s1, s2 = counting_source(a), counting_source(b)

    c = compare_sources(s1, s2, methods="basic_stats", num_workers=2)
    assert sorted(s1.loads) == sorted(a) and sorted(s2.loads) == sorted(b)
    assert c["summary"]["identical_layers"] == 3
    # Identical bits give identical stats (copied, not analysed twice).
    for layer in ("l1", "l3", "l5"):
        assert c["model1_stats"][layer] == c["model2_stats"][layer]
    assert c["model2_stats"]["l0"] == analyze_tensor(b["l0.weight"], ["basic_stats"])


def test_a_broken_tensor_gets_an_error_entry_not_a_crash(counting_source, gen):
    a = {"ok.weight": torch.randn(8, 8, generator=gen), "bad.weight": torch.randn(8, 8, generator=gen)}
    c = compare_sources(counting_source(a), counting_source(dict(a), broken={"bad.weight"}), parallel=False)
    bad = c["layer_comparisons"]["bad"]
    assert "corrupt tensor bad.weight" in bad["error"]
    assert math.isnan(bad["l2_distance"]) and bad["identical"] is None  # not measured: NaN; not known: None
    assert c["layer_comparisons"]["ok"]["identical"] is True
    assert c["summary"]["errors"] == 1 and c["summary"]["compared_layers"] == 1
    assert "error" in c["model2_stats"]["bad"]["basic_stats"]


def test_progress_sees_every_task_and_byte(counting_source, gen):
    a = {"x.weight": torch.randn(10, 10, generator=gen), "y.weight": torch.randn(5, 4, generator=gen)}
    b = {"x.weight": torch.randn(10, 10, generator=gen), "z.weight": torch.randn(3, 3, generator=gen)}

    class Recorder:
        def __init__(self):
            self.total = self.total_bytes = self.done = self.bytes = 0

        def start(self, total, total_bytes):
            self.total, self.total_bytes = total, total_bytes

        def advance(self, nbytes):
            self.done += 1
            self.bytes += nbytes

    rec = Recorder()
    compare_sources(counting_source(a), counting_source(b), progress=rec)
    assert rec.total == rec.done == 3  # the pair and the two unpaired layers
    assert rec.total_bytes == rec.bytes == (200 + 20 + 9) * 4


def test_no_common_names_is_reported_not_a_crash(counting_source, gen):
    c = compare_sources(counting_source({"a.weight": torch.randn(3, 3, generator=gen)}),
                        counting_source({"b.weight": torch.randn(3, 3, generator=gen)}))
    assert c["layer_comparisons"] == {}
    assert c["only_in_model1"] == ["a"] and c["only_in_model2"] == ["b"]
    assert c["summary"]["global_l2_distance"] is None


def test_threshold_is_validated(counting_source):
    from weightscope.errors import ConfigError

    with pytest.raises(ConfigError):
        compare_sources(counting_source({}), counting_source({}), threshold=-1)


def test_method_diffs_are_the_difference_of_each_sides_stats(counting_source, gen):
    a = {"w.weight": torch.randn(96, 64, generator=gen)}
    b = {"w.weight": a["w.weight"] + 0.3 * torch.randn(96, 64, generator=gen) ** 3}  # heavier tails
    c = compare_sources(counting_source(a), counting_source(b), methods=["quantization", "esd", "spectral"])
    m, s1, s2 = c["layer_comparisons"]["w"], c["model1_stats"]["w"], c["model2_stats"]["w"]
    q1, q2 = s1["quantization"], s2["quantization"]
    assert m["extreme_outlier_percentage_diff"] == q2["extreme_outlier_percentage"] - q1["extreme_outlier_percentage"]
    assert m["sqnr_db_diff"] == q2["sqnr_db"] - q1["sqnr_db"]
    assert m["alpha_diff"] == s2["esd"]["alpha"] - s1["esd"]["alpha"]
    assert m["condition_number_ratio"] == s2["spectral"]["condition_number"] / s1["spectral"]["condition_number"]
    spectral_norm = lambda t: float(torch.linalg.matrix_norm(t.double(), 2))  # noqa: E731
    assert m["max_singular_value_ratio"] == pytest.approx(spectral_norm(b["w.weight"]) / spectral_norm(a["w.weight"]),
                                                           rel=1e-9)
    # No basic_stats asked for: the tensor pass still gives the element-wise metrics.
    assert m["mean_diff"] == pytest.approx(float(b["w.weight"].double().mean() - a["w.weight"].double().mean()))
