"""Argument checks shared by the public entry points (scan, compare, the monitor): one wording.

Each raises :class:`~weightscope.errors.ConfigError` with a one-line message naming the argument.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def regex(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a regular expression string or None, got {type(value).__name__}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ConfigError(f"invalid {name} regex {value!r}: {exc}") from exc
    return value
