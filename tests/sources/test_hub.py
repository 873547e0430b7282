"""Hub ids, without network: HF_HUB_OFFLINE=1 over a temporary HF cache.

huggingface_hub reads HF_HOME/HF_HUB_OFFLINE when it is imported, so the
offline checks run in a fresh interpreter with those variables set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from weightscope.errors import SourceError
from weightscope.sources import open_source
from weightscope.sources.hub import looks_like_hub_id, open_hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"

SCRIPT = """
import json
from weightscope.errors import SourceError
from weightscope.sources import open_source

out = {}
with open_source("acme/tiny-gpt2") as src:
    out["names"] = [r.name for r in src.refs()]
    out["description"] = src.description
    out["files"] = [str(p) for p in src.files]
for target, revision in (("acme/not-cached", None), ("gpt2", None), ("acme/tiny-gpt2", "v9")):
    try:
        open_source(target, revision=revision)
        out[target + str(revision)] = None
    except SourceError as exc:
        out[target + str(revision)] = str(exc)
print(json.dumps(out))
"""


def _fake_cache(hf_home: Path, repo_id: str, model_dir: Path) -> Path:
    """The layout huggingface_hub writes: blobs by hash, snapshot symlinks, refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for f in model_dir.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_offline_cache_hit_and_misses(ckpts: Any, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    hf_home = tmp_path / "hf"
    snapshot = _fake_cache(hf_home, "acme/tiny-gpt2", ckpts.hf_sharded)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    index = json.loads((ckpts.hf_sharded / "model.safetensors.index.json").read_text())
    assert out["names"] == list(index["weight_map"])
    assert out["description"] == "hf://acme/tiny-gpt2"
    assert all(Path(p).parent == snapshot for p in out["files"])
    for key, repo_id in (("acme/not-cachedNone", "acme/not-cached"), ("gpt2None", "gpt2"), ("acme/tiny-gpt2v9", "")):
        msg = out[key]
        assert msg is not None and "no such file or directory" in msg and "pass a local path" in msg
        assert f"could not fetch {repo_id}" in msg
    assert "acme/tiny-gpt2@v9" in out["acme/tiny-gpt2v9"]


def test_without_huggingface_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(SourceError, match=r"pip install weightscope\[hf\]"):
        open_hub("acme/model")
    with pytest.raises(SourceError, match=r"no such file or directory: acme/model; .*weightscope\[hf\]"):
        open_source("acme/model")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpt2", True),
        ("openai-community/gpt2", True),
        ("Qwen/Qwen2.5-0.5B", True),
        ("model.safetensors", False),
        ("runs/exp1/last.ckpt", False),
        ("a/b/c", False),
        ("/abs/path", False),
        ("./local", False),
        ("~/models/x", False),
        ("bad--name", False),
        ("owner/repo.git", False),
        ("naïve/model", False),
    ],
)
def test_looks_like_hub_id(text: str, expected: bool) -> None:
    assert looks_like_hub_id(text) is expected
