"""Comparing what was sent with what arrived, and describing the difference."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["describe", "expect_same", "explain", "short"]


def _canon(x: Any) -> Any:
    """A comparable form that also tells types apart (True is not 1, 1.0 is not 1)."""
    t = type(x)
    if t is list:
        return ("list", tuple(_canon(v) for v in x))
    if t is dict:
        return ("dict", tuple(sorted(((repr(_canon(k)), _canon(v)) for k, v in x.items()))))
    if t is float and math.isnan(x):
        return ("float", "nan")
    return (t.__name__, x)


def short(x: Any, limit: int = 70) -> str:
    if isinstance(x, bytes | str) and len(x) > limit:
        return f"<{type(x).__name__} of length {len(x)} starting {x[:24]!r}>"
    text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _difference(expected: Sequence[Any], got: Sequence[Any]) -> str | None:
    """None if equal (types included), else where and how they differ."""
    for i, (e, g) in enumerate(zip(expected, got, strict=False)):
        if e is g:
            continue
        if _canon(e) != _canon(g):
            detail = ""
            if isinstance(e, bytes | str) and isinstance(g, bytes | str) and type(e) is type(g):
                at = next((k for k, (x, y) in enumerate(zip(e, g, strict=False)) if x != y), None)
                where_diff = (
                    "one a prefix of the other" if at is None else f"first difference at {at}"
                )
                detail = f" (lengths {len(e)} and {len(g)}, {where_diff})"
            found = next((k for k, v in enumerate(got) if _canon(v) == _canon(e)), None)
            where = f"; the expected one came at {found}" if found is not None else ""
            return (
                f"message {i} of {len(expected)} differs: sent {short(e)}, "
                f"received {short(g)}{detail}{where}"
            )
    if len(expected) != len(got):
        return f"sent {len(expected)} messages, received {len(got)}"
    return None


def expect_same(expected: Sequence[Any], got: Sequence[Any], what: str) -> None:
    diff = _difference(expected, got)
    if diff is not None:
        raise AssertionError(f"{what}: {diff}")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_leaves(inner))
        return found
    return [exc]


def explain(exc: BaseException) -> str:
    parts = []
    for leaf in _leaves(exc):
        if isinstance(leaf, AssertionError):
            parts.append(str(leaf))
        else:
            parts.append(f"unexpected {describe(leaf)}")
    return "; ".join(parts)
