"""The framed pipe: a :class:`~pipekit.kernel.Pipe` over one pipekit/1
:class:`~pipekit.kernel.protocol.Connection`, driven by the tasks of
:class:`~pipekit.kernel._framedriver.FramedDriver`, which it extends with the API the
application uses: sending (on a socket, ``send`` writes a large queue itself when the
writer is idle), receiving, the handshake and the close.

Closing follows ``docs/protocol.md`` section 5: our END (or ERROR), then a wait of at
most ``close_timeout`` for the peer's END or ERROR (what arrives meanwhile is discarded,
so a paused peer can finish), then, once both directions are closed, a half-close and a
read until EOF, so that the transport closes with nothing unread and never resets what
the peer still had to deliver. A close reports what the sender would otherwise lose
silently: the peer's ERROR, a connection that broke before the peer's END, or a peer
that neither ended nor answered a PING within ``close_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import trio

from ._framedriver import CLOSE_PING, FramedDriver
from ._frames import OPEN
from ._threadsend import ThreadSender, Wire
from ._transport import write_some
from .errors import ErrorKind, RemoteError, RemoteProtocolError
from .lane import run_context
from .pipe import Pipe, PipeStats

__all__ = ["FramedPipe"]


_FAIRNESS_EVERY = 64
_WRITE_NOW_MIN = 64 * 1024
"""``send`` writes to a socket itself, rather than waking the writer, once this many
bytes are queued and the writer is idle (see :meth:`FramedPipe._write_now`)."""


class FramedPipe(FramedDriver, Pipe):
    """A :class:`Pipe` speaking pipekit/1 over a byte stream. Made by :func:`framed_pipe`."""

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

    def _can_write_now(self) -> bool:
        """Whether a send may write to the socket itself now: the writer is idle and
        running, and nothing failed (what else :meth:`_write_now` asks is the sender's)."""
        return (
            self._direct_socket is not None
            and self._wire is None  # (a thread shares the socket: the writer writes)
            and self._writer_idle.is_set()
            and not self._writer_stopped
            and self.conn.failure is None
        )

    def _write_pieces(self, pieces: list[bytes | memoryview]) -> bool:
        """Write what the socket takes of ``pieces`` now (taken from the machine), give
        the rest back to it; True if all was written and nothing is left queued (a take
        stops after ``TAKE_MAX`` bytes: the writer writes the rest)."""
        sock = self._direct_socket
        assert sock is not None
        written = write_some(sock, pieces)
        if written:
            self._unyielded_bytes += written
            self._space_event.set()
        if written == (len(pieces[0]) if len(pieces) == 1 else sum(map(len, pieces))):
            if not self.conn.has_data_to_send:
                return True
        else:
            self.conn.unwritten(pieces, written)
        # The writer has work now: sends queue for it until it is idle again, rather
        # than try the socket that just stopped taking (a write that fails with EAGAIN,
        # and the rest handed back again, per message: unix, 64 KiB one way).
        if self._writer_idle.is_set():
            self._writer_idle = trio.Event()
        return False

    def _write_now(self) -> bool:
        """Write what is queued straight to the socket, without waiting, when the writer
        is idle and either this is the first send since the pipe last yielded (a lone
        message: it goes out now, with no hand-off to the writer task, which in a round
        trip is a scheduler pass on each side) or at least ``_WRITE_NOW_MIN`` bytes are
        queued (a large message: the same hand-off saved). Sends that follow within the
        same scheduler pass queue, and the writer coalesces them into its next write.
        Returns True if nothing is left for the writer.

        The write never waits, so it cannot be cut off by a cancellation: what the socket
        does not take now is given back to the machine, ahead of everything else, and
        the writer sends it (and meets again any error, which it reports)."""
        if (
            self._wrote_unyielded and self.conn.buffered_bytes < _WRITE_NOW_MIN
        ) or not self._can_write_now():
            return False
        self._wrote_unyielded = True
        return self._write_pieces(self.conn.data_to_send_pieces())

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
                self._wrote_unyielded = False
                self._send_calls = self._unyielded_bytes = 0
                await self._space_event.wait()
        finally:
            self._paused_seconds += trio.current_time() - start

    async def _send_checkpoint(self, count: int) -> None:
        """The checkpoint of a send of ``count`` messages: a full yield once
        ``_FAIRNESS_EVERY`` messages were sent, or ``send_buffer`` bytes written by the
        senders themselves, since this pipe's user last yielded (or waited); otherwise
        only a cancellation check. Yielding also lets the reader see a PAUSE: a sender
        writes at most ``send_buffer`` bytes itself between two yields, no more than it
        could queue for the writer. A full yield on every send is a scheduler pass per
        message (3.6 us here) and, before a receive, one more pass in a round trip."""
        self._send_calls += count
        if self._send_calls >= _FAIRNESS_EVERY or self._unyielded_bytes >= self._send_buffer:
            self._send_calls = 0
            self._unyielded_bytes = 0
            self._wrote_unyielded = False
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint_if_cancelled()

    async def send(self, value: Any) -> None:
        # _send_checkpoint(1), _check_send() and _wait_for_space() inlined for their
        # common case (measured: 4.45 -> 3.37 us of CPU per message sent and received one
        # at a time over a socketpair in one loop): no call, and trio's cancellation
        # check without its coroutine (see kernel.lane.run_context).
        calls = self._send_calls + 1
        if calls >= _FAIRNESS_EVERY or self._unyielded_bytes >= self._send_buffer:
            await self._send_checkpoint(1)
        else:
            self._send_calls = calls
            task = run_context.task
            if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
                await trio.lowlevel.checkpoint()
            task._cancel_points += 1
        conn = self.conn
        if self._closing or self._tx_broken is not None or conn.send_state is not OPEN:
            self._check_send()
        if conn.peer_paused or conn.codec is None or conn.buffered_bytes >= self._send_buffer:
            await self._wait_for_space()
        if not self._wrote_unyielded:
            if self._can_write_now():
                # A lone message: framed and written in one step (see _write_now).
                self._wrote_unyielded = True
                if self._write_pieces(conn.send_and_take(value)):
                    return
            else:
                conn.send(value)
        else:
            conn.send(value)
            # (_write_now: a send that follows one that wrote itself writes only once
            # a large message is queued; the writer coalesces the rest.)
            if conn.buffered_bytes >= _WRITE_NOW_MIN and self._write_now():
                return
        tx = self._tx_event
        if not tx.is_set():
            tx.set()

    def send_nowait(self, value: Any) -> bool:
        """:meth:`send` without waiting, for a caller that cannot await (the actor
        nodes' ``send``): queue ``value``, written to the transport at once if the writer is
        idle, and return True; or return False, with nothing queued, if ``send`` would
        have to wait (the handshake is not complete, the peer PAUSEd the pipe, or
        ``send_buffer`` is full). Raises as ``send`` does for a closed or broken pipe and
        a value the codec cannot carry.

        Example::

            if not pipe.send_nowait(message):
                await pipe.send(message)
        """
        conn = self.conn
        if self._closing or self._tx_broken is not None or conn.send_state is not OPEN:
            self._check_send()
        if conn.peer_paused or conn.codec is None or conn.buffered_bytes >= self._send_buffer:
            return False
        if not self._wrote_unyielded and self._can_write_now():
            self._wrote_unyielded = True
            if self._write_pieces(conn.send_and_take(value)):
                return True
        else:
            conn.send(value)
        tx = self._tx_event
        if not tx.is_set():
            tx.set()
        return True

    async def send_batch(self, values: Sequence[Any]) -> None:
        # A batch counts as its messages: one of _FAIRNESS_EVERY or more always yields
        # (as it always did), a small one - a reply, say - costs no scheduler pass.
        await self._send_checkpoint(max(1, len(values)))
        self._check_send()
        await self._wait_for_space()
        self.conn.send_many(values)
        if not self._write_now():
            self._tx_event.set()

    def send_batch_nowait(self, values: Sequence[Any]) -> bool:
        """Queue ``values`` now, without waiting, if the pipe can take them as it is:
        open, not paused by the peer, and less than ``send_buffer`` bytes queued; the
        first such call since the pipe last yielded writes them to the socket at once,
        later ones are coalesced by the writer (as :meth:`send` does). Returns False,
        with nothing queued, if the pipe cannot take them now (then ``send_batch``
        waits, or raises what stops it). Raises what ``send_batch`` raises for values
        it cannot send (:class:`~pipekit.kernel.CodecError`, an oversize
        :class:`~pipekit.kernel.ProtocolError`), with nothing queued. Not a
        checkpoint: for a caller that yields anyway, such as one about to wait for
        the answer.

        Example::

            if not pipe.send_batch_nowait([request]):
                await pipe.send_batch([request])
        """
        conn = self.conn
        if (
            self._closing
            or self._tx_broken is not None
            or conn.send_state is not OPEN
            or conn.peer_paused
            or conn.codec is None
            or conn.buffered_bytes >= self._send_buffer
        ):
            return False
        conn.send_many(values)
        if not self._write_now():
            self._tx_event.set()
        return True

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

    def thread_sender(self, ready: Callable[[], bool]) -> ThreadSender | None:
        """A :class:`~pipekit.kernel._threadsend.ThreadSender` with which one thread
        writes messages to this pipe's socket itself, when nothing else is under way
        (its calls return False otherwise, with nothing sent: the thread then hands its
        messages to the pipe as usual); ``ready()`` is the caller's own condition,
        checked at each call. None if the transport is neither a socket nor a pair of
        OS pipes it can write to, or the handshake is not complete. Call it once, from
        the pipe's trio thread; from then on the pipe's own sends go through its writer
        task, which shares the transport with the thread frame by frame.

        Example::

            sender = pipe.thread_sender(lambda: True)
            await trio.to_thread.run_sync(sender.send, "from a thread")  # True: written
        """
        sock = self._direct_socket
        if sock is None or self.conn.codec is None or self._wire is not None:
            return None
        self._wire = Wire()
        return ThreadSender(self.conn, sock, self._wire, self._thread_may_write, ready)

    def _thread_may_write(self) -> bool:
        """Whether a thread may write now, as far as this pipe goes (read from the thread,
        under the wire's lock): open, unbroken, and the writer idle."""
        return (
            not self._closing
            and self._tx_broken is None
            and self.conn.failure is None
            and self.conn.send_state is OPEN
            and self._writer_idle.is_set()
            and not self._writer_stopped
        )

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
            self._wrote_unyielded = False
            self._send_calls = self._unyielded_bytes = self._receive_calls = 0
            await self._rx_event.wait()

    async def receive(self) -> Any:
        calls = self._receive_calls + 1
        if calls >= _FAIRNESS_EVERY:
            self._receive_calls = 0
            await trio.lowlevel.checkpoint()
        else:
            self._receive_calls = calls
            task = run_context.task  # (checkpoint_if_cancelled, inlined as in send)
            if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
                await trio.lowlevel.checkpoint()
            task._cancel_points += 1
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

    async def receive_with(self, handler: Callable[[list[Any]], int]) -> list[Any]:
        """:meth:`receive_batch`, handing what arrives while it waits to ``handler``
        first: for a consumer that can take most messages at once, without the task
        switch from the pipe's reader to a receiving task (an actor node's link).

        While this call waits with nothing queued, the reader calls
        ``handler(messages)`` in its own task with each batch it decodes, in order;
        ``handler`` returns how many of them (from the front) it took, and those count
        as received. The wait goes on while it takes them all; once it leaves some,
        they are queued (ahead of anything that arrives later) and this call returns
        them. Messages already queued when it is called are returned at once, without
        ``handler``. Flow control is unchanged: what ``handler`` leaves is unconsumed
        until returned here, and a peer that sends more is PAUSEd as usual.

        ``handler`` must not block; it may not be called at all. An exception it raises
        ends the wait and is raised here (the messages of that batch count as taken),
        even if the handler cancelled this call before raising. Otherwise raises what
        :meth:`receive_batch` raises, and :class:`trio.BusyResourceError` if another
        task is in this call already; a cancelled call stops the hand-over at once
        (later messages are queued for the next receive).

        Example::

            def take(messages: list[Any]) -> int:
                for i, m in enumerate(messages):
                    if not handled_now(m):
                        return i              # this one and the rest: returned below
                return len(messages)

            for m in await pipe.receive_with(take):
                await handle_later(m)
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._inbox:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            task = trio.lowlevel.current_task()

            def abort(_: Any) -> trio.lowlevel.Abort:
                # Cancelled: the reader hands nothing more over from this moment (it
                # may run before this task does).
                self._handler = None
                self._rx_waiter = None
                return trio.lowlevel.Abort.SUCCEEDED

            if self._handler is not None or self._rx_waiter is not None:
                raise trio.BusyResourceError(
                    f"{self.name}: another task is already in receive_with"
                )
            self._handler = handler
            try:
                while not self._inbox and self._handler_error is None:
                    if self._closing or self._rx_done is not None:
                        break  # _wait_for_messages raises what ends it
                    self._wrote_unyielded = False
                    self._send_calls = self._unyielded_bytes = self._receive_calls = 0
                    self._rx_waiter = task
                    await trio.lowlevel.wait_task_rescheduled(abort)
            except trio.Cancelled:
                error = self._handler_error
                if error is None:
                    raise
                # The handler cancelled this call and then failed: its error is the
                # news (the cancellation it caused would hide it).
                self._handler_error = None
                raise error from None
            finally:
                self._handler = None
                self._rx_waiter = None
                if not self._inbox and self.conn.held_bytes and not self._closing:
                    # (Cancelled: what the reader held back for the handler is queued.)
                    self._on_events(self.conn.receive_held())
            error = self._handler_error
            if error is not None:
                self._handler_error = None
                raise error
        await self._wait_for_messages()
        batch = list(self._inbox)
        self._inbox.clear()
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
                    conn.ping(CLOSE_PING)
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
        self._wake_rx()  # receivers and senders in other tasks see the close
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
            self._wake_rx()
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
