"""The process backend of ``parallel_map``: the function's target, a pool's results as
:class:`Result` values, one call's items through a pool, and a
:class:`~pipekit.WorkerPool` for one call (``reuse=False``; warm pools: ``_pools``)."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ..workers import WorkerError, WorkerPool, target_spec
from ._result import Result

__all__ = ["as_result", "check_importable", "map_processes", "run_on"]


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


async def run_on(
    pool: WorkerPool, items: Iterable[Any], fail_fast: bool, out: dict[int, Result[Any]]
) -> None:
    """One call's items through ``pool``: each :class:`Result` stored by index in
    ``out``; with ``fail_fast`` the first failure is raised (the rest are dropped)."""
    if not fail_fast:
        for index, value in enumerate(await pool.map(items)):
            out[index] = as_result(value)
        return
    async with pool.imap_unordered(items) as results:
        async for index, value in results:
            result = out[index] = as_result(value)
            if result.error is not None:
                raise result.error


_specs: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()
"""Each function's target spec, found once (finding it costs ~0.7 ms: a warm call is
a few times that)."""


def check_importable(fn: Callable[..., Any]) -> str:
    """The name worker processes import ``fn`` by (``"module:function"``); refuses,
    before any process starts, a function they cannot import by name (a lambda, a
    closure, a bound method...), with the pool's own explanation."""
    try:
        return _specs[fn]
    except (KeyError, TypeError):  # TypeError: no weak reference to it
        pass
    try:
        spec = target_spec(fn)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"backend='process' runs fn in worker processes: {exc}") from None
    with contextlib.suppress(TypeError):
        _specs[fn] = spec
    return spec


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
