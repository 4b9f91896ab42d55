"""The defaults of the concurrency helpers: how many at once, and the timeout."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

from ..channels import parse_duration

__all__ = ["Defaults", "current_defaults", "defaults", "set_defaults"]

DEFAULT_MAX_WORKERS = 100
"""Tasks or threads at once when nothing says otherwise (I/O-bound work is the case)."""

DEFAULT_PROCESS_IDLE = 60.0
"""Seconds a warm process pool stays open unused (loky's reusable executor: 300 s)."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """What the concurrency helpers use when a call does not say.

    - ``max_workers``: tasks or threads at once (``parallel_map``'s ``max_workers``,
      ``stream_map``'s ``workers``), default 100;
    - ``max_processes``: worker processes of the process backend (``None``: one per
      CPU, ``os.cpu_count()``);
    - ``timeout``: seconds each item (or ``spawn_link``, or ``timeout()`` called with
      ``None``) may take; ``None``, the default: no limit;
    - ``process_idle``: seconds a warm pool of the process backend stays open unused
      before its workers stop (default 60).

    Example::

        with pipekit.concurrency.defaults(max_workers=8, timeout="30s"):
            results = pk.parallel_map(fetch, urls)     # 8 at once, 30 s each
    """

    max_workers: int = DEFAULT_MAX_WORKERS
    max_processes: int | None = None
    timeout: float | None = None
    process_idle: float = DEFAULT_PROCESS_IDLE

    def processes(self) -> int:
        """``max_processes``, or the number of CPUs."""
        return self.max_processes or os.cpu_count() or 1


_global = Defaults()
_override: ContextVar[Defaults | None] = ContextVar("pipekit_concurrency_defaults", default=None)


def current_defaults() -> Defaults:
    """The defaults in force here: those of the innermost :func:`defaults` block, else
    those of :func:`set_defaults`.

    Example::

        pipekit.concurrency.current_defaults().max_workers     # 100
    """
    return _override.get() or _global


def check_workers(value: Any, name: str) -> int:
    """``value`` as a count of workers (an int >= 1), or a readable error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, not {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def check_timeout(value: Any) -> float | None:
    """``value`` (seconds, ``"5s"``, ``None``) as positive seconds or None (no limit)."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"timeout must be more than 0 seconds, not {value!r}")
    return None if seconds == math.inf else seconds


def _updated(base: Defaults, changes: dict[str, Any]) -> Defaults:
    unknown = set(changes) - {"max_workers", "max_processes", "timeout", "process_idle"}
    if unknown:
        raise TypeError(
            f"unknown default(s) {sorted(unknown)}: max_workers, max_processes, timeout, "
            "process_idle"
        )
    if "max_workers" in changes:
        check_workers(changes["max_workers"], "max_workers")
    if changes.get("max_processes") is not None:
        check_workers(changes["max_processes"], "max_processes")
    if "timeout" in changes:
        changes = {**changes, "timeout": check_timeout(changes["timeout"])}
    if "process_idle" in changes:
        changes = {**changes, "process_idle": parse_duration(changes["process_idle"])}
    return replace(base, **changes)


def set_defaults(**changes: Any) -> Defaults:
    """Change the defaults for the whole program (every thread and task not inside a
    :func:`defaults` block); returns the previous ones. Keywords: ``max_workers``,
    ``max_processes``, ``timeout`` (seconds or ``"5s"``; ``None``: no limit),
    ``process_idle`` (seconds or ``"5m"``).

    Example::

        pipekit.concurrency.set_defaults(max_workers=16, timeout=10)
    """
    global _global
    previous = _global
    _global = _updated(_global, changes)
    return previous


@contextmanager
def defaults(**changes: Any) -> Iterator[Defaults]:
    """Override the defaults inside a ``with`` block (and in the tasks and threads
    started from it: the override lives in a context variable); yields the defaults in
    force. Same keywords as :func:`set_defaults`.

    Example::

        with pipekit.concurrency.defaults(timeout="2s") as d:
            results = pk.parallel_map(ping, hosts)     # each ping: 2 s at most
    """
    value = _updated(current_defaults(), changes)
    token = _override.set(value)
    try:
        yield value
    finally:
        _override.reset(token)
