"""Pieces shared by the CLI subcommands: consoles, progress bars, shared flags."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class _Console(Console):
    """A rich console that lets a closed pipe (``| head``) reach ``main``, which owns the exit code."""

    def on_broken_pipe(self) -> None:
        # rich's own handler exits with 1, indistinguishable from a failed scan.
        self.quiet = True
        raise  # noqa: PLE0704 - called from rich's `except BrokenPipeError:` block, re-raises that error


# Tables go to stdout; progress and errors to stderr so `> file` stays clean.
# Piped output gets wide tables rather than rich's 80-column default.
stdout = _Console(width=None if sys.stdout.isatty() else 160)
stderr = _Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def say_written(what: str, where: str | Path) -> None:
    """``<what> written to <where>`` on stderr, the path as typed (``out[v2].json`` is not markup)."""
    stderr.print(f"{what} written to {escape(str(where))}", soft_wrap=True)


class ProgressBar:
    """The engine's Progress protocol drawn with rich on stderr: tensors done / total and MB/s."""

    def __init__(self, description: str, quiet: bool = False) -> None:
        self.description = description
        self.quiet = quiet
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, total: int, total_bytes: int) -> None:
        if self.quiet:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[done]}/{task.fields[count]} tensors"),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=stderr,
            )
            self._bar.start()
        # The bar advances by bytes so that speed and ETA reflect work, not tensor count.
        self._task = self._bar.add_task(self.description, total=max(total_bytes, 1), done=0, count=total)

    def advance(self, nbytes: int) -> None:
        if self._bar is None:
            return
        done = self._bar.tasks[-1].fields["done"] + 1
        self._bar.update(self._task, advance=nbytes, done=done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def add_engine_flags(p: argparse.ArgumentParser, default_methods: str = "all") -> None:
    """Flags every analysing command shares; ``default_methods`` only shows in the help."""
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help=("basic_stats spectral esd quantization sparsity, or all; space- or comma-separated "
                         f"(default: {default_methods})"))
    p.add_argument("--parallel", action="store_true", default=True,
                   help="analyse tensors on a thread pool (default)")
    p.add_argument("--sequential", dest="parallel", action="store_false", help="analyse one tensor at a time")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker threads, 1 or more (default: core count)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--layers", default=None, metavar="REGEX", help="only layers whose name matches")
    p.add_argument("--exclude", default=None, metavar="REGEX", help="skip layers whose name matches")
    p.add_argument("--include-vectors", action="store_true", help="also basic_stats of 1-D tensors (biases, norms)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value
