"""A strict JSON reader for the CLI's outputs (a module of its own: test folders each have a conftest.py,
so ``from conftest import ...`` finds whichever was imported first)."""

import json


def _reject(token):
    raise AssertionError(f"non-strict JSON token {token}")


def strict_load(path):
    """json.load that fails on NaN / Infinity, as a strict JSON parser would."""
    with open(path) as fh:
        return json.load(fh, parse_constant=_reject)
