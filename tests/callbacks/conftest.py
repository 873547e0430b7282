import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _offline_wandb(tmp_path_factory):
    """Every W&B run in these tests is offline, silent and under a temp folder."""
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "WANDB_CONSOLE")}
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONSOLE="off",
                      WANDB_DIR=str(tmp_path_factory.mktemp("wandb")))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
