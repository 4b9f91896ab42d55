"""The process backend of ``parallel_map``: a :class:`~pipekit.WorkerPool` for the call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..workers import WorkerError, WorkerPool
from ._result import Result
from ._target import process_target

__all__ = ["map_processes"]


def as_result(value: Any) -> Result[Any]:
    """A pool result as a :class:`Result`: a ``timeout`` :class:`WorkerError` becomes a
    ``TimeoutError`` (the worker error as its cause), any other stays itself."""
    if not isinstance(value, WorkerError):
        return Result(value)
    if value.kind == "timeout":
        error = TimeoutError(value.message)
        error.__cause__ = value
        return Result(error=error)
    return Result(error=value)


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
    target, env = process_target(fn)
    async with WorkerPool(target, workers, timeout=limit, env=env) as pool:
        if not fail_fast:
            for index, value in enumerate(await pool.map(items)):
                out[index] = as_result(value)
            return
        async with pool.imap_unordered(items) as results:
            async for index, value in results:
                result = out[index] = as_result(value)
                if result.error is not None:
                    raise result.error
