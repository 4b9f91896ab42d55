"""Durations: seconds as a number, or a string such as ``"5s"``, ``"100ms"``, ``"1m30s"``."""

from __future__ import annotations

import math
import re

__all__ = ["parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(duration: float | str) -> float:
    """``duration`` in seconds: a number of seconds (``0.5``, ``math.inf``) or a string
    of one or more number-and-unit parts, units ``h``, ``m``, ``s``, ``ms``, ``us``
    (or ``µs``) and ``ns`` (``"5s"``, ``"100ms"``, ``"1m30s"``, ``"1.5h"``).

    Raises :class:`TypeError` for anything else (``True`` included) and
    :class:`ValueError` for a negative or NaN number or a string that is no duration.

    Example::

        parse_duration("1m30s")    # 90.0
        parse_duration("100ms")    # 0.1
        parse_duration(2)          # 2.0
    """
    if isinstance(duration, bool) or not isinstance(duration, int | float | str):
        raise TypeError(
            f"a duration is a number of seconds or a string like '5s' or '100ms', not {duration!r}"
        )
    if isinstance(duration, str):
        text = duration.strip()
        pos, total = 0, 0.0
        for part in _PART.finditer(text):
            if part.start() != pos:
                break
            total += float(part[1]) * _UNITS[part[2]]
            pos = part.end()
        if not text or pos != len(text):
            raise ValueError(
                f"{duration!r} is not a duration: write a number and a unit (h, m, s, ms, "
                f"us, ns), e.g. '5s', '100ms' or '1m30s'"
            )
        return total
    seconds = float(duration)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"a duration must be zero or more seconds, not {duration!r}")
    return seconds
