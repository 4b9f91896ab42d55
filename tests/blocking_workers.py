"""Targets of tests/test_worker_blocking.py, run inside item-mode worker processes."""

from __future__ import annotations

import sys
import threading
from typing import Any

STATE: list[str] = []


def threads(x: Any) -> int:
    """How many threads the worker runs (the blocking runtime: one)."""
    return threading.active_count()


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def setup() -> None:
    STATE.append("ready")


def state(x: Any) -> list[str]:
    return STATE


def bad_init() -> None:
    raise RuntimeError("init broke")


def unencodable(x: int) -> Any:
    return object() if x == 1 else x


def big(x: int) -> str:
    return "y" * x


def shout(x: Any) -> Any:
    print(f"item {x}", file=sys.stderr, flush=True)
    return x


def exits(x: int) -> int:
    sys.exit(x)
