"""The bridge between the framed pipe to the parent and the worker thread that runs a
blocking target: two batch pumps, so that the channel is always read (PAUSE, RESUME,
END and ERROR never wait behind user code) however long the thread blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...adapters.thread import ThreadPort, open_thread_port
from ...kernel.errors import CodecError, ProtocolError, RemoteError
from ...kernel.framed import FramedPipe
from ...kernel.pipe import Pipe
from .outcome import EXIT_FAILED, EXIT_OK, ChannelLost, Failure, Stop

_PUMP_BATCH = 512  # messages per hand-off from the framed pipe to the worker thread
_GRACE = 1.0  # seconds an interrupted worker thread gets to stop


async def bridge(
    pipe: FramedPipe,
    body: Callable[[ThreadPort], None],
    failures: list[Failure],
    *,
    unencodable: Callable[[FramedPipe, list[Any]], Awaitable[None]] | None = None,
) -> int:
    """Run ``body`` in a worker thread joined to ``pipe`` by two batch pumps; return the
    exit code (``failures``: what ``body`` captured). ``unencodable`` sends a batch
    the thread sent that cannot be encoded as a whole (None: the worker fails). Raises
    :class:`ChannelLost` or :class:`Stop` to interrupt the thread."""
    lost: list[BaseException] = []
    thread_done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def run(port: ThreadPort) -> None:
        try:
            body(port)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(thread_done.set)

    async def pump_in(tpipe: Pipe, scope: trio.CancelScope) -> None:
        # framed -> thread until the parent ENDs (or fails) its direction.
        while True:
            try:
                batch = await pipe.receive_batch(_PUMP_BATCH)
            except trio.EndOfChannel:
                await tpipe.end()
                return
            except RemoteError as exc:  # the parent failed its stream: the worker sees it
                await tpipe.fail(exc)
                return
            except (trio.BrokenResourceError, ProtocolError) as exc:
                lost.append(exc)
                scope.cancel()
                return
            await tpipe.send_batch(batch)

    async def pump_out(tpipe: Pipe) -> int:
        # thread -> framed until the thread ENDs (returns) or fails.
        while True:
            try:
                batch = await tpipe.receive_batch()
            except trio.EndOfChannel:
                await pipe.end()
                return EXIT_OK
            except Exception as exc:
                return (failures[0] if failures else Failure(exc)).report(pipe)
            try:
                await pipe.send_batch(batch)
            except (CodecError, ProtocolError) as exc:  # unencodable, or larger than a frame
                if unencodable is None:
                    return Failure(exc).report(pipe)
                await unencodable(pipe, batch)

    code = EXIT_FAILED
    async with open_thread_port(run, name=pipe.name, grace=_GRACE) as tpipe:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_in, tpipe, nursery.cancel_scope)
            try:
                code = await pump_out(tpipe)
                if code == EXIT_OK:
                    # The output has ended; the thread may still consume its input.
                    await thread_done.wait()
            except trio.BrokenResourceError as exc:
                lost.append(exc)
            nursery.cancel_scope.cancel()
        if lost:
            raise ChannelLost(str(lost[0]))  # interrupts the thread rather than wait for it
        if code != EXIT_OK:
            raise Stop(code)  # the same: a thread that could not send may still run
    return code
