"""Declarative pipelines: stages composed with ``|`` and run on a kernel.

::

    import pipekit as pk
    result = (pk.source(lines) | pk.map(parse) | pk.filter(is_error)
              | pk.thread(lookup, workers=4) | pk.collect()).run()

Every stage becomes one kernel module joined to the next by a bounded in-process pipe,
so backpressure, END and errors behave as everywhere in pipekit. Stages take
``buffer=`` (the bound of their input buffer, in messages), restart options
(``restart=``, ``max_restarts=``, ``backoff=``) and, where it makes sense, ``workers=``
and ``ordered=``. Order is preserved unless a stage says ``ordered=False``.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .adapters.thread import ThreadModule
from .kernel import (
    Kernel,
    MapModule,
    Module,
    ModuleStats,
    Pipe,
    PipeOpener,
    RemoteModule,
    RestartPolicy,
    Topology,
    batch_failure,
    open_kernel,
)

__all__ = [
    "Pipeline",
    "Stage",
    "collect",
    "filter",
    "map",
    "remote",
    "sink",
    "source",
    "thread",
]

SOURCE_BATCH = 256
BULK_BUFFER_BYTES = 4 * 1024 * 1024
"""Byte budget of the buffer after a stage that emits bulk data (a process): its
messages can be megabyte chunks, so a message count alone would not bound memory."""
_DROP = object()


@dataclass(frozen=True)
class _Options:
    buffer: int | None = None
    buffer_bytes: int | None = None
    restart: str | RestartPolicy = "never"
    max_restarts: int = 3
    backoff: float = 0.1


class Stage:
    """One step of a pipeline. Build stages with :func:`source`, :func:`map`, ...;
    compose them with ``|``."""

    role = "transform"  # source, transform or sink
    can_lead = False  # a transform that may also start a pipeline (a command)
    bulk_output = False  # emits possibly large bytes/str chunks (a process)
    joinable = False  # adjacent joinable stages are merged by joined() (OS pipes)

    def __init__(self, label: str, options: _Options) -> None:
        self.label = label
        self.options = options

    def module(self, *, first: bool = False) -> Module:
        """A fresh kernel module for one run of this stage (``first``: it leads the
        pipeline, so it has no input)."""
        raise NotImplementedError

    def joined(self, following: Sequence[Stage]) -> Stage:
        """One stage doing the work of ``self`` and the joinable stages after it."""
        raise NotImplementedError

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        return Pipeline([self]) | other

    def __ror__(self, items: Iterable[Any]) -> Pipeline:
        return source(items) | self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class Pipeline:
    """Stages in order. ``run()`` blocks; ``await arun()`` runs inside trio. Both return
    what the final sink gathered (:func:`collect` gives a list; a pipeline without a
    sink collects its output)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._stats: dict[str, ModuleStats] = {}
        self._kernel: Kernel | None = None
        self._running = False

    @property
    def stats(self) -> dict[str, ModuleStats]:
        """Per-stage statistics by stage name: live during a run, final after it."""
        if self._running and self._kernel is not None:
            return self._kernel.stats()
        return self._stats

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        if isinstance(other, Pipeline):
            return Pipeline(self.stages + other.stages)
        if isinstance(other, Stage):
            return Pipeline([*self.stages, other])
        return NotImplemented

    def __repr__(self) -> str:
        return "Pipeline(" + " | ".join(s.label for s in self.stages) + ")"

    def _validated(self) -> list[Stage]:
        stages: list[Stage] = []
        for stage in self.stages:  # join runs of adjacent raw-mode commands
            if stage.joinable and stages and stages[-1].joinable:
                stages.append(stages.pop().joined([stage]))
            else:
                stages.append(stage)
        if not stages or not (stages[0].role == "source" or stages[0].can_lead):
            raise ValueError("a pipeline must start with a source: pk.source(items) | ...")
        for s in stages[1:]:
            if s.role == "source":
                raise ValueError(f"{s.label} is a source but is not the first stage")
        for s in stages[:-1]:
            if s.role == "sink":
                raise ValueError(f"{s.label} is a sink but is not the last stage")
        if stages[-1].role != "sink":
            stages.append(collect())
        return stages

    def run(self) -> Any:
        """Run to completion in a new trio event loop and return the sink's result.

        Raises :class:`~pipekit.ModuleError` naming the stage that failed."""
        try:
            trio.lowlevel.current_task()
            inside_trio = True
        except RuntimeError:
            inside_trio = False
        if inside_trio:
            raise RuntimeError("Pipeline.run() called inside trio: use 'await pipeline.arun()'")
        return trio.run(self.arun)

    async def arun(
        self,
        *,
        progress: Callable[[dict[str, ModuleStats]], None] | None = None,
        interval: float = 0.5,
    ) -> Any:
        """Run inside trio and return the sink's result. If ``progress`` is given it is
        called with the live per-stage statistics every ``interval`` seconds."""
        stages = self._validated()
        modules = [s.module(first=i == 0) for i, s in enumerate(stages)]
        try:
            async with open_kernel() as k:
                self._kernel = k
                handles = []
                previous: Stage | None = None
                for stage, mod in zip(stages, modules, strict=True):
                    label, n = stage.label, 2
                    while label in k.stats():
                        label, n = f"{stage.label}#{n}", n + 1
                    o = stage.options
                    handles.append(
                        k.add(
                            mod,
                            name=label,
                            restart=o.restart,  # type: ignore[arg-type]
                            max_restarts=o.max_restarts,
                            backoff=o.backoff,
                            capacity=o.buffer,
                            max_bytes=o.buffer_bytes
                            or (BULK_BUFFER_BYTES if previous and previous.bulk_output else None),
                        )
                    )
                    previous = stage
                for a, b in itertools.pairwise(handles):
                    k.connect(a, b)
                self._running = True
                await k.start()
                if progress is not None:
                    with trio.CancelScope() as reporting:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_report, k, progress, interval)
                            await k.join()
                            reporting.cancel()
        finally:
            self._running = False
            if self._kernel is not None:
                self._stats = self._kernel.stats()
            if progress is not None:
                progress(self.stats)
        sink_module = modules[-1]
        return getattr(sink_module, "result", None)

    def topology(self) -> Topology:
        """The kernel topology of the current or last run."""
        if self._kernel is None:
            raise RuntimeError("the pipeline has not run yet")
        return self._kernel.topology()


async def _report(
    k: Kernel, progress: Callable[[dict[str, ModuleStats]], None], interval: float
) -> None:
    while True:
        await trio.sleep(interval)
        progress(k.stats())


def _name(fn: Any) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _options(
    buffer: int | None,
    restart: str | RestartPolicy,
    max_restarts: int,
    backoff: float,
    buffer_bytes: int | None = None,
) -> _Options:
    """Stage options. ``buffer`` bounds the stage's input buffer in messages;
    ``buffer_bytes`` also bounds the total size of ``bytes``/``str`` messages in it
    (default: none, or BULK_BUFFER_BYTES when the previous stage is a process)."""
    if buffer is not None and buffer < 1:
        raise ValueError("buffer must be at least 1")
    if buffer_bytes is not None and buffer_bytes < 1:
        raise ValueError("buffer_bytes must be at least 1")
    return _Options(
        buffer=buffer,
        buffer_bytes=buffer_bytes,
        restart=restart,
        max_restarts=max_restarts,
        backoff=backoff,
    )


# --- sources ------------------------------------------------------------------------


class _SourceModule:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, items: Any, batch: int) -> None:
        self.items = items
        self.batch = batch

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        items = self.items() if callable(self.items) else self.items
        if isinstance(items, AsyncIterable):
            async for item in items:
                await out.send(item)
            return
        chunk: list[Any] = []
        size = self.batch
        for item in items:
            chunk.append(item)
            if len(chunk) >= size:
                await out.send_batch(chunk)
                chunk = []
        if chunk:
            await out.send_batch(chunk)


class _Source(Stage):
    role = "source"

    def __init__(self, items: Any, batch: int, options: _Options) -> None:
        super().__init__(f"source({_name(items)})", options)
        self.items = items
        self.batch = batch

    def module(self, *, first: bool = False) -> Module:
        return _SourceModule(self.items, self.batch)


def source(
    items: Iterable[Any] | AsyncIterable[Any] | Callable[[], Iterable[Any] | AsyncIterable[Any]],
    *,
    batch: int = SOURCE_BATCH,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """A stage that emits ``items``: an iterable, an async iterable, or a callable
    returning one (called afresh on each run, e.g. a generator function). Items of a
    plain iterable are sent in batches of up to ``batch``."""
    if not (isinstance(items, Iterable | AsyncIterable) or callable(items)):
        raise TypeError(
            f"source() needs an iterable, an async iterable or a callable, not {items!r}"
        )
    return _Source(items, batch, _options(None, restart, max_restarts, backoff))


# --- transforms ---------------------------------------------------------------------


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
        self,
        kind: str,
        fn: Callable[[Any], Any],
        workers: int,
        ordered: bool,
        threaded: bool,
        options: _Options,
    ) -> None:
        super().__init__(f"{kind}({_name(fn)})", options)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.kind = kind
        self.fn = fn
        self.workers = workers
        self.ordered = ordered
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
    *,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """Apply ``fn`` to every message. ``async def`` functions run with up to
    ``workers`` calls in flight; a plain function runs on the event loop, or in
    ``workers`` threads when ``workers > 1`` (like :func:`thread`)."""
    return _Transform(
        "map",
        fn,
        workers,
        ordered,
        False,
        _options(buffer, restart, max_restarts, backoff, buffer_bytes),
    )


def filter(
    predicate: Callable[[Any], Any],
    *,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """Keep the messages for which ``predicate`` is true (same execution rules as
    :func:`map`)."""
    return _Transform(
        "filter",
        predicate,
        workers,
        ordered,
        False,
        _options(buffer, restart, max_restarts, backoff, buffer_bytes),
    )


def thread(
    fn: Callable[[Any], Any],
    *,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """Apply a blocking ``fn`` to every message in ``workers`` worker threads, joined to
    the pipeline by thread ports (batched, bounded)."""
    if inspect.iscoroutinefunction(fn):
        raise TypeError("pk.thread() takes a blocking function; use pk.map() for async functions")
    return _Transform(
        "thread",
        fn,
        workers,
        ordered,
        True,
        _options(buffer, restart, max_restarts, backoff, buffer_bytes),
    )


class _Remote(Stage):
    can_lead = True

    def __init__(self, peer: Pipe | PipeOpener, name: str | None, options: _Options) -> None:
        label = name or (peer.name if isinstance(peer, Pipe) else _name(peer))
        super().__init__(f"remote({label})", options)
        self.peer = peer

    def module(self, *, first: bool = False) -> Module:
        return RemoteModule(self.peer, name=self.label, source=first)


def remote(
    peer: Pipe | PipeOpener,
    *,
    name: str | None = None,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """A peer as a stage: messages go to it, its replies come out (see
    :class:`~pipekit.kernel.RemoteModule`). ``peer`` is an open pipe (an accepted
    connection, say) or a function opening one, such as
    ``lambda: tcp.connect(host, port)``, which a restart policy calls again to reconnect.
    Leading a pipeline, the peer is the source."""
    return _Remote(peer, name, _options(buffer, restart, max_restarts, backoff, buffer_bytes))


# --- sinks --------------------------------------------------------------------------


class _SinkModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, fn: Callable[[Any], Any] | None) -> None:
        self.fn = fn
        self.result: Any = [] if fn is None else None

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports["inp"]
        fn = self.fn
        if fn is None:
            gathered: list[Any] = self.result
            async for batch in inp.batches():
                gathered.extend(batch)
        elif inspect.iscoroutinefunction(fn):
            async for batch in inp.batches():
                for msg in batch:
                    await fn(msg)
        else:
            async for batch in inp.batches():
                for msg in batch:
                    fn(msg)


class _Sink(Stage):
    role = "sink"

    def __init__(self, fn: Callable[[Any], Any] | None, options: _Options) -> None:
        super().__init__("collect" if fn is None else f"sink({_name(fn)})", options)
        self.fn = fn

    def module(self, *, first: bool = False) -> Module:
        return _SinkModule(self.fn)


def sink(
    fn: Callable[[Any], Any],
    *,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Stage:
    """Call ``fn`` (plain or ``async``) on every message; the end of a pipeline."""
    return _Sink(fn, _options(buffer, restart, max_restarts, backoff, buffer_bytes))


def collect(*, buffer: int | None = None, buffer_bytes: int | None = None) -> Stage:
    """A sink that gathers every message: ``run()`` returns them as a list."""
    return _Sink(None, _options(buffer, "never", 0, 0.1, buffer_bytes))
