"""The bridge between the framed pipe to the parent and the worker thread that runs a
blocking target: two batch pumps, so that the channel is always read (PAUSE, RESUME,
END and ERROR never wait behind user code) however long the thread blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
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
    # (Replies that cannot be encoded are never written directly: the thread sender
    # refuses them, and pump_out sends them through ``unencodable``.)
    replies = _Replies(pipe)

    def run(port: ThreadPort) -> None:
        replies.attach(port)
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
            replies.delivered += len(batch)

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
            replies.queued += len(batch)

    code = EXIT_FAILED
    try:
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
                raise ChannelLost(str(lost[0]))  # interrupts the thread, not waits for it
            if code != EXIT_OK:
                raise Stop(code)  # the same: a thread that could not send may still run
    finally:
        replies.stopping = True  # a thread still writing (interrupted) gives up
    return code


class _Replies:
    """The worker thread's sends (stream or item mode; the port's send route), written
    to the socket by the thread itself when that is what a reply needs (measured,
    bench/latency.py: a port worker's round trip p50 219-253 -> 150-166 us, 3.3-4.0x ->
    1.4-2.1x the trio echo floor): the first send after the thread took input, once it
    has taken all the input delivered to it, with nothing of its own still on the way
    through ``pump_out``. Everything else - a stream of sends, or
    sends while more input waits - goes to the lane and ``pump_out``, which coalesces
    it into few large writes (written one by one, 200,000 small messages cost 200,000
    writes and as many socket buffers). So order holds: a direct write follows only what
    ``pump_out`` has handed to the framed pipe, which the pipe has written."""

    def __init__(self, pipe: FramedPipe) -> None:
        self.delivered = 0  # messages pump_in handed to the thread
        self.queued = 0  # messages of the thread's that pump_out handed to the pipe
        self.stopping = False
        self._lane_sent = 0  # messages the thread handed to pump_out
        self._turn = -1  # what the thread had received at its last direct write
        self._sender = pipe.thread_sender(self._ready)
        self._port: ThreadPort | None = None

    def _ready(self) -> bool:
        return not self.stopping and self._lane_sent == self.queued

    def attach(self, port: ThreadPort) -> None:
        """Route ``port``'s sends through this (its end() and fail() still go through
        the lane to pump_out, after every message they follow is on the wire)."""
        if self._sender is not None:
            self._port = port
            port.route_sends(self)

    def _turn_now(self) -> int | None:
        """What the thread has received, if its next send is a reply that may be
        written directly: the first since it took input, once it took all the input
        delivered to it (else None)."""
        port = self._port
        assert port is not None
        received = port.messages_received
        if received != self._turn and received >= self.delivered:
            return received
        return None

    def send(self, value: Any) -> bool:
        turn = self._turn_now()
        if turn is not None and self._sender is not None and self._sender.send(value):
            self._turn = turn
            return True
        self._lane_sent += 1
        return False

    def send_batch(self, values: Sequence[Any]) -> bool:
        turn = self._turn_now()
        if turn is not None and self._sender is not None and self._sender.send_batch(values):
            self._turn = turn
            return True
        self._lane_sent += len(values)
        return False
