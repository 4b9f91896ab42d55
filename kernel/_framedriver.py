"""The engine of a framed pipe: the tasks that drive one pipekit/1
:class:`~pipekit.kernel.protocol.Connection` over a transport, and the state they share
with the pipe's API (:class:`~pipekit.kernel.FramedPipe`, which extends this class).

A reader never stops reading the transport (so PAUSE, RESUME, END and ERROR are never
held up by data it has not read) and turns the machine's events into the inbox, the
end of the receiving direction and wake-ups; a writer sends whatever the machine has
queued in one write (so messages queued while a write is under way are coalesced), and
half-closes the transport once both directions are closed; an optional watchdog fails
a pipe from which nothing arrives for ``idle_timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import trio

from ._events import (
    EndReceived,
    ErrorReceived,
    Event,
    HandshakeComplete,
    MessagesReceived,
    PongReceived,
    ProtocolViolation,
    ResumeReceived,
)
from ._frames import OPEN
from ._threadsend import Wire
from ._transport import Pieces, Transport, direct_socket, read_into, socket_reader, writes_for
from .errors import ErrorKind, ProtocolError, RemoteError, RemoteProtocolError
from .options import DEFAULT_CLOSE_TIMEOUT, DEFAULT_READ_SIZE, DEFAULT_SEND_BUFFER
from .protocol import Connection

__all__ = ["CLOSE_PING", "FramedDriver"]

CLOSE_PING = b"pipekit:close"
"""The payload of the PING a closing pipe sends, half way through ``close_timeout``, to
a peer that has not ended its direction yet."""
_READER_DRAIN = 1.0
"""Seconds a failed write waits for the reader to take what had arrived before it (the
peer's ERROR, typically), so that the peer's reason, not the broken pipe, is reported."""


def _direct_pipe(stream: Transport) -> trio.socket.SocketType | None:
    """The pipe a stream of two pipes writes to (a child's stdin, or a child node's
    stdout: a :class:`trio.StapledStream` whose send half is a
    :class:`trio.lowlevel.FdStream`, or holds one as ``stream``), for a send's own write
    as a socket's (what uses it calls only ``fileno()``; a write it refuses is left to
    the writer, whose ``send_all`` meets the error)."""
    send = getattr(stream, "send_stream", None) if isinstance(stream, trio.StapledStream) else None
    send = getattr(send, "stream", send)
    if isinstance(send, trio.lowlevel.FdStream):
        return cast("trio.socket.SocketType", send)
    return None


class FramedDriver:
    """The connection-driving half of :class:`~pipekit.kernel.FramedPipe`."""

    def __init__(
        self,
        stream: Transport,
        conn: Connection,
        *,
        name: str,
        send_buffer: int = DEFAULT_SEND_BUFFER,
        read_size: int = DEFAULT_READ_SIZE,
        close_timeout: float | None = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.name = name
        self.stream = stream
        self._direct_socket = direct_socket(stream) or _direct_pipe(stream)
        self.conn = conn
        self._socket_reader = socket_reader(stream, conn, read_size, self._on_read, self._on_eof)
        # What the receiver holds is bounded in decoded messages, not only in bytes:
        # DATA beyond high_water unconsumed messages stays encoded until it is wanted.
        conn.decode_on_demand = True
        self._send_buffer = send_buffer
        self._read_size = read_size
        self.close_timeout = close_timeout
        """Seconds a close waits for the peer's END or ERROR after ours, then for EOF,
        and at most waits behind a peer that keeps it paused and takes nothing (None: no
        limit; 0: no wait for the peer: what is queued is still written, and only what
        has arrived is reported). May be changed while the pipe is open."""
        self._inbox: deque[Any] = deque()
        self._rx_done: BaseException | None = None  # EndOfChannel or the failure
        self._told = False  # a failure of this pipe was raised to the application
        self._tx_broken: BaseException | None = None
        self._closing = False  # aclose() or abandon() began: the application is done
        self._closed = False  # the transport is closed
        self._close_acked = False  # the peer answered the PING of our close
        self._half_closed = False  # the writer sent EOF: both directions are closed
        self._end_written = False  # our END or ERROR, and all before it, is written
        self._reader_done = trio.Event()  # EOF, a transport error or a violation
        self._transport_failed = False
        self._handshake = trio.Event()
        self._handshake_error: BaseException | None = None
        self._rx_event = trio.Event()
        self._tx_event = trio.Event()
        self._space_event = trio.Event()
        self._writer_idle = trio.Event()
        self._writer_stopped = False
        self._writer_cut = False  # cancelled in the middle of a write
        self._closed_event = trio.Event()
        self._transport_done = False  # EOF or a transport error: no more input can come
        self._paused_seconds = 0.0
        self._send_calls = 0
        self._unyielded_bytes = 0  # written by send() itself since it last yielded
        # send() wrote to the socket itself since this pipe's tasks last yielded: what
        # is sent before the next yield is left to the writer, which coalesces it.
        self._wrote_unyielded = False
        self._receive_calls = 0
        # While a receiver waits in receive_with: its handler, given each decoded batch
        # in the reader's task (see FramedPipe.receive_with); what the handler raised.
        self._handler: Callable[[list[Any]], int] | None = None
        self._handler_error: Exception | None = None
        self._rx_waiter: trio.lowlevel.Task | None = None  # receive_with's parked task
        self.last_pong: bytes | None = None
        # Shared with a thread that writes DATA frames itself (see thread_sender).
        self._wire: Wire | None = None

    @property
    def peer(self) -> dict[str, Any]:
        """The peer's HELLO (without its token)."""
        return dict(self.conn.peer or {})

    @property
    def sending(self) -> bool:
        """True while this side may still send: it has neither ended nor failed its
        direction."""
        return self.conn.send_state is OPEN

    @property
    def violation(self) -> ProtocolError | None:
        """The protocol violation (either side's) that broke this pipe, if any."""
        return self.conn.failure

    # -- background tasks -------------------------------------------------------------

    async def _reader(self) -> None:
        try:
            if self._socket_reader is not None:
                await self._socket_reader.run()
            else:
                await read_into(
                    self.stream, self.conn, self._read_size, self._on_read, self._on_eof
                )
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._on_transport_error(exc)
        finally:
            self._reader_done.set()

    async def _watch_idle(self, idle_timeout: float) -> None:
        """Fail the pipe (kind ``idle_timeout``) when nothing arrives for
        ``idle_timeout`` seconds; after half of it, a PING asks a live peer to answer.

        It watches for as long as the transport can still bring input, also after the
        peer's END: a peer that has ended still answers PING, and one that paused us (or
        stopped reading) and then went silent must not hold this pipe forever."""
        half = idle_timeout / 2
        conn = self.conn  # what it has received shows whether the peer is alive
        while self._watching():
            seen = conn.bytes_received
            await trio.sleep(half)
            if conn.bytes_received != seen or not self._watching():
                continue
            if conn.handshake_complete:
                conn.ping(b"idle?")
                self._tx_event.set()
            await trio.sleep(half)
            if conn.bytes_received != seen or not self._watching():
                continue
            self._on_events(
                conn.reject(
                    f"nothing received from the peer for {idle_timeout:g} s",
                    kind=ErrorKind.IDLE_TIMEOUT,
                )
            )
            return

    def _watching(self) -> bool:
        """Whether the idle watchdog has a job: the pipe is open and not failed, the
        transport has not reported EOF or an error, and the directions are not both
        closed (after that, nothing more may be sent: not even a PING)."""
        return not (
            self._closed
            or self._transport_done
            or self.conn.failure is not None
            or self._both_closed()
        )

    def _both_closed(self) -> bool:
        """Both directions are closed: we sent END or ERROR, and the peer's END or ERROR
        (or the end of the transport) arrived."""
        return self.conn.send_state is not OPEN and self._rx_done is not None

    def _on_read(self, events: list[Event]) -> None:
        """The reader's delivery. The reader ran, so the sending task yielded since it
        last wrote itself: its next send is a new lone message, not the tail of a
        burst (see ``FramedPipe._write_now``)."""
        self._wrote_unyielded = False
        self._on_events(events)

    def _on_events(self, events: list[Event]) -> None:
        while events:
            self._handle_events(events)
            # Closing, or a receive_with handler taking what arrives: what the machine
            # held back is decoded (and discarded or handed over) too, a window at a time.
            events = (
                self.conn.receive_held()
                if (self._closing or self._handler is not None) and self.conn.held_bytes
                else []
            )

    def _handle_events(self, events: list[Event]) -> None:
        if self._end_written and self._rx_done is not None:
            return  # both directions are closed: what still arrives is ignored
        for event in events:
            if type(event) is MessagesReceived:
                if self._closing:  # nobody will receive them: let the peer go on
                    if self.conn.consumed(len(event.messages)):
                        self._tx_event.set()
                    continue
                if self._handler is not None and not self._inbox:
                    self._offer(self._handler, event.messages)
                    continue
                self._inbox.extend(event.messages)
                self._wake_rx()
            elif isinstance(event, HandshakeComplete):
                self._handshake.set()
            elif isinstance(event, ResumeReceived):
                self._space_event.set()
            elif isinstance(event, EndReceived):
                self._finish_rx(trio.EndOfChannel())
            elif isinstance(event, ErrorReceived):
                err = RemoteError(event.kind, event.message, event.details)
                self._finish_rx(err)
                if not self._handshake.is_set():
                    self._fail_handshake(err)
            elif isinstance(event, PongReceived):
                if event.payload == CLOSE_PING and self._closing:
                    self._close_acked = True
                else:
                    self.last_pong = event.payload
            elif isinstance(event, ProtocolViolation):
                self._finish_rx(event.error)
                self._break_tx(event.error)
                self._fail_handshake(event.error)
        if self.conn.has_data_to_send:  # PAUSE, RESUME, PONG, the answer HELLO, an ERROR
            self._tx_event.set()

    def _wake_rx(self) -> None:
        """Wake the waiting receivers (those of the event, and the one task that may
        wait in ``receive_with``): messages, their end, or the close."""
        self._rx_event.set()
        waiter = self._rx_waiter
        if waiter is not None:
            self._rx_waiter = None
            trio.lowlevel.reschedule(waiter)

    def _offer(self, handler: Callable[[list[Any]], int], messages: list[Any]) -> None:
        """Hand ``messages`` to the waiting receiver's ``handler`` (in the reader's task):
        what it takes counts as consumed; what it leaves, or an exception it raised, ends
        the wait (the rest is queued for the receiver, the exception raised to it; the
        messages of a batch it raised for count as taken)."""
        count = len(messages)
        try:
            taken = max(0, min(handler(messages), count))
        except Exception as exc:  # the receiver's: its receive_with raises it
            self._handler_error = exc
            taken = count
        if taken < count or self._handler_error is not None:
            self._handler = None
            self._inbox.extend(messages[taken:] if taken else messages)
            self._wake_rx()
        if taken and self.conn.consumed(taken):
            self._tx_event.set()

    def _on_eof(self) -> None:
        self._transport_done = True
        peer = (self.conn.peer or {}).get("name", "peer")
        if not self._handshake.is_set():
            self._fail_handshake(
                RemoteProtocolError(
                    "connection closed before the handshake completed", kind=ErrorKind.HANDSHAKE
                )
            )
        if self.conn.receive_state is OPEN:  # (an END may be held behind DATA)
            self._finish_rx(trio.BrokenResourceError(f"{peer} closed the connection without END"))
        if self.conn.peer_paused and not self._end_written:
            # The peer can never RESUME now: what is held back will not be delivered.
            self._break_tx(
                trio.BrokenResourceError(
                    f"{peer} paused this pipe and then closed the connection: "
                    f"{self.conn.buffered_bytes} queued bytes cannot be delivered"
                )
            )

    def _on_transport_error(self, exc: BaseException) -> None:
        self._transport_done = True
        self._transport_failed = True
        if self._closed:
            return
        err = trio.BrokenResourceError(f"{self.name}: transport failed: {exc}")
        err.__cause__ = exc
        if self.conn.receive_state is OPEN:  # (an END may be held behind DATA)
            self._finish_rx(err)
        if not self._end_written:  # (once it is, the reader reports what is lost)
            self._break_tx(err)
        self._fail_handshake(err)

    def _on_write_error(self, exc: BaseException) -> None:
        """A write failed: only the sending direction is broken. What the peer sent
        before it closed is still readable, so the reader goes on until EOF and the
        receiver gets every message and the END (a peer that closed without END is
        reported by the reader, as such). Once our END or ERROR is written, the sending
        direction has nothing left to lose (what the peer did not get, the reader reports
        as a connection that broke before the peer's END)."""
        if self._closed or self._end_written:
            return
        err = trio.BrokenResourceError(f"{self.name}: transport failed: {exc}")
        err.__cause__ = exc
        self._break_tx(err)
        self._fail_handshake(err)

    def _finish_rx(self, outcome: BaseException) -> None:
        if self._rx_done is None:
            self._rx_done = outcome
        self._wake_rx()
        self._tx_event.set()  # the writer half-closes once both directions are closed

    def _break_tx(self, exc: BaseException) -> None:
        if self._tx_broken is None:
            self._tx_broken = exc
        self._space_event.set()
        self._tx_event.set()

    def _fail_handshake(self, exc: BaseException) -> None:
        if not self._handshake.is_set():
            self._handshake_error = exc
            self._handshake.set()

    async def _writer(self) -> None:
        conn = self.conn
        take, send = writes_for(self.stream, self.conn)
        try:
            while True:
                if self._wire is None:
                    wrote = await self._write_taken(take, send)
                else:
                    wrote = await self._write_taken_on_wire(self._wire, take, send)
                if wrote:
                    continue
                self._writer_idle.set()
                if conn.failure is not None:
                    # The ERROR for a violation is out: disconnect.
                    await self.stream.aclose()
                    return
                if (
                    self._both_closed()
                    and not conn.has_data_to_send  # (DATA and END held back by PAUSE)
                    and not self._transport_failed
                ):
                    # Nothing more may be sent (section 5): say so with EOF where the
                    # transport can, so a peer reading until EOF closes now.
                    self._half_closed = True
                    if isinstance(self.stream, trio.abc.HalfCloseableStream):
                        await self.stream.send_eof()
                    return
                self._tx_event = trio.Event()
                await self._tx_event.wait()
                self._wrote_unyielded = False
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if not self._closed:
                # What arrived before the failure (the peer's ERROR, say) is read first:
                # the peer's reason wins over the broken pipe it caused.
                with trio.move_on_after(_READER_DRAIN):
                    await self._reader_done.wait()
            self._on_write_error(exc)
        finally:
            self._writer_stopped = True
            self._writer_idle.set()
            self._space_event.set()

    async def _write_taken(
        self, take: Callable[[], Pieces], send: Callable[[Pieces], Awaitable[None]]
    ) -> bool:
        """Write what the machine has ready; False if there was nothing."""
        writes = take()
        if not writes:
            return False
        # Events are replaced only once set, never while a task may still be waiting
        # on them (a replaced unset event would strand its waiters).
        if self._writer_idle.is_set():
            self._writer_idle = trio.Event()
        self._writer_cut = True
        await send(writes)
        self._writer_cut = False
        self._space_event.set()
        conn = self.conn
        if conn.send_state is not OPEN and not conn.has_data_to_send:
            self._end_written = True
        return True

    async def _write_taken_on_wire(
        self, wire: Wire, take: Callable[[], Pieces], send: Callable[[Pieces], Awaitable[None]]
    ) -> bool:
        """:meth:`_write_taken`, owning the socket it shares with a thread: taken and
        written while the thread cannot write (see ``ThreadSender``)."""
        await wire.take()
        try:
            if wire.cut and self.conn.has_data_to_send:
                # The thread left half a frame on the wire: nothing can follow it.
                raise trio.BrokenResourceError("a frame was cut off in the middle")
            return await self._write_taken(take, send)
        finally:
            wire.release()

    async def _last_words(self) -> None:
        """Put the END or ERROR that closed this direction on the wire, shielded and
        within a second, when the block is left with an exception. A cancellation of the
        block stops the writer too (``RemoteModule`` tells its peer that it was stopped
        and then sees that cancellation): what the writer left queued is then written
        here, so the peer gets the reason rather than a bare close - unless the writer
        was cut off in the middle of a write, which may have left half a frame."""
        if self._closed or self.conn.send_state is OPEN:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await self._flush()
            if (
                self._writer_stopped
                and not self._writer_cut
                and not self._half_closed
                and self._tx_broken is None
            ):
                take, send = writes_for(self.stream, self.conn)
                if self._wire is None:
                    await self._write_taken(take, send)
                else:
                    await self._write_taken_on_wire(self._wire, take, send)

    def start(self, nursery: trio.Nursery, *, idle_timeout: float | None = None) -> None:
        """Start the tasks that drive the connection in ``nursery``: the reader, the
        writer and, with ``idle_timeout``, the idle watchdog."""
        nursery.start_soon(self._reader)
        nursery.start_soon(self._writer)
        if idle_timeout is not None:
            nursery.start_soon(self._watch_idle, idle_timeout)

    async def _flush(self) -> None:
        """Wait until the writer has put everything queued on the wire."""
        while not self._writer_stopped and (
            self.conn.buffered_bytes or not self._writer_idle.is_set()
        ):
            if self._tx_broken is not None and self.conn.failure is None:
                return  # nothing more can be delivered (a violation's ERROR still can)
            self._tx_event.set()
            if self.conn.buffered_bytes and self._writer_idle.is_set():
                # Held back by the peer's PAUSE: wait for RESUME or a failure.
                if self._space_event.is_set():
                    self._space_event = trio.Event()
                await self._space_event.wait()
            else:
                await self._writer_idle.wait()

    async def _flush_while_moving(self) -> None:
        """:meth:`_flush`, for as long as it makes progress: a peer that keeps us paused
        while it drains slowly is waited for, one that keeps us paused and takes nothing
        for ``close_timeout`` is given up on (the sending direction breaks: what is still
        queued is lost, and the close says so)."""
        timeout = self.close_timeout
        if not timeout:  # None, or 0: what is queued is written, however long it takes
            await self._flush()
            return
        while True:
            sent = self.conn.bytes_sent
            with trio.move_on_after(timeout):
                await self._flush()
                return
            if self.conn.bytes_sent == sent:
                peer = (self.conn.peer or {}).get("name", "the peer")
                self._break_tx(
                    trio.BrokenResourceError(
                        f"{peer} kept this pipe paused for {timeout:g} s while it was "
                        f"closing: {self.conn.buffered_bytes} queued bytes were not delivered"
                    )
                )
                return
