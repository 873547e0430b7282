"""``weightscope`` command line: subcommands, error handling, exit codes.

Exit codes: 0 success, 1 an error while working (one line on stderr; the
traceback only with ``--debug``), 2 bad usage (argparse), 130 interrupted,
141 stdout closed early (``weightscope scan ... -o x.json | head``): output
files are written before the report, so they are whole; 141 is 128 + SIGPIPE,
the status of a Unix tool that a closed pipe stops.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .._version import __version__
from ..errors import WeightScopeError

# Each module registers one subcommand: register(subparsers) sets func=run(args) -> int.
_SUBCOMMANDS = ("scan_cmd", "compare_cmd", "demo_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightscope",
        description="Look inside neural-network weights: scan, compare and monitor PyTorch checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"weightscope {__version__}")
    _add_debug_flag(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.{name}":
                continue  # a subcommand not built yet
            raise
        module.register(sub)
    # Users put --debug after the subcommand as often as before it: accept both.
    for subparser in sub.choices.values():
        _add_debug_flag(subparser, default=argparse.SUPPRESS)
    return parser


def _add_debug_flag(parser: argparse.ArgumentParser, default: object) -> None:
    # SUPPRESS on the subcommands: when --debug is absent there, argparse leaves the
    # top-level value alone instead of overwriting `weightscope --debug scan` with False.
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Only our own logger: frameworks (Lightning, transformers) keep their own handlers.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("weightscope: %(levelname)s: %(message)s"))
    ours = logging.getLogger("weightscope")
    ours.addHandler(handler)
    ours.setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except WeightScopeError as exc:
        if args.debug:
            raise
        print(f"weightscope: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("weightscope: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected bug still gets one line, not a wall of text
        if args.debug:
            raise
        print(f"weightscope: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


#: 128 + SIGPIPE: what a shell reports for a tool stopped by a closed pipe.
EXIT_STDOUT_CLOSED = 141


def _stdout_closed() -> int:
    """The reader of our stdout went away: not an error worth a message, and nothing more to say.

    Python's documented idiom (see the ``signal`` module's note on SIGPIPE):
    point stdout at devnull so the flush at exit does not raise again.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (captured, in-process)
        pass
    return EXIT_STDOUT_CLOSED


if __name__ == "__main__":
    sys.exit(main())
