"""Damaged, missing and unsafe inputs fail with a SourceError naming the file."""

from __future__ import annotations

import json
import logging
import random
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from weightscope.errors import SourceError, UnsafeCheckpointError
from weightscope.sources import open_source, sniff_format


class _TouchOnLoad:
    """Unpickling this would create ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def st_file(tmp_path: Path) -> Path:
    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.randn(64)}, path)
    return path


def _cut(src: Path, dst: Path, nbytes: int) -> Path:
    dst.write_bytes(src.read_bytes()[:nbytes])
    return dst


def test_missing_path(tmp_path: Path) -> None:
    for missing in (tmp_path / "nope.safetensors", tmp_path / "a" / "b" / "c", "no/such/dir/here"):
        with pytest.raises(SourceError, match=re.escape(f"no such file or directory: {missing}")):
            open_source(missing)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda size: size // 2, "truncated: tensor 'a' ends at byte"),
        (lambda size: 50, "truncated or not a safetensors file"),  # inside the header
        (lambda size: 5, "too short for a header"),
    ],
    ids=["half", "header", "length-field"],
)
def test_truncated_safetensors(st_file: Path, tmp_path: Path, cut: Any, message: str) -> None:
    bad = _cut(st_file, tmp_path / "cut.safetensors", cut(st_file.stat().st_size))
    with pytest.raises(SourceError, match=message) as info:
        open_source(bad)
    assert str(bad) in str(info.value)


def test_bad_header_json(tmp_path: Path) -> None:
    junk = b"{not json at all"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", len(junk)) + junk + b"\0" * 16)
    with pytest.raises(SourceError, match=r"bad\.safetensors: corrupt safetensors header \(invalid JSON"):
        open_source(bad)


def test_overlapping_tensors_are_refused(st_file: Path, tmp_path: Path) -> None:
    raw = st_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header["alias"] = dict(header["b"])  # same bytes twice: safetensors forbids it
    new = json.dumps(header).encode()
    bad = tmp_path / "alias.safetensors"
    bad.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])
    with pytest.raises(SourceError, match="alias.safetensors: not a valid safetensors file"):
        open_source(bad)


@pytest.mark.parametrize("name", ["random.safetensors", "random.bin", "random.pt", "random"])
def test_random_bytes(tmp_path: Path, name: str) -> None:
    bad = tmp_path / name
    bad.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(SourceError, match=re.escape(str(bad))):
        open_source(bad)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").touch()
    with pytest.raises(SourceError, match="empty.pt: empty file"):
        open_source(tmp_path / "empty.pt")


def test_truncated_torch_file(tmp_path: Path) -> None:
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "ok.pt")
    bad = _cut(tmp_path / "ok.pt", tmp_path / "cut.pt", (tmp_path / "ok.pt").stat().st_size // 2)
    with pytest.raises(SourceError, match=r"cut\.pt: corrupt or truncated PyTorch checkpoint") as info:
        open_source(bad)
    assert not isinstance(info.value, UnsafeCheckpointError)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_code_in_pickle_is_refused_not_run(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    # The legacy format is refused whatever sits beside the code; a zip file when no weights do.
    payload = {"w": torch.ones(2), "x": _TouchOnLoad(marker)} if legacy else {"x": _TouchOnLoad(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match="would run code from the file") as info:
        open_source(path)
    assert not marker.exists()
    assert str(path) in str(info.value) and "open" in str(info.value)  # names the global it refused
    assert isinstance(info.value, SourceError)


@dataclass
class _RunConfig:
    """A config object, as ``save_hyperparameters()`` keeps it in a Lightning checkpoint."""

    lr: float
    widths: tuple[int, ...]


def test_checkpoint_referencing_classes_is_read_with_placeholders(tmp_path: Path, caplog: Any) -> None:
    marker = tmp_path / "code-ran"
    torch.manual_seed(0)
    state = {"layer.weight": torch.randn(8, 4), "layer.bias": torch.randn(8)}
    hparams = {"cfg": _RunConfig(0.1, (4, 8)), "evil": _TouchOnLoad(marker)}
    torch.save({"state_dict": state, "epoch": 2, "hyper_parameters": hparams}, tmp_path / "run.ckpt")
    with caplog.at_level(logging.WARNING, logger="weightscope"):
        src = open_source(tmp_path / "run.ckpt")
    loaded = {r.name: r.load() for r in src.refs()}
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not marker.exists()  # the open() the file asks for was never called
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "2 class(es) or function(s)" in warned and "_RunConfig" in warned and "io.open" in warned


def test_whole_module_pickle_is_refused_with_a_way_out(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(3, 2), tmp_path / "model.pt")
    with pytest.raises(UnsafeCheckpointError) as info:
        open_source(tmp_path / "model.pt")
    msg = str(info.value)
    assert "torch.nn.modules.linear.Linear" in msg and "safetensors.torch.save_file(model.state_dict()" in msg


def test_pickle_without_tensors(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "meta.pt")
    with pytest.raises(SourceError, match=r"meta\.pt: contains no tensors \(top-level keys: epoch, note\)"):
        open_source(tmp_path / "meta.pt")


def test_unsupported_objects() -> None:
    with pytest.raises(SourceError, match="cannot read weights from a int"):
        open_source(3)
    with pytest.raises(SourceError, match="contains no tensors"):
        open_source({"epoch": 1})


def test_safetensors_header_that_starts_like_a_pickle(st_file: Path, tmp_path: Path) -> None:
    assert st_file.read_bytes()[0] == 0x80  # header length 128: pickle's PROTO opcode
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(st_file.read_bytes())
    assert sniff_format(renamed) == "safetensors"
    assert [r.name for r in open_source(renamed).refs()] == ["a", "b"]
