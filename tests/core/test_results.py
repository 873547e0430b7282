"""ScanResults as users handle it: the DataFrame view, files with non-finite values, what loads as a scan."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from weightscope import Scope
from weightscope.analyzers import resolve_methods
from weightscope.core.results import ScanResults
from weightscope.errors import UnknownMethodError, WeightScopeError

pd = pytest.importorskip("pandas")


@pytest.fixture
def results():
    # Layers out of name order on purpose: the frame keeps scan order, sort_values reorders.
    return ScanResults(
        {
            "b": {"basic_stats": {"mean": 2.0, "shape": [2, 2]}, "spectral": {"condition_number": math.inf}},
            "a": {"basic_stats": {"mean": -1.0, "shape": [3, 1]}, "spectral": {"condition_number": 4.0}},
        },
        methods=["basic_stats", "spectral"],
    )


def test_dataframe_has_a_layer_column_and_a_plain_index(results):
    df = results.to_dataframe()
    assert list(df["layer"]) == ["b", "a"]
    assert isinstance(df.index, pd.RangeIndex) and df.index.name is None
    assert list(df.columns[:1]) == ["layer"]
    assert df["basic_stats.mean"].tolist() == [2.0, -1.0]
    assert math.isinf(df.loc[0, "spectral.condition_number"])  # inf in Python; files say null


def test_common_dataframe_calls_work(results):
    df = results.to_dataframe()
    assert df.groupby("layer")["basic_stats.mean"].sum().to_dict() == {"a": -1.0, "b": 2.0}
    assert df.sort_values("layer")["layer"].tolist() == ["a", "b"]
    assert df.reset_index()["layer"].tolist() == ["b", "a"]
    assert df.set_index("layer").loc["a", "spectral.condition_number"] == 4.0


def test_dataframe_of_a_real_scan_matches_numpy():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(6, 4, generator=g)
    df = Scope({"fc.weight": w, "fc.bias": torch.ones(6)}).scan("basic_stats").to_dataframe()
    assert df["layer"].tolist() == ["fc"]
    assert math.isclose(df.loc[0, "basic_stats.mean"], w.double().numpy().mean(), rel_tol=1e-12)


def test_empty_scan_frame_still_has_the_layer_column():
    df = ScanResults({}).to_dataframe()
    assert list(df.columns) == ["layer"] and len(df) == 0


def test_csv_and_parquet_write_null_for_inf(results, tmp_path):
    results.save(tmp_path / "s.csv")
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [r["spectral.condition_number"] for r in rows] == ["", "4.0"]
    assert rows[0]["basic_stats.shape"] == "[2, 2]"
    assert np.isnan(pd.read_csv(tmp_path / "s.csv")["spectral.condition_number"][0])
    assert math.isinf(results["b"]["spectral"]["condition_number"])  # saving did not touch the results

    pq = pytest.importorskip("pyarrow.parquet")
    results.save(tmp_path / "s.parquet")
    assert pq.read_table(tmp_path / "s.parquet").to_pydict()["spectral.condition_number"] == [None, 4.0]


def test_saving_to_a_folder_is_a_one_line_error(results, tmp_path):
    with pytest.raises(WeightScopeError, match="it is a folder") as info:
        results.save(tmp_path)
    assert ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_json_object_is_not_a_scan(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(WeightScopeError, match="empty.json is not a WeightScope scan file"):
        ScanResults.load(tmp_path / "empty.json")


def test_a_saved_scan_with_no_layers_still_loads(tmp_path):
    ScanResults({}, methods=["basic_stats"], skipped={"ids": "non-floating dtype int64"}).save(tmp_path / "s.json")
    loaded = ScanResults.load(tmp_path / "s.json")
    assert dict(loaded) == {} and loaded.skipped == {"ids": "non-floating dtype int64"}
    assert json.loads((tmp_path / "s.json").read_text())["format"] == "weightscope.scan/1"


@pytest.mark.parametrize(
    "methods, expected",
    [
        (["spectral,quantization"], ["spectral", "quantization"]),
        (["sparsity, basic_stats", "esd"], ["basic_stats", "esd", "sparsity"]),
        ("quantization,spectral", ["spectral", "quantization"]),
        (["all,"], ["basic_stats", "spectral", "esd", "quantization", "sparsity"]),
    ],
)
def test_methods_split_on_commas_in_strings_and_list_items(methods, expected):
    assert resolve_methods(methods) == expected


def test_an_unknown_method_inside_a_comma_list_is_named():
    with pytest.raises(UnknownMethodError, match="unknown method 'bogus'"):
        resolve_methods(["spectral,bogus"])


def test_skipped_lists_what_the_source_could_not_offer_and_dtypes_are_kept(tmp_path, monkeypatch):
    import pickle

    from safetensors.torch import save_file

    from weightscope.sources import safetensors_file

    path = tmp_path / "m.safetensors"
    save_file({"a.weight": torch.randn(4, 6).half(), "b.weight": torch.randn(4, 6).bfloat16(),
               "steps": torch.arange(3)}, str(path))
    # As if this torch had no float16: the file's own reader leaves the tensor out.
    monkeypatch.delitem(safetensors_file.SAFETENSORS_DTYPES, "F16")
    results = Scope(str(path)).scan(methods="spectral")
    assert list(results) == ["b"]
    assert set(results.skipped) == {"a.weight", "steps"}
    assert "F16 is not supported" in results.skipped["a.weight"]
    assert results.stored_dtypes == {"b": "bfloat16"}  # reported without basic_stats
    assert results.stored_shapes == {"b": [4, 6]} and "basic_stats" not in results["b"]
    again = ScanResults.load(results.save(tmp_path / "r.json"))
    assert again.stored_dtypes == {"b": "bfloat16"} and again.skipped == results.skipped
    assert again.stored_shapes == {"b": [4, 6]} and again.layer_shape("b") == (4, 6)
    assert pickle.loads(pickle.dumps(results)).stored_shapes == {"b": [4, 6]}
    old = pickle.loads(pickle.dumps(results))
    # A results object pickled before the attributes existed.
    del old.__dict__["stored_dtypes"], old.__dict__["stored_shapes"]
    unpickled = pickle.loads(pickle.dumps(old))
    assert unpickled.stored_dtypes == {} and unpickled.stored_shapes == {} and unpickled.layer_shape("b") is None


def test_save_refuses_an_extension_it_would_not_honour(tmp_path):
    results = Scope({"w": torch.ones(3, 3)}).scan(methods="basic_stats", parallel=False)
    with pytest.raises(WeightScopeError, match=r"unsupported extension '\.txt' \(supported: \.json, \.csv, \.parquet\)"):
        results.save(tmp_path / "scan.txt")
    assert not (tmp_path / "scan.txt").exists()
    assert ScanResults.load(results.save(tmp_path / "scan.json"))["w"] == results["w"]
