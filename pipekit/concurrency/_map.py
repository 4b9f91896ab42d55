"""``parallel_map`` and ``parallel_filter``: a function over a list, many at once,
results in input order, errors as values."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import trio

from ..kernel.scopes import open_plain_nursery
from ._calls import blocking_entry, call_async, check_callable, is_async
from ._defaults import check_timeout, check_workers, current_defaults
from ._pools import current_pools
from ._processes import check_importable, map_processes
from ._result import Result
from ._service import map_blocking, map_shared
from ._threads import map_threads

__all__ = ["Backend", "aparallel_filter", "aparallel_map", "parallel_filter", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

Backend = Literal["task", "thread", "process"]
BACKENDS = ("task", "thread", "process")


def _backend(fn: Callable[..., Any], backend: str | None, name: str) -> Backend:
    check_callable(fn, name)
    asynchronous = is_async(fn)
    if backend is None:
        return "task" if asynchronous else "thread"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'task', 'thread' or 'process', not {backend!r}")
    if backend == "task" and not asynchronous:
        raise TypeError(
            f"backend='task' runs async functions (async def) as trio tasks, and "
            f"{_name(fn)} is not one: use backend='thread' (or 'process') for it"
        )
    if backend == "process" and not asynchronous:
        check_importable(fn)
    if backend != "task" and asynchronous:
        raise TypeError(
            f"{_name(fn)} is an async function: backend={backend!r} calls plain "
            "functions; use backend='task'"
        )
    return backend  # type: ignore[return-value]


def _name(fn: Callable[..., Any]) -> str:
    return repr(getattr(fn, "__qualname__", fn))


def _iterate(items: Any, name: str) -> Iterator[Any]:
    try:
        return iter(items)
    except TypeError:
        raise TypeError(f"{name}() takes an iterable of items, not {items!r}") from None


@dataclass(slots=True)
class _Plan:
    """A checked call: what runs, how many at once, and where its results go."""

    fn: Callable[[Any], Any]
    backend: Backend
    items: Iterable[Any]
    workers: int
    seconds: float | None
    fail_fast: bool
    reuse: bool
    idle: float
    need: int  # workers this call can use (its item count, if known, up to workers)
    out: dict[int, Result[Any]] = field(default_factory=dict)

    def results(self) -> list[Result[Any]]:
        return [self.out[i] for i in range(len(self.out))]


def _plan(
    name: str,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    max_workers: int | None,
    per_item: float | str | None,
    backend: str | None,
    fail_fast: bool,
    reuse: bool,
) -> _Plan | None:
    """Check a call's arguments against the defaults in force; None if there are no
    items (a sized iterable of length 0)."""
    chosen = _backend(fn, backend, name)
    if not isinstance(fail_fast, bool):
        raise TypeError(f"fail_fast must be True or False, not {fail_fast!r}")
    if not isinstance(reuse, bool):
        raise TypeError(f"reuse must be True or False, not {reuse!r}")
    settings = current_defaults()
    if max_workers is None:
        workers = settings.processes() if chosen == "process" else settings.max_workers
    else:
        workers = check_workers(max_workers, "max_workers")
    seconds = check_timeout(settings.timeout if per_item is None else per_item)
    iterator = _iterate(items, name)
    reuse = reuse and chosen == "process"
    need = workers
    if isinstance(items, Sized):  # a lazy iterable has no len()
        if not len(items):
            return None
        need = min(workers, len(items))
        if not reuse:
            workers = need
    # A list goes as it is: a pool slices it as workers take items.
    feed = items if type(items) is list and chosen == "process" else iterator
    idle = settings.process_idle
    return _Plan(fn, chosen, feed, workers, seconds, fail_fast, reuse, idle, need)


async def _execute(plan: _Plan) -> list[Result[Any]]:
    fn, workers, seconds, fail_fast, out = (
        plan.fn,
        plan.workers,
        plan.seconds,
        plan.fail_fast,
        plan.out,
    )
    if plan.backend == "process":
        if not plan.reuse:
            await map_processes(fn, plan.items, workers, seconds, fail_fast, out)
        elif (pools := current_pools()) is not None:
            sizes = (workers, plan.need)
            await pools.map(fn, plan.items, sizes, seconds, fail_fast, plan.idle, out)
        else:
            sizes = (workers, plan.need)
            await map_shared(fn, plan.items, sizes, seconds, fail_fast, plan.idle, out)
    elif plan.backend == "thread":
        await map_threads(fn, enumerate(plan.items), workers, seconds, fail_fast, out)
    else:
        await _map_tasks(fn, enumerate(plan.items), workers, seconds, fail_fast, out)
    return plan.results()


def _execute_blocking(plan: _Plan | None) -> list[Result[Any]]:
    """Run a planned call from a script: on the program's warm process pools directly
    (no trio loop of its own), else in a trio loop of its own."""
    if plan is None:
        return []
    if plan.reuse:
        map_blocking(
            plan.fn,
            plan.items,
            (plan.workers, plan.need),
            plan.seconds,
            plan.fail_fast,
            plan.idle,
            plan.out,
        )
        return plan.results()
    return trio.run(_execute, plan)


async def _run(
    name: str,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    max_workers: int | None,
    per_item: float | str | None,
    backend: str | None,
    fail_fast: bool,
    reuse: bool,
) -> list[Result[Any]]:
    plan = _plan(name, fn, items, max_workers, per_item, backend, fail_fast, reuse)
    return [] if plan is None else await _execute(plan)


async def _map_tasks(
    fn: Callable[[Any], Any],
    items: Iterator[tuple[int, Any]],
    workers: int,
    limit: float | None,
    fail_fast: bool,
    out: dict[int, Result[Any]],
) -> None:
    """``workers`` trio tasks, each taking the next item when it is free."""
    failures: list[BaseException] = []
    async with open_plain_nursery() as nursery:

        async def worker() -> None:
            for index, item in items:  # shared: next() never awaits, so no two take one
                result = out[index] = await call_async(fn, (item,), limit)
                if fail_fast and result.error is not None:
                    failures.append(result.error)
                    nursery.cancel_scope.cancel()
                    return

        for _ in range(workers):
            nursery.start_soon(worker)
    if failures:
        raise failures[0]


async def aparallel_map(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    timeout: float | str | None = None,  # noqa: ASYNC109 - per item, not for the call
    backend: Backend | None = None,
    fail_fast: bool = False,
    reuse: bool = True,
) -> list[Result[Any]]:
    """:func:`parallel_map` inside trio: ``await pk.aparallel_map(fn, items, ...)``.

    Example::

        async def main():
            results = await pk.aparallel_map(fetch, urls, max_workers=20, timeout=5)
            pages = [r.value for r in results if r.ok]
    """
    return await _run("aparallel_map", fn, items, max_workers, timeout, backend, fail_fast, reuse)


def parallel_map(
    fn: Callable[[T], Any],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    timeout: float | str | None = None,
    backend: Backend | None = None,
    fail_fast: bool = False,
    reuse: bool = True,
) -> list[Result[Any]]:
    """Call ``fn`` on every item, up to ``max_workers`` at once; return one
    :class:`Result` per item, in input order. Blocks: for scripts (inside trio, use
    ``await`` :func:`aparallel_map`; calling this one there raises ``RuntimeError``).

    - ``backend``: ``"task"`` (an ``async def`` function, run as trio tasks),
      ``"thread"`` (a plain function, run in threads) or ``"process"`` (a module-level
      function, run in a :class:`~pipekit.WorkerPool`; items and results travel as
      msgpack values). Default: ``"task"`` for async functions, else ``"thread"``.
    - ``reuse`` (process backend): keep the pool's workers warm for the next call with
      the same function, ``max_workers`` and ``timeout`` (default); they stop after
      ``process_idle`` seconds unused (defaults: 60), at :func:`shutdown_pools` and at
      the interpreter's exit. ``reuse=False``: a pool for this call only.
    - ``max_workers``: how many at once (default: ``max_workers`` of the defaults, 100,
      or one process per CPU for ``"process"``).
    - ``timeout``: seconds (or ``"5s"``) per item; default: that of the defaults (none).
      An item that overruns it gets a ``TimeoutError`` result. Tasks are cancelled and
      worker processes killed (and replaced) at the deadline; a thread cannot be stopped,
      so its item runs to its end and its result is then the ``TimeoutError``.
    - Errors are values: an item whose call raised gets a ``Result`` with that
      ``error``; the others go on. ``fail_fast=True`` instead stops everything at the
      first failure (tasks cancelled, threads stop before their next item, processes
      killed: a warm pool with items still running closes) and raises it.

    ``items`` may be any iterable, also a lazy one: it is pulled as workers are free.

    Example::

        results = pk.parallel_map(requests.get, urls, max_workers=20, timeout=10)
        for url, r in zip(urls, results):
            print(url, r.value.status_code if r.ok else r.error)
    """
    blocking_entry("parallel_map", "await pk.aparallel_map(...)")
    plan = _plan("parallel_map", fn, items, max_workers, timeout, backend, fail_fast, reuse)
    return _execute_blocking(plan)


async def aparallel_filter(
    pred: Callable[[T], Any],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    timeout: float | str | None = None,  # noqa: ASYNC109 - per item, not for the call
    backend: Backend | None = None,
    fail_fast: bool = False,
    reuse: bool = True,
) -> list[Result[T]]:
    """:func:`parallel_filter` inside trio: ``await aparallel_filter(pred, items, ...)``.

    Example::

        kept = await pipekit.concurrency.aparallel_filter(is_alive, hosts, timeout=2)
    """
    kept, feed = _filter_feed(items, "aparallel_filter")
    verdicts = await _run(
        "aparallel_filter", pred, feed, max_workers, timeout, backend, fail_fast, reuse
    )
    return _kept(kept, verdicts)


def _filter_feed(items: Iterable[T], name: str) -> tuple[list[T], Iterable[T]]:
    """The items to give the predicate, and the list that holds each one given (a lazy
    iterable's items are kept as they are pulled)."""
    source = _iterate(items, name)
    if hasattr(items, "__len__"):
        kept = list(source)
        return kept, kept
    pulled: list[T] = []

    def remembered() -> Iterator[T]:
        for item in source:
            pulled.append(item)
            yield item

    return pulled, remembered()


def _kept(kept: list[T], verdicts: list[Result[Any]]) -> list[Result[T]]:
    return [
        Result(item) if verdict.ok else Result(error=verdict.error)
        for item, verdict in zip(kept, verdicts, strict=True)
        if not verdict.ok or verdict.value
    ]


def parallel_filter(
    pred: Callable[[T], Any],
    items: Iterable[T],
    *,
    max_workers: int | None = None,
    timeout: float | str | None = None,
    backend: Backend | None = None,
    fail_fast: bool = False,
    reuse: bool = True,
) -> list[Result[T]]:
    """The items for which ``pred(item)`` is true, in input order, with ``pred`` called
    as :func:`parallel_map` calls its function (same keywords). Each kept item comes as
    ``Result(item)``; an item whose ``pred`` failed (or timed out) stays in its place as
    an error ``Result``, so no failure is lost. Blocks: inside trio use
    ``await pipekit.concurrency.aparallel_filter(...)``.

    Example::

        big = pk.parallel_filter(lambda p: p.stat().st_size > 10**6, paths)
        print([r.unwrap() for r in big])        # raises the first error, if any
    """
    blocking_entry("parallel_filter", "await pipekit.concurrency.aparallel_filter(...)")
    kept, feed = _filter_feed(items, "parallel_filter")
    plan = _plan("parallel_filter", pred, feed, max_workers, timeout, backend, fail_fast, reuse)
    return _kept(kept, _execute_blocking(plan))
