"""Durations written the way people write them: ``90s``, ``5m``, ``1h``, ``7d`` (or seconds)."""

from __future__ import annotations

import re

from modelyard.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def seconds(value: str | float | int, what: str = "duration") -> float:
    """Seconds in ``value``: a number of seconds, or a number with a unit (ms, s, m, h, d, w)."""
    if isinstance(value, bool):
        raise InvalidInput(f"invalid {what} {value!r}: write e.g. 30s, 5m, 1h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise InvalidInput(f"invalid {what} {value!r}: it cannot be negative")
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidInput(f"invalid {what} {value!r}: write e.g. 30s, 5m, 1h or 7d")
    return float(match[1]) * _UNITS[match[2] or "s"]
