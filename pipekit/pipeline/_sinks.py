"""Sinks: the stage that ends a pipeline, calling a function on or gathering every message."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Unpack

import trio

from ..kernel import Module, Pipe
from ._meter import Meter, perf_counter
from ._settings import StageOptions, StageSettings, _SinkOptions
from ._stage import Stage, _name

__all__ = ["collect", "reduce", "sink"]


class _SinkModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, fn: Callable[[Any], Any] | None) -> None:
        self.fn = fn
        self.result: Any = [] if fn is None else None
        self.meter = Meter()

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports["inp"]
        fn = self.fn
        meter = self.meter
        if fn is None:
            gathered: list[Any] = self.result
            async for batch in inp.batches():
                start = perf_counter()
                gathered.extend(batch)
                meter.busy += perf_counter() - start
                meter.taken += len(batch)
            return
        is_async = inspect.iscoroutinefunction(fn)
        clock = trio.current_time if is_async else perf_counter  # an async fn may sleep
        async for batch in inp.batches():
            start = clock()
            msg: Any = None
            try:
                if is_async:
                    for msg in batch:
                        await fn(msg)
                else:
                    for msg in batch:
                        fn(msg)
            except Exception:
                meter.fail_in(batch, msg)
                raise
            finally:
                meter.busy += clock() - start
                meter.taken += len(batch)


class _Sink(Stage):
    role = "sink"

    def __init__(self, fn: Callable[[Any], Any] | None, options: StageSettings) -> None:
        super().__init__("collect" if fn is None else f"sink({_name(fn)})", options)
        self.fn = fn

    def module(self, *, first: bool = False) -> Module:
        return _SinkModule(self.fn)


def sink(fn: Callable[[Any], Any], **options: Unpack[StageOptions]) -> Stage:
    """Call ``fn`` (plain or ``async``) on every message, in order, one at a time; the
    end of a pipeline (``run()`` returns None).

    Example::

        (pk.source(range(3)) | pk.sink(print)).run()              # prints 0, 1, 2
    """
    return _Sink(fn, StageSettings.from_options("sink", options))


def collect(**options: Unpack[_SinkOptions]) -> Stage:
    """A sink that gathers every message: ``run()`` returns them as a list. Of the
    :class:`StageOptions` it takes ``name`` and the buffer keywords (it is never
    restarted).

    Example::

        (pk.source("ab") | pk.map(str.upper) | pk.collect()).run()   # -> ['A', 'B']
    """
    settings = StageSettings.from_options("collect", options, _SinkOptions, max_restarts=0)
    return _Sink(None, settings)


class _ReduceModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, fn: Callable[[Any, Any], Any], initial: Any) -> None:
        self.fn = fn
        self.initial = initial
        self.result: Any = initial
        self.meter = Meter()

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        fn = self.fn
        meter = self.meter
        acc = self.initial  # a restarted run starts again, as its input does
        async for batch in ports["inp"].batches():
            start = perf_counter()
            msg: Any = None
            try:
                for msg in batch:
                    acc = fn(acc, msg)
            except Exception:
                meter.fail_in(batch, msg)
                raise
            finally:
                meter.busy += perf_counter() - start
                meter.taken += len(batch)
            self.result = acc


class _Reduce(Stage):
    role = "sink"

    def __init__(self, fn: Callable[[Any, Any], Any], initial: Any, options: StageSettings):
        super().__init__(f"reduce({_name(fn)})", options)
        self.fn = fn
        self.initial = initial

    def module(self, *, first: bool = False) -> Module:
        return _ReduceModule(self.fn, self.initial)


def reduce(fn: Callable[[Any, Any], Any], initial: Any, **options: Unpack[_SinkOptions]) -> Stage:
    """A sink that folds every message into one value, ``acc = fn(acc, message)``
    starting from ``initial`` (as :func:`functools.reduce`): ``run()`` returns the
    final value. Of the :class:`StageOptions` it takes ``name`` and the buffer keywords
    (it is never restarted: what it folded would be folded twice).

    Example::

        (pk.source(range(5)) | pk.reduce(lambda total, n: total + n, 0)).run()   # -> 10
    """
    settings = StageSettings.from_options("reduce", options, _SinkOptions, max_restarts=0)
    return _Reduce(fn, initial, settings)
