"""Iterating a pipeline: ``for x in pipeline`` (the pipeline runs in a thread of its
own) and ``async for x in pipeline`` (in a trio task of its own), fed through a lane."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import trio

from ..kernel import Lane, Module, Pipe
from ._settings import StageSettings
from ._stage import Stage

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["ITER_BUFFER", "PipelineIterator", "iterate_async"]

ITER_BUFFER = 1024
"""Messages the pipeline may run ahead of the loop that iterates it."""


class _LaneSinkModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()
    result = None

    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        lane = self.lane
        try:
            async for got in ports["inp"].batches():
                await lane.put_many(got)
        except trio.BrokenResourceError:
            pass  # the loop stopped iterating; the run is being stopped


class _LaneSink(Stage):
    role = "sink"

    def __init__(self, lane: Lane) -> None:
        super().__init__("iterate", StageSettings(max_restarts=0))
        self.lane = lane

    def module(self, *, first: bool = False) -> Module:
        return _LaneSinkModule(self.lane)


class _Control:
    """Stops a run from any thread, once the run has said how (:meth:`attach`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._requested = False

    def attach(self, stop: Callable[[], None]) -> None:
        """Called in the run's trio thread once it is wired."""
        with self._lock:
            self._stop = stop
            self._token = trio.lowlevel.current_trio_token()
            requested = self._requested
        if requested:
            stop()

    def request_stop(self) -> None:
        with self._lock:
            self._requested = True
            stop, token = self._stop, self._token
        if stop is None or token is None:
            return
        try:
            same_run = trio.lowlevel.current_trio_token() is token
        except RuntimeError:
            same_run = False
        if same_run:
            stop()
        else:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(stop)


def _tail(pipeline: Pipeline) -> None:
    if pipeline.stages and pipeline.stages[-1].role == "sink":
        raise TypeError(
            f"{pipeline!r} ends in a sink ({pipeline.stages[-1].label}): iterate a pipeline "
            "without one, or call run()"
        )


def _run_in_thread(pipeline: Pipeline, lane: Lane, control: _Control) -> None:
    try:
        trio.run(pipeline._run_to, _LaneSink(lane), control.attach)
    except BaseException as exc:
        lane.fail(exc)
    else:
        lane.end_writer()


class PipelineIterator(Iterator[Any]):
    """What ``iter(pipeline)`` returns: the pipeline runs in a thread of its own
    (``trio.run``) and its output comes here, at most :data:`ITER_BUFFER` messages
    ahead. The loop ends when the pipeline does; a failure is raised here
    (:class:`~pipekit.ModuleError`, as from ``run()``). :meth:`close` (from any
    thread; also what leaving the loop early, ``with``, or dropping the iterator does)
    stops every stage and waits for the run to end.

    Example::

        for line in pk.read_lines("big.log") | pk.filter(is_error):
            print(line)
            break                     # every stage stops; nothing keeps running
    """

    def __init__(self, pipeline: Pipeline) -> None:
        _tail(pipeline)
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "iterating a pipeline with 'for' inside trio would block the event loop: "
                "use 'async for x in pipeline'"
            )
        self._lane = Lane(ITER_BUFFER)
        self._control = _Control()
        self._batch: list[Any] = []
        self._at = 0
        self._done = False
        # The thread must not hold the iterator: dropping it (leaving a for loop) closes it.
        self._thread = threading.Thread(
            target=_run_in_thread,
            args=(pipeline, self._lane, self._control),
            name=f"pipekit:{pipeline!r}"[:64],
            daemon=True,
        )
        self._thread.start()

    def __next__(self) -> Any:
        if self._at < len(self._batch):
            item = self._batch[self._at]
            self._at += 1
            return item
        if self._done:
            raise StopIteration
        try:
            self._batch = self._lane.get_many_blocking()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._finish()
            raise StopIteration from None
        except BaseException:
            if self._lane.error_delivered:  # the run failed and is over
                self._finish()
            else:  # Ctrl-C while waiting, say: the run must not outlive the loop
                self.close()
            raise
        self._at = 1
        return self._batch[0]

    def _finish(self) -> None:
        self._done = True
        self._batch, self._at = [], 0
        self._thread.join()

    def close(self) -> None:
        """Stop the pipeline (every stage, every process) and wait for it to end."""
        if self._done:
            return
        self._done = True
        self._batch, self._at = [], 0
        self._control.request_stop()
        self._lane.close_reader()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> PipelineIterator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


async def iterate_async(pipeline: Pipeline) -> AsyncIterator[Any]:
    """``async for x in pipeline``: the pipeline runs in a trio system task (so it
    outlives no one: leaving the loop, a failure or a cancellation of the loop's task
    stops it and waits for it)."""
    from ._pipeline import require_trio

    require_trio("async for x in pipeline")
    _tail(pipeline)
    lane = Lane(ITER_BUFFER)
    control = _Control()
    finished = trio.Event()

    async def run() -> None:
        try:
            await pipeline._run_to(_LaneSink(lane), control.attach)
        except trio.Cancelled:
            lane.fail(RuntimeError("the pipeline was cancelled: its trio run is ending"))
            raise
        except BaseException as exc:
            lane.fail(exc)
        else:
            lane.end_writer()
        finally:
            finished.set()

    trio.lowlevel.spawn_system_task(run, name=f"pipekit:iterate:{pipeline!r}"[:80])
    try:
        while True:
            try:
                got = await lane.get_many()
            except trio.EndOfChannel:
                return
            for item in got:
                yield item
    finally:
        control.request_stop()
        lane.close_reader()
        with trio.CancelScope(shield=True):
            await finished.wait()
