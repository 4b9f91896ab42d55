"""Durations as users write them: seconds, or ``"5s"``, ``"100ms"``, ``"2m"``."""

from __future__ import annotations

import math
import re

__all__ = ["seconds"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h)\s*")


def seconds(duration: float | str) -> float:
    """``duration`` in seconds: a non-negative number of seconds, or a string of a
    number and a unit (ns, us, ms, s, m, h). ``ValueError``/``TypeError`` otherwise."""
    if isinstance(duration, bool):
        raise TypeError("a duration is seconds (a number) or a string like '5s'; got a bool")
    if isinstance(duration, int | float):
        value = float(duration)
    elif isinstance(duration, str):
        found = _TEXT.fullmatch(duration)
        if found is None:
            raise ValueError(
                f"not a duration: {duration!r} (write seconds, or e.g. '5s', '100ms', '2m')"
            )
        value = float(found[1]) * _UNITS[found[2]]
    else:
        raise TypeError(
            f"a duration is seconds (a number) or a string like '5s'; got {type(duration).__name__}"
        )
    if math.isnan(value) or value < 0:
        raise ValueError(f"a duration must be >= 0 seconds: got {duration!r}")
    return value
