import pytest
from run_builders import build_hf_run, build_lightning_run


@pytest.fixture(scope="session")
def hf_run(tmp_path_factory):
    """A real HF Trainer run folder (checkpoint-2/4/6). Tests that write into a run copy it first."""
    return build_hf_run(tmp_path_factory.mktemp("hf") / "run")


@pytest.fixture(scope="session")
def lightning_run(tmp_path_factory):
    """(run folder of a real Lightning Trainer, the live callback's JSONL history of the same training)."""
    root = tmp_path_factory.mktemp("lightning")
    run = build_lightning_run(root / "run", root / "live")
    return run, root / "live" / "weightscope.jsonl"
