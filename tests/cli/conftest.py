import os
import subprocess
import sys

import pytest


@pytest.fixture
def cli(tmp_path):
    def run(*args, check_rc=None):
        env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "weightscope", *map(str, args)], capture_output=True,
                              text=True, cwd=tmp_path, env=env, timeout=300)
        if check_rc is not None:
            assert proc.returncode == check_rc, proc.stderr
        return proc
    return run
