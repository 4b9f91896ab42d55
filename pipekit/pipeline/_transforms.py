"""Transforms: ``map``, ``filter`` and ``thread`` stages and the modules that run them."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Unpack

import trio

from ..adapters.thread import ThreadModule
from ..kernel import MapModule, Module, Pipe, batch_failure
from ._settings import ParallelStageOptions, StageSettings
from ._stage import Stage, _name

__all__ = ["filter", "map", "thread"]

_DROP = object()


class _AsyncMapModule:
    """An ``async def f(msg)`` applied with up to ``workers`` calls in flight."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        workers: int,
        ordered: bool,
        keep: Callable[[Any, Any], Any],
    ) -> None:
        self.fn = fn
        self.workers = workers
        self.ordered = ordered
        self.keep = keep  # (message, result) -> what to emit, or _DROP

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        limiter = trio.CapacityLimiter(self.workers)
        async for batch in inp.batches():
            results: list[Any] = [_DROP] * len(batch)
            errors: list[Exception] = []
            if self.workers == 1:
                for i, msg in enumerate(batch):
                    await self._one(limiter, i, msg, results, errors)
            else:
                async with trio.open_nursery() as nursery:
                    for i, msg in enumerate(batch):
                        nursery.start_soon(self._one, limiter, i, msg, results, errors)
            emitted = [r for r in results if r is not _DROP]
            if emitted:
                await out.send_batch(emitted)
            if errors:
                raise batch_failure(errors)

    async def _one(
        self,
        limiter: trio.CapacityLimiter,
        i: int,
        msg: Any,
        results: list[Any],
        errors: list[Exception],
    ) -> None:
        """Process one message into ``results[i]`` (or ``errors``). With
        ``ordered=False`` the order within a batch follows completion."""
        async with limiter:
            try:
                r = self.keep(msg, await self.fn(msg))
            except Exception as exc:
                errors.append(exc)
                return
        if self.ordered:
            results[i] = r
        elif r is not _DROP:
            results.append(r)


def _marker(pred: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``msg -> msg`` if ``pred(msg)`` else the ``_DROP`` marker."""

    def mark(msg: Any) -> Any:
        return msg if pred(msg) else _DROP

    return mark


class _FilterModule(MapModule):
    """A predicate on the event loop: one pass, failures handled like :class:`MapModule`."""

    def __init__(self, predicate: Callable[[Any], Any]) -> None:
        super().__init__(_marker(predicate))

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        await super().run({**ports, "out": _DropFilter(ports["out"])})


class _Transform(Stage):
    def __init__(
        self, kind: str, fn: Callable[[Any], Any], threaded: bool, options: StageSettings
    ) -> None:
        super().__init__(f"{kind}({_name(fn)})", options)
        self.kind = kind
        self.fn = fn
        self.workers = options.workers
        self.ordered = options.ordered
        self.threaded = threaded

    def module(self, *, first: bool = False) -> Module:
        fn = self.fn
        if self.kind == "filter":
            if inspect.iscoroutinefunction(fn):
                return _AsyncMapModule(
                    fn, self.workers, self.ordered, lambda m, keep: m if keep else _DROP
                )
            if self.threaded or self.workers > 1:
                return _ThreadFilter(fn, self.workers, self.ordered, self.label)
            return _FilterModule(fn)
        if inspect.iscoroutinefunction(fn):
            return _AsyncMapModule(fn, self.workers, self.ordered, lambda m, r: r)
        if self.threaded or self.workers > 1:
            return ThreadModule(
                fn, mode="map", workers=self.workers, ordered=self.ordered, name=self.label
            )
        return MapModule(fn)


class _ThreadFilter(ThreadModule):
    """A predicate in worker threads."""

    def __init__(self, pred: Callable[[Any], Any], workers: int, ordered: bool, name: str) -> None:
        super().__init__(_marker(pred), mode="map", workers=workers, ordered=ordered, name=name)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        await super().run({**ports, "out": _DropFilter(out)})


class _DropFilter(Pipe):
    """Wraps an output pipe and drops the ``_DROP`` marker."""

    def __init__(self, inner: Pipe) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, value: Any) -> None:
        if value is not _DROP:
            await self.inner.send(value)
        else:
            await trio.lowlevel.checkpoint()

    async def send_batch(self, values: Sequence[Any]) -> None:
        kept = [v for v in values if v is not _DROP]
        if kept:
            await self.inner.send_batch(kept)
        else:
            await trio.lowlevel.checkpoint()

    async def receive(self) -> Any:
        return await self.inner.receive()

    async def end(self) -> None:
        await self.inner.end()

    async def fail(self, exc: BaseException) -> None:
        await self.inner.fail(exc)

    async def aclose(self) -> None:
        await self.inner.aclose()

    @property
    def stats(self) -> Any:
        return self.inner.stats


def map(
    fn: Callable[[Any], Any],
    **options: Unpack[ParallelStageOptions],
) -> Stage:
    """Apply ``fn`` to every message. ``async def`` functions run with up to
    ``workers`` calls in flight; a plain function runs on the event loop, or in
    ``workers`` threads when ``workers > 1`` (like :func:`thread`). Keywords:
    :class:`ParallelStageOptions`."""
    settings = StageSettings.from_options("map", options, ParallelStageOptions)
    return _Transform("map", fn, False, settings)


def filter(
    predicate: Callable[[Any], Any],
    **options: Unpack[ParallelStageOptions],
) -> Stage:
    """Keep the messages for which ``predicate`` is true (same execution rules as
    :func:`map`)."""
    settings = StageSettings.from_options("filter", options, ParallelStageOptions)
    return _Transform("filter", predicate, False, settings)


def thread(
    fn: Callable[[Any], Any],
    **options: Unpack[ParallelStageOptions],
) -> Stage:
    """Apply a blocking ``fn`` to every message in ``workers`` worker threads, joined to
    the pipeline by thread ports (batched, bounded)."""
    if inspect.iscoroutinefunction(fn):
        raise TypeError("pk.thread() takes a blocking function; use pk.map() for async functions")
    settings = StageSettings.from_options("thread", options, ParallelStageOptions)
    return _Transform("thread", fn, True, settings)
