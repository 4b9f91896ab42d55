"""The process backend of ``parallel_map``: a :class:`~pipekit.WorkerPool` for the call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..workers import WorkerError, WorkerPool, target_spec
from ._result import Result

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
        if not fail_fast:
            for index, value in enumerate(await pool.map(items)):
                out[index] = as_result(value)
            return
        async with pool.imap_unordered(items) as results:
            async for index, value in results:
                result = out[index] = as_result(value)
                if result.error is not None:
                    raise result.error
