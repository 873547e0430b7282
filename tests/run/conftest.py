import pytest
from run_builders import build_hf_run, build_lightning_run, build_lightning_run_with_final, build_sharded_model


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


@pytest.fixture(scope="session")
def sharded_model(tmp_path_factory):
    """One tiny GPT-2 in 7 shards + index (``save_pretrained(max_shard_size=...)``). Copy it before damaging it."""
    return build_sharded_model(tmp_path_factory.mktemp("sharded") / "model")


@pytest.fixture(scope="session")
def hf_final_run(tmp_path_factory):
    """A real HF Trainer run of 5 steps (checkpoint-2/4/5) with ``save_model()`` + ``save_state()`` at its top."""
    return build_hf_run(tmp_path_factory.mktemp("hf_final") / "run", max_steps=5, final=True)


@pytest.fixture(scope="session")
def lightning_final_run(tmp_path_factory):
    """A real Lightning run: ``checkpoints/epoch=0-step={2,4}.ckpt`` and ``final.ckpt`` (step 5) at its top."""
    return build_lightning_run_with_final(tmp_path_factory.mktemp("lightning_final") / "run")
