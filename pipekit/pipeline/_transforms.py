"""Transforms: ``map``, ``filter``, ``flat_map`` and ``thread`` stages and the modules
that run them, with per-item error handling (``on_error``, ``retry``, ``timeout``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Unpack

import trio

from ..adapters.thread import ThreadModule
from ..kernel import Module, Pipe, batch_failure
from ._errors import DropMarked, Flatten, ItemErrors, Routed
from ._meter import Meter, perf_counter
from ._settings import ItemStageOptions, StageSettings
from ._stage import Stage, _name

__all__ = ["filter", "flat_map", "map", "thread"]

_DROP = object()


class _AsyncMapModule:
    """An ``async def f(msg)`` applied with up to ``workers`` calls in flight, each
    under ``timeout`` and retried as ``errors.retry`` says."""

    inputs: tuple[str, ...] = ("inp",)

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        workers: int,
        ordered: bool,
        keep: Callable[[Any, Any], Any],
        errors: ItemErrors,
        timeout: float | None = None,
    ) -> None:
        self.fn = fn
        self.workers = workers
        self.ordered = ordered
        self.keep = keep  # (message, result) -> what to emit, or _DROP
        self.errors = errors
        self.timeout = timeout
        self.outputs: tuple[str, ...] = errors.outputs
        self.meter = Meter()

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        limiter = trio.CapacityLimiter(self.workers)
        meter = self.meter
        clock = trio.current_time  # the calls await: time them on trio's clock
        async for batch in inp.batches():
            start = clock()
            results: list[Any] = [_DROP] * len(batch) if self.ordered else []
            failed: list[tuple[int, Any, Exception]] = []
            if self.workers == 1:
                for i, msg in enumerate(batch):
                    await self._one(limiter, i, msg, results, failed)
            else:
                async with trio.open_nursery() as nursery:
                    for i, msg in enumerate(batch):
                        nursery.start_soon(self._one, limiter, i, msg, results, failed)
            meter.busy += clock() - start
            if failed:
                first = min(failed, key=lambda f: f[0])
                meter.fail(meter.taken + first[0], first[1])
            meter.taken += len(batch)
            emitted = [r for r in results if r is not _DROP]
            if emitted:
                await out.send_batch(emitted)
            if failed:
                if self.ordered:
                    failed.sort(key=lambda f: f[0])
                await self.errors.deliver([(m, e) for _, m, e in failed], ports)

    async def _one(
        self,
        limiter: trio.CapacityLimiter,
        i: int,
        msg: Any,
        results: list[Any],
        failed: list[tuple[int, Any, Exception]],
    ) -> None:
        """Process one message into ``results[i]`` (or ``failed``). With
        ``ordered=False`` the order within a batch follows completion."""
        retry = self.errors.retry
        attempt = 0
        while True:
            try:
                async with limiter:
                    if self.timeout is None:
                        r = self.keep(msg, await self.fn(msg))
                    else:
                        with trio.fail_after(self.timeout):
                            r = self.keep(msg, await self.fn(msg))
                break
            except Exception as exc:
                if retry is not None and retry.wants(exc, attempt):
                    attempt += 1
                    await trio.sleep(retry.delay(attempt))
                    continue
                failed.append((i, msg, exc))
                return
        if self.ordered:
            results[i] = r
        elif r is not _DROP:
            results.append(r)


class _GuardedMapModule:
    """A plain ``f(msg)`` on the event loop with per-item error handling: the calls of
    a batch that raised are retried together (after one ``trio.sleep`` per round), the
    batch's results go on in order, then the failures are handled."""

    inputs: tuple[str, ...] = ("inp",)

    def __init__(self, fn: Callable[[Any], Any], errors: ItemErrors) -> None:
        self.fn = fn
        self.errors = errors
        self.outputs: tuple[str, ...] = errors.outputs
        self.meter = Meter()

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        fn, retry = self.fn, self.errors.retry
        hole = _HOLE
        meter = self.meter
        clock = trio.current_time  # retries wait on trio's clock
        async for batch in inp.batches():
            start = clock()
            results: list[Any] = []
            append = results.append
            failed: list[tuple[int, Exception]] = []
            for msg in batch:
                try:
                    append(fn(msg))
                except Exception as exc:
                    failed.append((len(results), exc))
                    append(hole)
            attempt = 0
            while failed and retry is not None:
                again = [(i, e) for i, e in failed if retry.wants(e, attempt)]
                if not again:
                    break
                attempt += 1
                await trio.sleep(retry.delay(attempt))
                still = [(i, e) for i, e in failed if not retry.wants(e, attempt - 1)]
                for i, _ in again:
                    try:
                        results[i] = fn(batch[i])
                    except Exception as exc:
                        still.append((i, exc))
                failed = sorted(still, key=lambda f: f[0])
            meter.busy += clock() - start
            if failed:
                meter.fail(meter.taken + failed[0][0], batch[failed[0][0]])
            meter.taken += len(batch)
            if failed:
                results = [r for r in results if r is not hole]
            if results:
                await out.send_batch(results)
            if failed:
                await self.errors.deliver([(batch[i], e) for i, e in failed], ports)


_HOLE = object()


class _LoopModule:
    """A plain function on the event loop, a batch at a time: the floor's own
    :class:`~pipekit.kernel.MapModule`, which also times the calls and notes the
    message that failed. Order is kept; if the function raises, the other messages of
    the batch still go on before the stage fails. A subclass writes only the per-message
    loop (:meth:`apply`), the hot path, with no call per message but ``fn``'s."""

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn
        self.meter = Meter()

    def apply(self, batch: Sequence[Any], errors: list[Exception]) -> list[Any]:
        """What ``batch`` gives; each exception goes to ``errors``, and the first
        one's message and index to ``self.meter``."""
        raise NotImplementedError

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        meter = self.meter
        apply = self.apply
        async for batch in inp.batches():
            start = perf_counter()
            errors: list[Exception] = []
            results = apply(batch, errors)
            meter.busy += perf_counter() - start
            meter.taken += len(batch)
            if results:
                await out.send_batch(results)
            if errors:
                raise batch_failure(errors)


class _MapModule(_LoopModule):
    """``pk.map(fn)``: ``fn(msg)`` for each message."""

    def apply(self, batch: Sequence[Any], errors: list[Exception]) -> list[Any]:
        fn = self.fn
        results: list[Any] = []
        append = results.append
        for msg in batch:
            try:
                append(fn(msg))
            except Exception as exc:
                if not errors:  # every message before it gave a result: its index
                    self.meter.fail(self.meter.taken + len(results), msg)
                errors.append(exc)
        return results


class _FilterModule(_LoopModule):
    """``pk.filter(predicate)``: the messages for which ``predicate(msg)`` is true."""

    def apply(self, batch: Sequence[Any], errors: list[Exception]) -> list[Any]:
        pred = self.fn
        kept: list[Any] = []
        append = kept.append
        for msg in batch:
            try:
                if pred(msg):
                    append(msg)
            except Exception as exc:
                if not errors:
                    self.meter.fail_in(batch, msg)
                errors.append(exc)
        return kept


class _FlatMapModule(_LoopModule):
    """``pk.flat_map(fn)``: every item of the iterable ``fn(msg)``, in order."""

    def apply(self, batch: Sequence[Any], errors: list[Exception]) -> list[Any]:
        fn = self.fn
        results: list[Any] = []
        extend = results.extend
        for msg in batch:
            try:
                extend(fn(msg))
            except Exception as exc:
                if not errors:
                    self.meter.fail_in(batch, msg)
                errors.append(exc)
        return results


class _Reshaped:
    """A module whose ``out`` port is seen through ``wrap`` (and ``Routed`` for
    :class:`Failed` markers from worker threads), measured by ``meter`` (by default the
    inner module's)."""

    def __init__(
        self,
        inner: Module,
        wrap: Callable[[Pipe], Pipe] | None,
        errors: ItemErrors | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.outputs = errors.outputs if errors is not None else inner.outputs
        self.wrap = wrap
        self.errors = errors
        self.meter: Meter | None = meter if meter is not None else getattr(inner, "meter", None)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        if self.wrap is not None:
            out = self.wrap(out)
        if self.errors is not None:
            out = Routed(out, self.errors, ports)
        await self.inner.run({**ports, "out": out})


def _marker(pred: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``msg -> msg`` if ``pred(msg)`` else the ``_DROP`` marker."""

    def mark(msg: Any) -> Any:
        return msg if pred(msg) else _DROP

    return mark


def _keep_all(msg: Any, result: Any) -> Any:
    return result


def _keep_if_true(msg: Any, keep: Any) -> Any:
    return msg if keep else _DROP


def _drop_marked(out: Pipe) -> Pipe:
    return DropMarked(out, _DROP)


def _in_thread(
    fn: Callable[[Any], Any], limiter: trio.CapacityLimiter
) -> Callable[[Any], Awaitable[Any]]:
    """``fn`` as an async function running in a thread that a cancellation (a timeout)
    abandons: Python cannot stop a thread, so the call runs on and its result is
    dropped."""

    async def call(msg: Any) -> Any:
        return await trio.to_thread.run_sync(fn, msg, abandon_on_cancel=True, limiter=limiter)

    return call


class _Transform(Stage):
    def __init__(
        self, kind: str, fn: Callable[[Any], Any], threaded: bool, options: StageSettings
    ) -> None:
        super().__init__(f"{kind}({_name(fn)})", options)
        if inspect.isasyncgenfunction(fn) and kind == "flat_map":
            fn = _collected(fn)
        self.kind = kind
        self.fn = fn
        self.workers = options.workers
        self.ordered = options.ordered
        self.threaded = threaded
        self.is_async = inspect.iscoroutinefunction(fn)
        self.errors = ItemErrors(options.on_error, options.retry)
        on_loop = not self.is_async and not threaded and self.workers == 1
        if options.timeout is not None and on_loop:
            raise ValueError(
                f"{self.label}: timeout= cannot stop a plain function running on the event "
                "loop; make it 'async def', run it in threads (pk.thread: a call that times "
                "out is abandoned and its thread runs on), or in processes "
                "(pk.run(..., mode='item'): the process is killed)"
            )

    def branches(self) -> list[tuple[str, list[Stage]]]:
        return self.errors.branches()

    def module(self, *, first: bool = False) -> Module:
        fn, kind, o = self.fn, self.kind, self.options
        wrap: Callable[[Pipe], Pipe] | None = None
        if kind == "flat_map":
            wrap = Flatten
        keep: Callable[[Any, Any], Any] = _keep_all
        if kind == "filter":
            keep = _keep_if_true
        if self.is_async or o.timeout is not None:
            call = fn
            if not self.is_async:  # threads, with a per-item timeout
                call = _in_thread(fn, trio.CapacityLimiter(math.inf))
            mod: Module = _AsyncMapModule(
                call, self.workers, self.ordered, keep, self.errors, o.timeout
            )
            return _Reshaped(mod, wrap) if wrap is not None else mod
        on_loop = not (self.threaded or self.workers > 1)
        if on_loop and not o.per_item and kind != "map":
            return _FilterModule(fn) if kind == "filter" else _FlatMapModule(fn)
        if kind == "filter":
            fn = _marker(fn)
            wrap = _drop_marked
        if not on_loop:
            routed = not self.errors.raises
            if o.retry is not None or routed:
                fn = self.errors.blocking(fn)
            # The threads' busy time is derived (not timed); the meter learns the
            # message a failure was on.
            meter = Meter(timed=False)
            mod = ThreadModule(
                fn,
                mode="map",
                workers=self.workers,
                ordered=self.ordered,
                name=self.label,
                tally=meter,
            )
            return _Reshaped(mod, wrap, self.errors if routed else None, meter)
        mod = _GuardedMapModule(fn, self.errors) if o.per_item else _MapModule(fn)
        return _Reshaped(mod, wrap) if wrap is not None else mod


def _collected(fn: Callable[[Any], Any]) -> Callable[[Any], Awaitable[list[Any]]]:
    """An async generator function as an ``async def`` returning the list it yields."""

    async def collect(msg: Any) -> list[Any]:
        return [y async for y in fn(msg)]

    collect.__name__ = getattr(fn, "__name__", "flat_map")
    return collect


def _settings(caller: str, timeout: float | None, options: Any) -> StageSettings:
    return StageSettings.from_options(caller, options, ItemStageOptions, timeout=timeout)


def map(
    fn: Callable[[Any], Any],
    *,
    timeout: float | None = None,
    **options: Unpack[ItemStageOptions],
) -> Stage:
    """Apply ``fn`` to every message. ``async def`` functions run with up to
    ``workers`` calls in flight; a plain function runs on the event loop, or in
    ``workers`` threads when ``workers > 1`` (like :func:`thread`).

    Per item: ``timeout`` (seconds; ``async def`` or threaded functions only),
    ``retry`` (a number of retries or a :class:`~pipekit.Retry`) and ``on_error``
    (``"raise"``, ``"skip"``, ``fn(item, exc)`` or a dead-letter stage). Other keywords:
    :class:`~pipekit.pipeline.ParallelStageOptions`.

    Example::

        pk.source(["1", "x", "3"]) | pk.map(int, on_error="skip")   # -> [1, 3]
    """
    return _Transform("map", fn, False, _settings("map", timeout, options))


def filter(
    predicate: Callable[[Any], Any],
    *,
    timeout: float | None = None,
    **options: Unpack[ItemStageOptions],
) -> Stage:
    """Keep the messages for which ``predicate`` is true (same execution rules and
    keywords as :func:`map`).

    Example::

        pk.source(range(10)) | pk.filter(lambda x: x % 3 == 0)      # -> [0, 3, 6, 9]
    """
    return _Transform("filter", predicate, False, _settings("filter", timeout, options))


def flat_map(
    fn: Callable[[Any], Iterable[Any] | Awaitable[Iterable[Any]] | AsyncIterable[Any]],
    *,
    timeout: float | None = None,
    **options: Unpack[ItemStageOptions],
) -> Stage:
    """Emit every item of the iterable ``fn(msg)`` returns (none, one or many per
    message), in order. ``fn`` may be a plain function, an ``async def`` function
    returning an iterable, or an async generator function. Same execution rules and
    keywords as :func:`map`.

    Example::

        pk.source(["a b", "c"]) | pk.flat_map(str.split)           # -> ['a', 'b', 'c']
    """
    return _Transform("flat_map", fn, False, _settings("flat_map", timeout, options))


def thread(
    fn: Callable[[Any], Any],
    *,
    timeout: float | None = None,
    **options: Unpack[ItemStageOptions],
) -> Stage:
    """Apply a blocking ``fn`` to every message in ``workers`` worker threads, joined to
    the pipeline by thread ports (batched, bounded). The threads take chunks of
    about 2 ms of work (sized from the measured time per message: cheap messages by
    the hundred, slow ones alone, so every thread has work); when a call raises, no
    thread takes another chunk and the stage fails within milliseconds, naming the
    first failing message in input order (``ModuleError.item_index``, ``item``). Per-item
    keywords as for :func:`map`; a call that exceeds ``timeout`` fails with
    :class:`trio.TooSlowError` and is abandoned (Python cannot stop a thread: it runs
    on, its result dropped).

    Example::

        pk.source(paths) | pk.thread(read_file, workers=4, retry=2, on_error="skip")
    """
    if inspect.iscoroutinefunction(fn):
        raise TypeError("pk.thread() takes a blocking function; use pk.map() for async functions")
    return _Transform("thread", fn, True, _settings("thread", timeout, options))
