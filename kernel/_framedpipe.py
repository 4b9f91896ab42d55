"""The framed pipe: a :class:`~pipekit.kernel.Pipe` driving one pipekit/1
:class:`~pipekit.kernel.protocol.Connection` over a transport.

Two tasks serve it: a reader that never stops reading the transport (so PAUSE, RESUME,
END and ERROR are never held up by data it has not read) and a writer that sends
whatever the machine has queued in one write (so messages queued while a write is under
way are coalesced). On a socket, ``send`` writes a large queue itself when the writer
is idle.

Closing follows ``docs/protocol.md`` section 5: our END (or ERROR), then a wait of at
most ``close_timeout`` for the peer's END or ERROR (what arrives meanwhile is discarded,
so a paused peer can finish), then, once both directions are closed, a half-close and a
read until EOF, so that the transport closes with nothing unread and never resets what
the peer still had to deliver. A close reports what the sender would otherwise lose
silently: the peer's ERROR, a connection that broke before the peer's END, or a peer
that neither ended nor answered a PING within ``close_timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

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
from ._transport import Transport, direct_socket, read_into, write_some, writes_for
from .errors import ErrorKind, ProtocolError, RemoteError, RemoteProtocolError
from .options import DEFAULT_CLOSE_TIMEOUT, DEFAULT_READ_SIZE, DEFAULT_SEND_BUFFER
from .pipe import Pipe, PipeStats
from .protocol import Connection

__all__ = ["FramedPipe"]

_CLOSE_PING = b"pipekit:close"
"""The payload of the PING a closing pipe sends, half way through ``close_timeout``, to
a peer that has not ended its direction yet."""
_READER_DRAIN = 1.0
"""Seconds a failed write waits for the reader to take what had arrived before it (the
peer's ERROR, typically), so that the peer's reason, not the broken pipe, is reported."""

_FAIRNESS_EVERY = 64
_WRITE_NOW_MIN = 64 * 1024
"""``send`` writes to a socket itself, rather than waking the writer, once this many
bytes are queued and the writer is idle (see :meth:`FramedPipe._write_now`)."""


class FramedPipe(Pipe):
    """A :class:`Pipe` speaking pipekit/1 over a byte stream. Made by :func:`framed_pipe`."""

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
        self._direct_socket = direct_socket(stream)
        self.conn = conn
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
        self._receive_calls = 0
        self.last_pong: bytes | None = None

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
            await read_into(self.stream, self.conn, self._read_size, self._on_events, self._on_eof)
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

    def _on_events(self, events: list[Event]) -> None:
        while events:
            self._handle_events(events)
            # Closing: what arrives is discarded at once, so what the machine held back
            # is decoded (and discarded) too, a window at a time.
            events = self.conn.receive_held() if self._closing and self.conn.held_bytes else []

    def _handle_events(self, events: list[Event]) -> None:
        if self._end_written and self._rx_done is not None:
            return  # both directions are closed: what still arrives is ignored
        for event in events:
            if type(event) is MessagesReceived:
                if self._closing:  # nobody will receive them: let the peer go on
                    if self.conn.consumed(len(event.messages)):
                        self._tx_event.set()
                    continue
                self._inbox.extend(event.messages)
                self._rx_event.set()
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
                if event.payload == _CLOSE_PING and self._closing:
                    self._close_acked = True
                else:
                    self.last_pong = event.payload
            elif isinstance(event, ProtocolViolation):
                self._finish_rx(event.error)
                self._break_tx(event.error)
                self._fail_handshake(event.error)
        if self.conn.has_data_to_send:  # PAUSE, RESUME, PONG, the answer HELLO, an ERROR
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
            self._finish_rx(
                trio.BrokenResourceError(f"{peer} closed the connection without END")
            )
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
        self._rx_event.set()
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
                writes = take()
                if writes:
                    # Events are replaced only once set, never while a task may still be
                    # waiting on them (a replaced unset event would strand its waiters).
                    if self._writer_idle.is_set():
                        self._writer_idle = trio.Event()
                    self._writer_cut = True
                    await send(writes)
                    self._writer_cut = False
                    self._space_event.set()
                    if conn.send_state is not OPEN and not conn.has_data_to_send:
                        self._end_written = True
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
                writes = take()
                if writes:
                    await send(writes)
                    if not self.conn.has_data_to_send:
                        self._end_written = True

    # -- sending ----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closing:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._tx_broken is not None:
            raise self._send_failure()
        if self.conn.send_state is not OPEN:
            raise trio.ClosedResourceError(
                f"{self.name}: sending direction already {self.conn.send_state}"
            )

    def _send_failure(self) -> BaseException:
        """What a send raises once the sending direction broke: the peer's ERROR if it
        sent one (it came first, and says why: the broken transport is its consequence),
        else a :class:`trio.BrokenResourceError` caused by the transport's error."""
        self._told = True
        broken = self._tx_broken
        rx = self._rx_done
        if isinstance(rx, RemoteError):
            err = RemoteError(rx.kind, rx.message, rx.details)
            err.__cause__ = broken
            return err
        failure = trio.BrokenResourceError(f"{self.name}: pipe is broken: {broken}")
        failure.__cause__ = broken
        return failure

    def _write_now(self) -> bool:
        """Write what is queued straight to the socket, without waiting, when the writer
        is idle and at least ``_WRITE_NOW_MIN`` bytes are queued, which saves a hand-off
        to the writer task per large message. Returns True if nothing is left for the
        writer.

        The write never waits, so it cannot be cut off by a cancellation: what the socket
        does not take now is given back to the machine, ahead of everything else, and
        the writer sends it (and meets again any error, which it reports)."""
        sock = self._direct_socket
        conn = self.conn
        if (
            sock is None
            or conn.buffered_bytes < _WRITE_NOW_MIN
            or not self._writer_idle.is_set()
            or self._writer_stopped
            or conn.failure is not None
        ):
            return False
        pieces = conn.data_to_send_pieces()
        written = write_some(sock, pieces)
        if written:
            self._unyielded_bytes += written
            self._space_event.set()
        if written < sum(map(len, pieces)):
            conn.unwritten(pieces, written)
            return False
        return True

    async def _wait_for_space(self) -> None:
        conn = self.conn
        limit = self._send_buffer
        if conn.can_send and conn.buffered_bytes < limit:
            return
        start = trio.current_time()
        try:
            while True:
                self._check_send()
                if conn.can_send and conn.buffered_bytes < limit:
                    return
                if self._space_event.is_set():  # shared by every waiting sender
                    self._space_event = trio.Event()
                await self._space_event.wait()
        finally:
            self._paused_seconds += trio.current_time() - start

    async def send(self, value: Any) -> None:
        self._send_calls += 1
        # Yielding lets the reader see a PAUSE: send() writes at most send_buffer bytes
        # itself between two yields, no more than it could queue for the writer.
        if self._send_calls % _FAIRNESS_EVERY == 0 or self._unyielded_bytes >= self._send_buffer:
            self._unyielded_bytes = 0
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        self._check_send()
        await self._wait_for_space()
        self.conn.send(value)
        if not self._write_now():
            self._tx_event.set()

    async def send_batch(self, values: Sequence[Any]) -> None:
        self._unyielded_bytes = 0
        await trio.lowlevel.checkpoint()
        self._check_send()
        await self._wait_for_space()
        self.conn.send_many(values)
        if not self._write_now():
            self._tx_event.set()

    async def end(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.conn.send_state is not OPEN:
            return
        self._check_send()
        self.conn.end()
        self._tx_event.set()

    async def fail(self, exc: BaseException, **details: Any) -> None:
        """End the sending direction with an ERROR frame: ``kind`` is ``exc.kind`` if it
        has one, else its type name; ``message`` is ``str(exc)``; ``details`` are extra
        JSON fields of the payload (for example a ``traceback``)."""
        await trio.lowlevel.checkpoint()
        kind = getattr(exc, "kind", None)
        self.fail_nowait(
            kind if isinstance(kind, str) else type(exc).__name__,
            str(exc) or type(exc).__name__,
            **details,
        )

    def fail_nowait(self, kind: str, message: str, **details: Any) -> None:
        """Queue ERROR ``{kind, message, **details}`` after everything already sent, at
        once (no checkpoint); a no-op once this direction is closed or the pipe broke."""
        if self._closed or self._tx_broken is not None:
            return
        self.conn.fail(kind, message, **details)
        self._tx_event.set()

    async def ping(self, payload: bytes = b"") -> None:
        """Send PING; the peer's PONG payload appears in :attr:`last_pong`."""
        await trio.lowlevel.checkpoint()
        self._check_send()
        self.conn.ping(payload)
        self._tx_event.set()

    # -- receiving --------------------------------------------------------------------

    async def _wait_for_messages(self) -> None:
        while not self._inbox:
            if self._closing:
                raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
            if self._rx_done is not None:
                if type(self._rx_done) is not trio.EndOfChannel:
                    self._told = True
                raise self._rx_done
            if self._rx_event.is_set():  # shared by every waiting receiver
                self._rx_event = trio.Event()
            await self._rx_event.wait()

    async def receive(self) -> Any:
        self._receive_calls += 1
        if self._receive_calls % _FAIRNESS_EVERY == 0:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if not self._inbox:
            await self._wait_for_messages()
        item = self._inbox.popleft()
        self._consumed(1)
        return item

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        # A checkpoint either way, yielding once: a receiver that has to wait for
        # messages blocks in _wait_for_messages (as trio's own channels do).
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._inbox:
            await trio.lowlevel.cancel_shielded_checkpoint()
        await self._wait_for_messages()
        inbox = self._inbox
        if max_items is None or len(inbox) <= max_items:
            batch = list(inbox)
            inbox.clear()
        else:
            batch = [inbox.popleft() for _ in range(max_items)]
        self._consumed(len(batch))
        return batch

    def _consumed(self, count: int) -> None:
        """The application took ``count`` messages: the machine may RESUME the peer,
        and decodes the next window of what it held back."""
        conn = self.conn
        if conn.consumed(count):
            self._tx_event.set()
        if conn.held_bytes:
            self._on_events(conn.receive_held())

    # -- running: the steps of framed_pipe ----------------------------------------------

    def start(self, nursery: trio.Nursery, *, idle_timeout: float | None = None) -> None:
        """Start the tasks that drive the connection in ``nursery``: the reader, the
        writer and, with ``idle_timeout``, the idle watchdog."""
        nursery.start_soon(self._reader)
        nursery.start_soon(self._writer)
        if idle_timeout is not None:
            nursery.start_soon(self._watch_idle, idle_timeout)

    async def complete_handshake(
        self, *, handshake_timeout: float | None, started: float | None = None
    ) -> None:
        """Wait until the handshake is done; an acceptor's HELLO answer is on the wire
        when this returns.

        Raises :class:`~pipekit.kernel.RemoteProtocolError` (kind ``handshake_timeout``)
        ``handshake_timeout`` seconds after ``started`` (a :func:`trio.current_time`;
        default: now), having told the peer why, or the error that refused the handshake,
        once the ERROR with the reason is sent."""
        conn = self.conn
        deadline = float("inf")
        if handshake_timeout is not None:
            deadline = (trio.current_time() if started is None else started) + handshake_timeout
        with trio.move_on_at(deadline):
            await self._handshake.wait()
        if not self._handshake.is_set():
            conn.fail(
                ErrorKind.HANDSHAKE_TIMEOUT,
                f"handshake did not complete within {handshake_timeout} s",
            )
            self._tx_event.set()
            with trio.move_on_after(1):
                await self._flush()
            raise RemoteProtocolError(
                f"{conn.name}: handshake did not complete within {handshake_timeout} s",
                kind=ErrorKind.HANDSHAKE_TIMEOUT,
            )
        if self._handshake_error is not None:
            # A refused HELLO queued an ERROR with the reason: send it first.
            with trio.move_on_after(1):
                await self._flush()
            raise self._handshake_error
        if not conn.initiator:
            # Put the HELLO answer on the wire before handing the pipe over, so a body
            # that blocks the loop at once cannot stall the peer's handshake.
            with trio.move_on_after(1):
                await self._flush()

    async def abandon(self, exc: BaseException) -> None:
        """The code using this pipe raised ``exc``: fail the sending direction with it
        (unless it is a cancellation), put the END or ERROR that closed the direction on
        the wire and - unless cancelled - close gracefully: wait, at most
        ``close_timeout``, for the peer to close its direction (discarding what it
        sends), so that the transport is not reset under the ERROR. Never raises but a
        cancellation of the ERROR itself: ``exc`` is what the caller reports."""
        self._closing = True
        self._discard()
        if not isinstance(exc, trio.Cancelled) and not self._closed:
            with trio.CancelScope(shield=True):  # fail() is a checkpoint
                await self.fail(exc)
        await self._last_words()
        if isinstance(exc, trio.Cancelled) or self._closed:
            return
        # Cancelled from outside while lingering: ``exc`` says more, and the
        # cancellation is delivered again at the caller's next checkpoint.
        with suppress(trio.Cancelled):
            await self._linger(self._deadline())

    async def close_transport(self) -> None:
        """Mark this pipe closed and close its transport at once, without END or flush."""
        self._closing = True
        self._closed = True
        self._closed_event.set()
        await trio.aclose_forcefully(self.stream)

    # -- lifetime ---------------------------------------------------------------------

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

    def _deadline(self) -> float:
        timeout = self.close_timeout
        return float("inf") if timeout is None else trio.current_time() + timeout

    def _discard(self) -> None:
        """Drop what has arrived: the application is done receiving. Counted as
        consumed, so a peer we paused is RESUMEd and can reach its END."""
        count = len(self._inbox)
        if count:
            self._inbox.clear()
            self._consumed(count)

    async def _await_peer(self, deadline: float) -> None:
        """Wait until the peer's direction is closed (END, ERROR, or the transport's
        end), at the latest until ``deadline`` (what arrives meanwhile is discarded: the
        pipe is closing). Half way, a peer that is still open is sent a PING: its PONG
        proves it has received everything up to our END."""
        conn = self.conn
        now = trio.current_time()
        ping_at = now + (deadline - now) / 2
        pinged = False
        while self._rx_done is None and trio.current_time() < deadline:
            if not pinged and trio.current_time() >= ping_at:
                pinged = True
                if self._tx_broken is None and not self._writer_stopped:
                    conn.ping(_CLOSE_PING)
                    self._tx_event.set()
            if self._rx_event.is_set():
                self._rx_event = trio.Event()
            with trio.move_on_at(deadline if pinged else ping_at):
                await self._rx_event.wait()

    async def _linger(self, deadline: float) -> None:
        """The graceful end of a close: wait for the peer's direction to close, then -
        once the writer has said EOF, where the transport can - for the peer's EOF, so
        that nothing is left unread when the transport closes (a socket closed with
        unread input is reset, and a reset destroys what the peer had not yet sent)."""
        await self._await_peer(deadline)
        if self._rx_done is None or self._transport_failed:
            return
        if isinstance(self.stream, trio.abc.HalfCloseableStream):
            with trio.move_on_at(deadline):
                await self._reader_done.wait()

    def _close_failure(self) -> BaseException | None:
        """What a close reports, if anything - nothing if a failure of this pipe was
        raised to the application already (``receive`` or ``send`` told it): a failure
        of the peer's direction, else a sending direction that broke with messages on
        it, else a peer that kept its direction open past ``close_timeout`` without
        proving (by a PONG) that it received everything we sent."""
        if self._told:
            return None
        rx = self._rx_done
        if rx is not None and not isinstance(rx, trio.EndOfChannel):
            return rx
        sent = self.conn.messages_sent
        if self._tx_broken is not None and sent:
            return self._send_failure()
        if rx is None and sent and not self._close_acked and self.close_timeout:
            peer = (self.conn.peer or {}).get("name", "the peer")
            return trio.BrokenResourceError(
                f"{self.name}: {peer} neither ended its direction nor answered a PING within "
                f"{self.close_timeout:g} s of our END: delivery of the {sent} messages sent "
                "is not confirmed"
            )
        return None

    async def aclose(self) -> None:
        """END (if this side has not ended or failed), flush, wait for the peer to close
        its direction too (at most ``close_timeout``, discarding what it sends; not at
        all if this side sent no messages) and close the transport.

        Raises what the sender would otherwise lose silently: the peer's ERROR as
        :class:`~pipekit.kernel.RemoteError`, :class:`trio.BrokenResourceError` if the
        connection broke before the peer's END (or while messages were being sent) or if
        the peer neither ended nor answered a PING within ``close_timeout``, or if it kept
        this side paused, taking nothing, for ``close_timeout`` (a peer that drains slowly
        is waited for); a failure already raised by ``receive`` or ``send`` is not raised
        again. If cancelled, the transport is closed at once."""
        if self._closing:
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        self._discard()  # from now on what arrives is dropped, and a paused peer RESUMEd
        self._rx_event.set()  # receivers and senders in other tasks see the close
        self._space_event.set()
        failure: BaseException | None = None
        try:
            if self._tx_broken is None and self.conn.send_state is OPEN:
                self.conn.end()
                self._tx_event.set()
            if self._tx_broken is None:
                await self._flush_while_moving()
            elif self.conn.failure is not None and not self._writer_stopped:
                # A violation: let the writer deliver the ERROR frame with the reason.
                with trio.move_on_after(1):
                    await self._flush()
            if (
                self.conn.failure is None
                and self._tx_broken is None
                and (self._rx_done is not None or self.conn.messages_sent)
            ):
                # (A pipe that sent no messages has nothing whose delivery a wait could
                # confirm: the stream of a peer that is still open is abandoned at once.)
                await self._linger(self._deadline())
            failure = self._close_failure()
        finally:
            self._closed = True
            self._closed_event.set()
            self._rx_event.set()
            self._space_event.set()
            await trio.aclose_forcefully(self.stream)
        if failure is not None:
            raise failure

    async def wait_closed(self) -> None:
        """Wait until this pipe is closed (by :meth:`aclose` or its owner's exit)."""
        await self._closed_event.wait()

    @property
    def stats(self) -> PipeStats:
        conn = self.conn
        return PipeStats(
            messages_sent=conn.messages_sent,
            messages_received=conn.messages_received,
            bytes_sent=conn.bytes_sent,
            bytes_received=conn.bytes_received,
            paused_seconds=self._paused_seconds,
            queue_depth=len(self._inbox),
        )

    def __repr__(self) -> str:
        return f"<FramedPipe {self.name!r} codec={self.conn.codec_name}>"
