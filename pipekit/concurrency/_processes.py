"""The process backend of ``parallel_map`` without reuse (``reuse=False``): a
:class:`~pipekit.WorkerPool` for the call (the warm pools are in ``_pools``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..workers import WorkerPool, target_spec
from ._pools import run_on
from ._result import Result

__all__ = ["map_processes"]


def check_importable(fn: Callable[..., Any]) -> None:
    """Refuse, before any process starts, a function a worker process cannot import by
    name (a lambda, a closure, a bound method...), with the pool's own explanation."""
    try:
        target_spec(fn)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"backend='process' runs fn in worker processes: {exc}") from None


async def map_processes(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int,
    limit: float | None,
    fail_fast: bool,
    out: dict[int, Result[Any]],
) -> None:
    """Run ``fn`` over ``items`` in ``workers`` worker processes, storing each
    :class:`Result` by index in ``out``. The pool kills and replaces a worker whose item
    overruns ``limit`` seconds. With ``fail_fast`` the first failure is raised, and leaving the
    pool kills the workers still busy."""
    check_importable(fn)
    async with WorkerPool(fn, workers, timeout=limit) as pool:
        await run_on(pool, items, fail_fast, out)
