"""The pipeline: stages in order, validated, wired on a kernel and run."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any

import trio

from ..kernel import (
    Kernel,
    Lane,
    LocalPipe,
    Module,
    ModuleError,
    ModuleStats,
    Pipe,
    PortRef,
    Topology,
    open_kernel,
)
from ..kernel.scopes import open_plain_nursery
from ._iterate import PipelineIterator, iterate_async
from ._meter import Meter, short_repr
from ._operators import StopsUpstream, take
from ._progress import ProgressDisplay
from ._sinks import collect
from ._stage import Stage

__all__ = ["BULK_BUFFER_BYTES", "Pipeline", "require_trio"]

BULK_BUFFER_BYTES = 4 * 1024 * 1024
"""Byte budget of the buffer after a stage that emits bulk data (a process): its
messages can be megabyte chunks, so a message count alone would not bound memory."""

EXIT_SIGTERM = 128 + signal.SIGTERM
"""The exit status ``run()`` leaves with (``SystemExit``) after a SIGTERM: 143, as a
shell reports a process that SIGTERM ended."""


def require_trio(what: str) -> None:
    """Raise a :class:`RuntimeError` that says what to do if this is not a trio task
    (asyncio in particular)."""
    try:
        trio.lowlevel.current_task()
        return
    except RuntimeError:
        pass
    if _in_asyncio():
        raise RuntimeError(
            f"pipekit runs on trio, and {what} was called under asyncio: from asyncio, "
            "run the pipeline in a thread, 'await asyncio.to_thread(pipeline.run)', or "
            "iterate it in one (see 'Driving a pipeline from asyncio' in docs/guide.md)"
        )
    raise RuntimeError(
        f"{what} must run inside trio (trio.run(...)); outside an event loop, call "
        "pipeline.run() or iterate with 'for x in pipeline'"
    )


def _in_asyncio() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Guard:
    """Runs a stage's module in a cancel scope that :meth:`stop` cancels: a stopped
    stage ends as if its input had ended (the kernel ENDs its outputs), whatever it was
    doing, and what it raises after the stop is of no interest."""

    def __init__(self, inner: Module) -> None:
        self.inner = inner
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self.stopped = False
        self._scope: trio.CancelScope | None = None
        self.in_lanes: list[Lane] = []
        """The stage's input buffers (the same over restarts), which measure the time
        it starved."""
        self.meter: Meter | None = getattr(inner, "meter", None)

    @property
    def starved_seconds(self) -> float:
        return sum(lane.starved_seconds for lane in self.in_lanes)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        if not self.in_lanes:
            for port in self.inputs:
                pipe = ports[port]
                if isinstance(pipe, LocalPipe) and pipe.receive_lane is not None:
                    self.in_lanes.append(pipe.receive_lane)
        if self.stopped:
            await trio.lowlevel.checkpoint()
            return
        scope = self._scope = trio.CancelScope()
        try:
            with scope:
                await self.inner.run(ports)
        except Exception:
            if not self.stopped:
                raise
        finally:
            self._scope = None

    def stop(self) -> None:
        self.stopped = True
        if self._scope is not None:
            self._scope.cancel()


def _note_item(exc: ModuleError, guard: _Guard | None) -> None:
    """Say in ``exc`` which message its stage failed on (``item_index``, ``item`` and a
    note that tracebacks show), when the stage knows."""
    if exc.item_index is not None:
        return
    failed = guard.meter.failed if guard is not None and guard.meter is not None else None
    cause = exc.__cause__
    index = getattr(cause, "index", None)  # a worker pool's WorkerError knows its item
    if failed is not None:
        exc.item_index = failed[0]
        exc.item = None if guard is None or not guard.inputs else short_repr(failed[1])
    elif isinstance(index, int):
        exc.item_index = index
    else:
        return
    if guard is not None and not guard.inputs:  # a source
        exc.add_note(f"stage {exc.module!r} failed producing item {exc.item_index}")
    else:
        item = f": {exc.item}" if exc.item is not None else ""
        exc.add_note(f"stage {exc.module!r} failed on item {exc.item_index} of its input{item}")


Progress = bool | ProgressDisplay | Callable[[dict[str, ModuleStats]], None] | None
"""What ``run()``/``arun()`` take as ``progress``."""


def _length(first: Stage) -> int | None:
    """How many items the source will emit, if it says (a list, a range)."""
    items = getattr(first, "items", None) if first.role == "source" else None
    if items is None or callable(items):
        return None
    try:
        return len(items)
    except TypeError:
        return None


def _stopper(guards: Sequence[_Guard]) -> Callable[[], None]:
    def stop() -> None:
        for g in guards:
            g.stop()

    return stop


def _line(stages: Sequence[Stage], *, branch: bool) -> list[Stage]:
    """``stages`` checked as one line of a pipeline (a branch has no source and must end
    in a sink; a main line without a sink gets a ``collect()``), with adjacent raw-mode
    commands joined."""
    line: list[Stage] = []
    for stage in stages:
        if stage.joinable and line and line[-1].joinable:
            line.append(line.pop().joined([stage]))
        else:
            line.append(stage)
    if branch:
        if not line or line[-1].role != "sink":
            raise ValueError(
                "a branch (of a tee, or a dead-letter stage) must end in a sink: ... | pk.sink(fn)"
            )
        if line[0].role == "source":
            raise ValueError(f"a branch cannot start with a source ({line[0].label})")
    elif not line or not (line[0].role == "source" or line[0].can_lead):
        raise ValueError("a pipeline must start with a source: pk.source(items) | ...")
    for s in line[1:]:
        if s.role == "source":
            raise ValueError(f"{s.label} is a source but is not the first stage")
    for s in line[:-1]:
        if s.role == "sink":
            raise ValueError(f"{s.label} is a sink but is not the last stage")
    if not branch and line[-1].role != "sink":
        line.append(collect())
    return line


class _Wiring:
    """Adds the modules of a pipeline (its main line and branches) to a kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.guards: list[_Guard] = []
        self.by_name: dict[str, _Guard] = {}

    def line(self, stages: Sequence[Stage], feed: PortRef | None) -> Module:
        """Add one line, fed by ``feed`` (None: the main line); return its last module."""
        k = self.kernel
        before: list[_Guard] = []  # the guards of this line so far
        previous: Any = None
        previous_stage: Stage | None = None
        mod: Module | None = None
        for i, stage in enumerate(stages):
            mod = stage.module(first=feed is None and i == 0)
            guard = _Guard(mod)
            if isinstance(mod, StopsUpstream):
                mod.stop_upstream = _stopper(list(before))
            label, n = stage.label, 2
            while label in k.stats():
                label, n = f"{stage.label}#{n}", n + 1
            o = stage.options
            handle = k.add(
                guard,
                name=label,
                restart=o.restart,  # type: ignore[arg-type]
                max_restarts=o.max_restarts,
                backoff=o.backoff,
                capacity=o.buffer,
                max_bytes=o.buffer_bytes
                or (BULK_BUFFER_BYTES if previous_stage and previous_stage.bulk_output else None),
            )
            if previous is not None:
                k.connect(previous["out"], handle)
            elif feed is not None:
                k.connect(feed, handle)
            for port, branch in stage.branches():
                self.line(_line(branch, branch=True), handle[port])
            before.append(guard)
            self.guards.append(guard)
            self.by_name[handle.name] = guard
            previous, previous_stage = handle, stage
        assert mod is not None
        return mod


class Pipeline:
    """Stages in order. ``run()`` blocks; ``await arun()`` runs inside trio. Both return
    what the final sink gathered (:func:`collect` gives a list; a pipeline without a
    sink collects its output). A pipeline without a sink can also be iterated:
    ``for x in pipeline`` (blocking) or ``async for x in pipeline`` (in trio).

    Example::

        p = pk.source(range(10)) | pk.map(lambda x: x * x) | pk.filter(lambda x: x % 2)
        p.run()                            # -> [1, 9, 25, 49, 81]
        for x in p.take(2):                # 1, 9: then every stage stops
            print(x)
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._stats: dict[str, ModuleStats] = {}
        self._kernel: Kernel | None = None
        self._guards: dict[str, _Guard] = {}
        self._running = False

    @property
    def stats(self) -> dict[str, ModuleStats]:
        """Per-stage statistics by stage name (:class:`~pipekit.kernel.ModuleStats`,
        with the busy, starved and blocked time of each stage and its bottleneck
        marked): live during a run, final after it."""
        if self._running and self._kernel is not None:
            return self._measured()
        return self._stats

    def _measured(self) -> dict[str, ModuleStats]:
        assert self._kernel is not None
        return measure(self._kernel.stats(), self._guards)

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        if isinstance(other, Pipeline):
            return Pipeline(self.stages + other.stages)
        if isinstance(other, Stage):
            return Pipeline([*self.stages, other])
        return NotImplemented

    def __repr__(self) -> str:
        return "Pipeline(" + " | ".join(s.label for s in self.stages) + ")"

    def take(self, n: int) -> Pipeline:
        """This pipeline with :func:`~pipekit.take` appended: the first ``n`` messages,
        then every stage stops.

        Example::

            import itertools
            (pk.source(itertools.count()) | pk.map(str)).take(3).run()   # -> ['0', '1', '2']
        """
        return self | take(n)

    def __iter__(self) -> PipelineIterator:
        """Run in a thread of its own and iterate over the output (see
        :class:`~pipekit.pipeline.PipelineIterator`)."""
        return PipelineIterator(self)

    def __aiter__(self) -> AsyncIterator[Any]:
        """Run in a trio task of its own and iterate over the output. Leaving the loop
        stops every stage: deterministically with ``contextlib.aclosing``, otherwise
        when trio finalizes the abandoned iterator (at once, in CPython)."""
        return iterate_async(self)

    def run(self, *, progress: Progress = None, interval: float | None = None) -> Any:
        """Run to completion in a new trio event loop and return the sink's result.

        ``progress=True`` shows a live progress display on stderr (plain log lines when
        stderr is not a terminal; :class:`ProgressDisplay`); ``progress`` may also be a
        :class:`ProgressDisplay` or a function, as for :meth:`arun`.

        Raises :class:`~pipekit.ModuleError` naming the stage that failed. SIGTERM is
        handled like Ctrl-C: the run is cancelled, every process is terminated (TERM,
        then KILL after its ``kill_grace``), and ``run()`` raises
        ``SystemExit(EXIT_SIGTERM)`` (143) - unless the program has a SIGTERM handler of
        its own, or ``run()`` is not called in the main thread. A second SIGTERM during
        that cleanup ends the program at once. From asyncio, call it in a thread:
        ``await asyncio.to_thread(pipeline.run)``."""
        try:
            trio.lowlevel.current_task()
            inside_trio = True
        except RuntimeError:
            inside_trio = False
        if inside_trio:
            raise RuntimeError("Pipeline.run() called inside trio: use 'await pipeline.arun()'")
        arun = partial(self.arun, progress=progress, interval=interval)
        if (
            threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        ):
            return trio.run(arun)
        return trio.run(self._arun_until_sigterm, arun)

    async def _arun_until_sigterm(self, arun: Callable[[], Awaitable[Any]]) -> Any:
        """:meth:`arun`, cancelled by SIGTERM (then ``SystemExit(EXIT_SIGTERM)``)."""
        terminated = False
        run_scope = trio.CancelScope()

        async def watch(signals: AsyncIterator[int]) -> None:
            nonlocal terminated
            async for _ in signals:
                if terminated:  # a second one: no more grace
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.kill(os.getpid(), signal.SIGTERM)
                terminated = True
                run_scope.cancel()

        result: Any = None
        try:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async with open_plain_nursery() as nursery:
                    nursery.start_soon(watch, signals)
                    try:
                        with run_scope:
                            result = await arun()
                    finally:
                        nursery.cancel_scope.cancel()
        finally:
            if terminated:
                raise SystemExit(EXIT_SIGTERM)
        return result

    async def arun(self, *, progress: Progress = None, interval: float | None = None) -> Any:
        """Run inside trio and return the sink's result. ``progress``: ``True`` for a
        live display on stderr (a :class:`ProgressDisplay`: a table on a terminal, log
        lines elsewhere; or pass one), or a function called with the live per-stage
        statistics every ``interval`` seconds (default 0.5; the display redraws every
        0.25 s) and once at the end. Under asyncio it raises :class:`RuntimeError`
        saying what to do instead.

        Example::

            async def main():
                print(await (pk.source(range(3)) | pk.map(str)).arun())

            trio.run(main)                 # prints ['0', '1', '2']
        """
        require_trio("Pipeline.arun()")
        return await self._run(progress, interval, None, None)

    async def _run_to(self, tail: Stage, attach: Callable[[Callable[[], None]], None]) -> Any:
        """Run with ``tail`` as the sink; ``attach`` gets the function that stops it."""
        return await self._run(None, 0.5, tail, attach)

    async def _run(
        self,
        progress: Progress,
        interval: float | None,
        tail: Stage | None,
        attach: Callable[[Callable[[], None]], None] | None,
    ) -> Any:
        stages = _line(self.stages if tail is None else [*self.stages, tail], branch=False)
        display = ProgressDisplay() if progress is True else progress
        callback: Callable[[dict[str, ModuleStats]], None] | None = None
        if isinstance(display, ProgressDisplay):
            callback = display.update
            display.start(_length(stages[0]))
            interval = 0.25 if interval is None else interval
        elif callable(progress):
            callback = progress
        interval = 0.5 if interval is None else interval
        error: BaseException | None = None
        try:
            async with open_kernel() as k:
                self._kernel = k
                wiring = _Wiring(k)
                last = wiring.line(stages, None)
                self._guards = wiring.by_name
                if attach is not None:
                    attach(_stopper(wiring.guards))
                self._running = True
                await k.start()
                if callback is not None:
                    with trio.CancelScope() as reporting:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_report, self._measured, callback, interval)
                            await k.join()
                            reporting.cancel()
        except BaseException as exc:
            error = exc
            if isinstance(exc, ModuleError):
                _note_item(exc, self._guards.get(exc.module))
            raise
        finally:
            self._running = False
            if self._kernel is not None:
                self._stats = self._measured()
            if isinstance(display, ProgressDisplay):
                display.stop(self.stats, error)
            elif callback is not None:
                callback(self.stats)
        return getattr(last, "result", None)

    def topology(self) -> Topology:
        """The kernel topology of the current or last run."""
        if self._kernel is None:
            raise RuntimeError("the pipeline has not run yet")
        return self._kernel.topology()


async def _report(
    stats: Callable[[], dict[str, ModuleStats]],
    progress: Callable[[dict[str, ModuleStats]], None],
    interval: float,
) -> None:
    while True:
        await trio.sleep(interval)
        progress(stats())


BOTTLENECK_MIN_BUSY = 0.1
"""A stage busy for less than this share of its time is never called the bottleneck."""
BOTTLENECK_MIN_SECONDS = 0.01
"""Nor one busy for less than this many seconds in all (a run too short to tell)."""


def measure(stats: dict[str, ModuleStats], guards: Mapping[str, _Guard]) -> dict[str, ModuleStats]:
    """``stats`` (fresh snapshots) with each stage's starved and busy time filled in and
    the bottleneck marked. Busy is what is left of a stage's time once it is neither
    starved (its input buffer empty) nor blocked (a full buffer downstream)."""
    try:
        now: float | None = trio.current_time()
    except RuntimeError:  # outside trio: only the stages that finished have a duration
        now = None
    best, best_share = None, BOTTLENECK_MIN_BUSY
    for name, st in stats.items():
        guard = guards.get(name)
        meter = guard.meter if guard is not None else None
        if guard is not None:
            st.starved_seconds = guard.starved_seconds
        end = st.finished_at if st.finished_at is not None else now
        if st.started_at is None or end is None:
            continue
        elapsed = end - st.started_at
        if meter is not None and meter.timed:
            st.busy_seconds = meter.busy
        else:
            st.busy_seconds = max(0.0, elapsed - st.starved_seconds - st.paused_seconds)
        if st.busy_seconds >= BOTTLENECK_MIN_SECONDS and st.busy_seconds / elapsed >= best_share:
            best, best_share = st, st.busy_seconds / elapsed
    if best is not None:
        best.bottleneck = True
    return stats
