"""Shared by the benchmark scripts: run a command, time it, sample its peak anonymous memory."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"


@dataclass
class Measurement:
    wall_s: float
    peak_anon_mb: float
    peak_rss_mb: float
    returncode: int
    stderr: str


def _read_status(pid: int) -> dict[str, int]:
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "VmRSS"):
                    fields[key] = int(rest.split()[0])  # kB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return fields


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Wall time of the whole process and its peak RssAnon, polled every 5 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = {"RssAnon": 0, "VmRSS": 0}

    def poll() -> None:
        while proc.poll() is None:
            for k, v in _read_status(proc.pid).items():
                peak[k] = max(peak[k], v)
            time.sleep(0.005)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    t.join()
    return Measurement(wall, peak["RssAnon"] / 1024, peak["VmRSS"] / 1024, proc.returncode, err)


def weightscope_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "weightscope", *args]


def report(rows: list[tuple[str, Measurement]]) -> None:
    print("| run | wall (s) | peak anon (MB) | peak RSS (MB) |")
    print("|---|---:|---:|---:|")
    for name, m in rows:
        flag = "" if m.returncode == 0 else f" (exit {m.returncode}: {m.stderr.strip().splitlines()[-1:]})"
        print(f"| {name}{flag} | {m.wall_s:.2f} | {m.peak_anon_mb:.0f} | {m.peak_rss_mb:.0f} |")
