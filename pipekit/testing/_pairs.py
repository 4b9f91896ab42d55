"""Pair factories for the conformance rows of pipekit's own adapters.

Each ``open_*_pair`` is an async context manager yielding ``(a, b)``, two trio-side
:class:`~pipekit.kernel.Pipe` ends joined through one adapter, and each ``*_BOUND`` is
that pair's backpressure bound in messages of
:data:`~pipekit.testing.conformance.BACKPRESSURE_MESSAGE_SIZE` characters (see
:func:`~pipekit.testing.conformance.check_adapter`).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import trio

from ..adapters.stdio import ProcessSpec, open_process
from ..adapters.thread import ThreadPort, open_thread_port
from ..kernel import (
    DEFAULT_CAPACITY,
    Lane,
    LocalPipe,
    Pipe,
    PipeOptions,
    framed_pipe,
    open_pipe_pair,
)
from ._adapter import framed_bound
from .mock import MockTransport

__all__ = [
    "FRAMED_OPTIONS",
    "FRAMED_SOCKETPAIR_BOUND",
    "INPROC_BOUND",
    "STDIO_BOUND",
    "STDIO_OPTIONS",
    "THREAD_BOUND",
    "open_framed_mock_pair",
    "open_framed_socketpair_pair",
    "open_inproc_pair",
    "open_stdio_relay_pair",
    "open_thread_relay_pair",
]

# -- in-process ---------------------------------------------------------------------------

INPROC_BOUND = DEFAULT_CAPACITY
"""``open_pipe_pair()``: one lane of ``capacity`` messages per direction."""


@asynccontextmanager
async def open_inproc_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    a, b = open_pipe_pair()
    try:
        yield a, b
    finally:
        a.close_nowait()
        b.close_nowait()


# -- framed over a real socketpair -----------------------------------------------------------

FRAMED_OPTIONS: dict[str, Any] = {
    "high_water": 64,
    "send_buffer": 16 * 1024,
    "pause_slack": 1024 * 1024,
}
"""Small buffers so the backpressure checks stay quick. The pause slack covers what a
socketpair and the writer can have in flight when PAUSE is sent (a few hundred KiB)."""

FRAMED_SOCKETPAIR_BOUND = framed_bound(**FRAMED_OPTIONS)
"""One hop: the sender's ``send_buffer``, the receiver's ``high_water`` plus one DATA
frame plus ``pause_slack`` (1195 messages of 1000 characters)."""


@asynccontextmanager
async def _framed_pair(
    stream_a: trio.abc.Stream, stream_b: trio.abc.Stream, **options: Any
) -> AsyncIterator[tuple[Pipe, Pipe]]:
    """``framed_pipe`` on both streams (a initiates), run concurrently. Leaving the
    block closes both forcefully, so a check that left data unread cannot hang here."""
    pipes: dict[str, Pipe] = {}
    ready = trio.Event()
    release = trio.Event()

    async def run(stream: trio.abc.Stream, name: str) -> None:
        async with framed_pipe(stream, initiator=name == "a", name=name, **options) as pipe:
            pipes[name] = pipe
            if len(pipes) == 2:
                ready.set()
            await release.wait()
            await trio.aclose_forcefully(pipe)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, stream_a, "a")
        nursery.start_soon(run, stream_b, "b")
        await ready.wait()
        try:
            yield pipes["a"], pipes["b"]
        finally:
            release.set()


@asynccontextmanager
async def open_framed_socketpair_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    """``framed_pipe`` over both ends of a real ``socket.socketpair()``."""
    sa, sb = socket.socketpair()
    streams = [trio.SocketStream(trio.socket.from_stdlib_socket(s)) for s in (sa, sb)]
    async with _framed_pair(streams[0], streams[1], **FRAMED_OPTIONS) as pair:
        yield pair


FRAMED_MOCK_CHUNKS = (1, 7, 4096, 3, 65536)


@asynccontextmanager
async def open_framed_mock_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    """``framed_pipe`` over a :class:`~pipekit.testing.mock.MockTransport` whose reads
    return 1, 7, 4096, 3, 65536, 1, ... bytes: frames split everywhere. The bound is
    :data:`FRAMED_SOCKETPAIR_BOUND` (the mock holds at most 64 KiB in flight)."""
    transport = MockTransport(chunk_sizes=FRAMED_MOCK_CHUNKS)
    async with _framed_pair(transport.left, transport.right, **FRAMED_OPTIONS) as pair:
        yield pair


# -- thread ------------------------------------------------------------------------------------

THREAD_CAPACITY = 64
THREAD_BATCH = 64
THREAD_BOUND = 2 * THREAD_CAPACITY + THREAD_BATCH
"""a's lane into the thread (``capacity``) + the batch the relay thread holds + the
thread's lane to b (``capacity``): 192. The same each way."""


def _forward(
    receive: Callable[[], list[Any]],
    end: Callable[[], object],
    fail: Callable[[BaseException], object],
    send: Callable[[list[Any]], object],
    stop_receiving: Callable[[], object],
    *,
    interrupted: tuple[type[BaseException], ...] = (),
) -> None:
    """Relay batches from ``receive`` to ``send`` in this thread, blocking while the
    next lane is full. END is forwarded with ``end``, an ERROR with ``fail``; an
    ``interrupted`` exception from ``receive`` just stops. When ``send`` finds the other
    side gone, ``stop_receiving`` tells this side to stop sending too."""
    while True:
        try:
            items = receive()
        except trio.EndOfChannel:
            end()
            return
        except interrupted:
            return
        except Exception as exc:  # the sending side failed its direction
            fail(exc)
            return
        try:
            send(items)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            stop_receiving()  # the other side stopped receiving: so do we
            return


@asynccontextmanager
async def open_thread_relay_pair(
    capacity: int = THREAD_CAPACITY, batch: int = THREAD_BATCH
) -> AsyncIterator[tuple[Pipe, Pipe]]:
    """``a`` is the trio side of :func:`open_thread_port`; its thread relays, one batch
    of at most ``batch`` messages at a time and blocking while the next lane is full,
    to and from ``b``, a trio pipe on two more lanes of ``capacity``. END and ERROR are
    forwarded; when one side stops receiving, the relay stops receiving from the other
    (its sends then raise :class:`trio.BrokenResourceError`)."""
    to_b = Lane(capacity)
    from_b = Lane(capacity)
    b = LocalPipe(to_b, (from_b,), name="b")
    from_a: list[Lane] = []  # the lane a sends into, once the port is open

    def stop_a() -> None:
        if from_a:
            from_a[0].close_reader()

    def b_to_a(port: ThreadPort, errors: list[BaseException]) -> None:
        try:
            _forward(
                partial(from_b.get_many_blocking, batch),
                port.end,
                port.fail,
                port.send_batch,
                from_b.close_reader,
            )
        except BaseException as exc:  # pragma: no cover - a bug in the relay itself
            errors.append(exc)

    def relay(port: ThreadPort) -> None:
        errors: list[BaseException] = []
        helper = threading.Thread(
            target=b_to_a, args=(port, errors), name="pipekit:relay:b->a", daemon=True
        )
        helper.start()
        try:
            _forward(
                partial(port.receive_batch, batch),
                to_b.end_writer,
                to_b.fail,
                to_b.put_many_blocking,
                stop_a,
                interrupted=(trio.ClosedResourceError,),  # the pair is going away
            )
        finally:
            helper.join()
            if errors:
                raise errors[0]

    async with open_thread_port(relay, capacity=capacity, name="a") as a:
        if isinstance(a, LocalPipe):
            from_a.extend(a.send_lanes)
        try:
            yield a, b
        finally:
            b.close_nowait()


# -- stdio: a child process relaying between its stdio and a Unix socket ------------------

STDIO_HIGH_WATER = 64
STDIO_SEND_BUFFER = 16 * 1024
STDIO_PAUSE_SLACK = 4 * 1024 * 1024
STDIO_OPTIONS: PipeOptions = {
    "high_water": STDIO_HIGH_WATER,
    "send_buffer": STDIO_SEND_BUFFER,
    "pause_slack": STDIO_PAUSE_SLACK,
}
"""Used by all four framed pipes of the stdio row (parent's a, the child's two, b). The
pause slack is large because the child's stdin is an OS pipe of up to 1 MiB that may
fill while the child is not scheduled, on top of what it reads per loop."""
STDIO_BATCH = 64
STDIO_BOUND = (
    2
    * framed_bound(
        high_water=STDIO_HIGH_WATER,
        send_buffer=STDIO_SEND_BUFFER,
        pause_slack=STDIO_PAUSE_SLACK,
    )
    + STDIO_BATCH
)
"""Two framed hops (a -> child's stdin, child's socket -> b; the same the other way) +
the batch the relay holds: 8746."""
STDIO_KILL_GRACE = 0.25
"""Before reporting END or an ERROR while its own input is still open, a
``ProcessPipe`` waits up to ``min(1 s, kill_grace)`` for the child's exit status; the
relay keeps running then, so a short grace keeps those checks quick."""
STDIO_TEARDOWN = 5.0


@asynccontextmanager
async def open_stdio_relay_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    """``a`` is the frames-mode :class:`~pipekit.adapters.stdio.ProcessPipe` to a child
    running ``python -m pipekit.testing._relay`` over its stdin/stdout; ``b`` is a
    framed pipe on a Unix socket the child connected to. The child forwards both ways
    (see :mod:`pipekit.testing._relay`). On exit ``a`` ENDs and ``b`` is closed (its
    close waits for that END, relayed), then ``a``'s block is left normally (drain, wait
    for the child), within 5 s."""
    with tempfile.TemporaryDirectory(prefix="pipekit-relay-") as tmp:
        path = os.path.join(tmp, "b.sock")
        listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with listener:
            await listener.bind(path)
            listener.listen(1)
            argv = [sys.executable, "-m", "pipekit.testing._relay", path]
            for key, value in STDIO_OPTIONS.items():
                argv += [f"--{key.replace('_', '-')}", str(value)]
            argv += ["--batch", str(STDIO_BATCH)]
            spec = ProcessSpec(
                tuple(argv),
                mode="frames",
                name="relay",
                kill_grace=STDIO_KILL_GRACE,
                framed_options=STDIO_OPTIONS,
            )
            teardown = trio.CancelScope()
            body_ok = False
            with teardown:
                async with open_process(spec) as a:
                    with trio.fail_after(10):
                        conn, _ = await listener.accept()
                    async with _framed_child(trio.SocketStream(conn)) as b:
                        try:
                            yield a, b
                            body_ok = True
                        finally:
                            teardown.deadline = trio.current_time() + STDIO_TEARDOWN
                            if body_ok:
                                await _end_quietly(a)  # b's close waits for a's END
                                await b.aclose()
                            else:
                                await trio.aclose_forcefully(b)
            if teardown.cancelled_caught and body_ok:
                raise RuntimeError(
                    f"the relay child did not finish within {STDIO_TEARDOWN:g} s of the "
                    "pair being closed; it was terminated"
                )


async def _end_quietly(pipe: Pipe) -> None:
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await pipe.end()  # (unless the check broke or closed it)


@asynccontextmanager
async def _framed_child(stream: trio.abc.Stream) -> AsyncIterator[Pipe]:
    options: PipeOptions = {**STDIO_OPTIONS, "name": "b"}
    async with framed_pipe(stream, initiator=False, **options) as b:
        yield b
