"""Pipe: one end of a duplex message channel, and the in-process implementation.

A :class:`Pipe` follows :class:`trio.abc.Channel` conventions: ``send``, ``receive``,
``async for``, ``aclose``; :class:`trio.EndOfChannel` after the peer's END,
:class:`trio.ClosedResourceError` after a local close, :class:`trio.BrokenResourceError`
(or its subclass :class:`~pipekit.kernel.RemoteError`) when the peer broke it. On top of
that: ``end()`` half-closes the sending direction, ``fail(exc)`` ends it with an error the
peer's ``receive()`` raises, the ``*_batch`` methods move lists (the fast path), and
``stats`` is a live snapshot of the traffic.

How calls meet trio's scheduler (every Pipe; ``pipekit.testing``'s ``cancel_points``,
``fairness``, ``cancellation`` and ``backpressure`` checks hold adapters to it):

* **Every call is a cancel point.** ``send``, ``send_batch``, ``receive``,
  ``receive_batch`` and each step of ``async for`` raise :class:`trio.Cancelled` at once
  in a cancelled scope (and KeyboardInterrupt pending on the main task, as
  ``trio.lowlevel.checkpoint_if_cancelled()`` does), even when they would not have to
  wait, and then have done nothing: no message sent, none taken.
* **A call that has to wait blocks** (no room, no message, the peer PAUSEd): a schedule
  point, and cancelling it delivers nothing.
* **Yielding is amortised.** A call that finds room or a message need not yield to the
  scheduler, but a task that calls ``send``, or ``receive`` / ``async for``, on one pipe
  end reaches a schedule point at least every :data:`YIELD_EVERY` (64) consecutive
  calls, so a busy loop lets other tasks run. (trio's own memory channels yield on every
  call, which is most of their per-message cost; so ``trio.testing.assert_checkpoints``
  around one ``send`` may fail here.) In-process and framed pipes also yield on every
  ``send_batch`` / ``receive_batch``: a batch is worth a scheduler pass.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .errors import PipekitError, RemoteError
from .lane import _EMPTY, DEFAULT_CAPACITY, YIELD_EVERY, Lane, current_task

__all__ = ["YIELD_EVERY", "LocalPipe", "Pipe", "PipeStats", "error_for_peer", "open_pipe_pair"]
# YIELD_EVERY (from .lane, which needs it first) is part of the contract above: the
# most consecutive send (or receive) calls on one pipe end without a schedule point.


@dataclass(frozen=True, slots=True)
class PipeStats:
    """A snapshot of one pipe end's traffic. Byte counts are 0 for pipes that pass
    objects by reference."""

    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    paused_seconds: float = 0.0
    """Time ``send`` spent blocked because the peer was paused or the buffer full."""
    queue_depth: int = 0
    """Messages received and waiting for ``receive`` right now."""


class Pipe(trio.abc.Channel[Any]):
    """Abstract end of a duplex pipe. See the module docstring for the contract."""

    name: str = "pipe"

    @abc.abstractmethod
    async def send(self, value: Any) -> None:
        """Send one message; blocks while the peer is paused or the buffer is full."""

    async def send_batch(self, values: Sequence[Any]) -> None:
        """Send several messages in order (one hand-off, not one per message)."""
        for value in values:
            await self.send(value)

    @abc.abstractmethod
    async def receive(self) -> Any:
        """Receive one message; :class:`trio.EndOfChannel` after the peer's END."""

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """Receive between 1 and ``max_items`` messages that are already available
        (waiting for at least one). Raises like :meth:`receive` at the end."""
        return [await self.receive()]

    async def batches(self, max_items: int | None = None) -> AsyncIterator[list[Any]]:
        """Iterate over received batches until the peer ends."""
        while True:
            try:
                batch = await self.receive_batch(max_items)
            except trio.EndOfChannel:
                return
            yield batch

    @abc.abstractmethod
    async def end(self) -> None:
        """Half-close: no more messages from this side. Receiving continues. Idempotent."""

    @abc.abstractmethod
    async def fail(self, exc: BaseException) -> None:
        """End the sending direction with ``exc``; the peer's ``receive`` raises a
        :class:`RemoteError` (or ``exc`` itself in-process) after the messages sent
        before it."""

    @property
    @abc.abstractmethod
    def stats(self) -> PipeStats:
        """A live snapshot of this end's traffic."""

    async def __aenter__(self) -> Pipe:
        return self


def error_for_peer(exc: BaseException, sender: str) -> BaseException:
    """The exception a peer's ``receive`` raises after ``fail(exc)`` in-process: typed
    errors pass through, anything else is wrapped so the receiver sees who failed."""
    if isinstance(exc, PipekitError | trio.BrokenResourceError):
        return exc
    err = RemoteError(
        getattr(exc, "kind", None) or type(exc).__name__, str(exc) or type(exc).__name__
    )
    err.__cause__ = exc
    err.details["sender"] = sender
    return err


class LocalPipe(Pipe):
    """A pipe end whose directions are :class:`Lane` objects in this process.

    ``receive_lane`` may be None (a send-only port); ``send_lanes`` may hold several
    lanes (a split: every message goes to each, in order) or none (receive-only).

    A pipe end belongs to the trio thread that uses it. Its lanes may be local (no lock:
    :func:`open_pipe_pair` and the kernel make them so) or shared with threads
    (:meth:`Lane.share`); both are fast one message at a time.
    """

    def __init__(
        self,
        receive_lane: Lane | None,
        send_lanes: Sequence[Lane] = (),
        *,
        name: str = "pipe",
        writer_key: object = None,
    ) -> None:
        self.name = name
        self.writer_key = writer_key
        """Identifies this end as a writer of its send lanes (see :meth:`Lane.end_writer`)."""
        self._rx = receive_lane
        self._tx = tuple(send_lanes)
        self._ended = not self._tx
        self._closed = False
        # Counting without a big int per message (``x += 1`` beyond 256 allocates: ~300
        # instructions, a twelfth of a message): _send_left counts down the sends that
        # may still complete before the next schedule point (the fairness bound), and
        # doubles as the count of those sent since the last one, so
        #   messages sent = _sent + (YIELD_EVERY - _send_left)
        # (_refill moves that part into _sent at every schedule point). A failed call
        # counts toward the bound but not as a message: _send_left -= 1, _sent -= 1.
        # The same for receiving.
        self._sent = 0
        self._received = 0
        self._send_left = YIELD_EVERY
        self._receive_left = YIELD_EVERY
        self._paused = 0.0
        self._task: Any = None  # the trio task that last called send/receive
        # The fast paths' whole state check in one attribute each: the one lane a
        # plain send goes to (None: ended, closed, a split or receive-only), the lane
        # a receive takes from (None: closed or send-only).
        self._tx1: Lane | None = self._tx[0] if len(self._tx) == 1 else None
        self._rx1: Lane | None = receive_lane

    @property
    def receive_lane(self) -> Lane | None:
        """The lane this end receives from (for adapters that hand it to a thread)."""
        return self._rx

    @property
    def send_lanes(self) -> tuple[Lane, ...]:
        """The lanes this end sends to (several for a split)."""
        return self._tx

    def add_counts(self, *, sent: int = 0, received: int = 0) -> None:
        """Credit traffic that bypassed this object (a thread that used its lanes
        directly) to its statistics."""
        self._sent += sent
        self._received += received

    def detach(self) -> None:
        """Invalidate this end without ending or closing its lanes, so the lanes can be
        handed to a new owner (a restarted module). Further use raises
        :class:`trio.ClosedResourceError`."""
        self._closed = True
        self._ended = True
        self._tx1 = self._rx1 = None

    # -- sending ----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._ended:
            if not self._tx:
                raise trio.ClosedResourceError(f"{self.name}: this end cannot send")
            raise trio.ClosedResourceError(f"{self.name}: sending direction already ended")

    # The per-message paths below are written for speed. Issue 14 asks for >= 1M msg/s
    # one message at a time: ~1 us for a send, a receive and the loop around them, on
    # VMs where one Python call costs ~0.05 us. So, measured with instruction counts
    # (valgrind) per message sent and received, 23,300 before:
    # - cancellation is checked inline, as checkpoint_if_cancelled() does it (the
    #   task's cancel status, KeyboardInterrupt, its cancel-point count), not by
    #   awaiting it (a coroutine and current_task(): ~2,000 instructions a call);
    # - the task is cached on the pipe end and re-read only when the cached one is not
    #   the running one: reading trio's thread-local run context costs ~600, checking
    #   ``coro.cr_running`` ~300 (one thread runs one task at a time, so a running
    #   task's coroutine is the current task's);
    # - the fairness yield is a countdown (YIELD_EVERY), not a yield per call;
    # - the state checks are one attribute each (``_tx1``/``_rx1``, the lane's
    #   ``_put_ready``/``_get_ready``), and the lane's deque is used here directly,
    #   without a call into the lane (~470 instructions), and without its lock
    #   (``with lock``: ~2,000) when sending to a local lane or receiving from any lane
    #   (Lane.pop_ready says why that is safe);
    # - ``__anext__`` does the work itself: one coroutine per message, not two.
    # Anything unusual (a full or empty lane, the end, a split, a shared lane) takes
    # the slow path, which does the same through the lane's methods.

    async def send(self, value: Any) -> None:
        task = self._task
        if task is None or not task.coro.cr_running:
            task = self._task = current_task()
        if (
            self._send_left <= 0
            or task._cancel_status.effectively_cancelled
            or task._runner.ki_pending
        ):
            self._refill_send()
            await trio.lowlevel.checkpoint()
        else:
            task._cancel_points += 1
        lane = self._tx1
        if lane is not None:
            if lane._put_ready:
                items = lane._items
                if len(items) < lane.capacity:
                    items.append(value)
                    if lane._reader_waiter is not None:
                        lane.wake_reader()
                    self._send_left -= 1  # counts the message (see __init__)
                    return
            elif lane.try_put_fast(value):  # a shared lane: under its lock
                self._send_left -= 1
                return
        await self._send_slow(value)

    def _refill_send(self) -> None:
        """A schedule point: the count of sends before the next one starts again."""
        self._sent += YIELD_EVERY - self._send_left
        self._send_left = YIELD_EVERY

    async def _send_slow(self, value: Any) -> None:
        """A send the fast path could not finish; cancellation is already checked."""
        try:
            self._check_send()
            for lane in self._tx:
                if not lane.try_put(value):
                    self._refill_send()  # waiting is a schedule point
                    self._paused += await lane.put_waiting(value, self._send_aborted)
        except BaseException:
            self._sent -= 1  # a call, not a message (see __init__)
            raise
        finally:
            self._send_left -= 1

    async def send_batch(self, values: Sequence[Any]) -> None:
        self._check_send()
        if not values:
            await trio.lowlevel.checkpoint()
            return
        for lane in self._tx:
            self._paused += await lane.put_many(values, self._send_aborted)
        self._sent += len(values)

    def _send_aborted(self) -> bool:
        return self._ended or self._closed

    async def end(self) -> None:
        await trio.lowlevel.checkpoint()
        self.end_nowait()

    def end_nowait(self) -> None:
        """Synchronous :meth:`end` (for cleanup paths that cannot await)."""
        if not self._ended:
            self._ended = True
            self._tx1 = None
            for lane in self._tx:
                lane.end_writer(self.writer_key)
                lane.wake_writers()  # a send of ours waiting on a full lane gives up

    async def fail(self, exc: BaseException) -> None:
        await trio.lowlevel.checkpoint()
        self.fail_nowait(exc)

    def fail_nowait(self, exc: BaseException) -> None:
        """Synchronous :meth:`fail`."""
        if not self._ended:
            self._ended = True
            self._tx1 = None
            err = error_for_peer(exc, self.name)
            for lane in self._tx:
                lane.fail(err)
                lane.wake_writers()

    # -- receiving --------------------------------------------------------------------

    def _check_receive(self) -> Lane:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: pipe is closed")
        if self._rx is None:
            raise trio.ClosedResourceError(f"{self.name}: this end cannot receive")
        return self._rx

    async def receive(self) -> Any:
        task = self._task
        if task is None or not task.coro.cr_running:
            task = self._task = current_task()
        if (
            self._receive_left <= 0
            or task._cancel_status.effectively_cancelled
            or task._runner.ki_pending
        ):
            self._refill_receive()
            await trio.lowlevel.checkpoint()
        else:
            task._cancel_points += 1
        lane = self._rx1
        if lane is not None:  # Lane.pop_ready, inlined
            items = lane._items
            if items and lane._get_ready:
                item = items.popleft()
                if lane._writer_waiters:
                    lane.writers_may_go_on()
                self._receive_left -= 1  # counts the message (see __init__)
                return item
        return await self._receive_slow()

    async def __anext__(self) -> Any:
        # receive() inlined: see the note above send().
        task = self._task
        if task is None or not task.coro.cr_running:
            task = self._task = current_task()
        if (
            self._receive_left <= 0
            or task._cancel_status.effectively_cancelled
            or task._runner.ki_pending
        ):
            self._refill_receive()
            await trio.lowlevel.checkpoint()
        else:
            task._cancel_points += 1
        lane = self._rx1
        if lane is not None:  # Lane.pop_ready, inlined
            items = lane._items
            if items and lane._get_ready:
                item = items.popleft()
                if lane._writer_waiters:
                    lane.writers_may_go_on()
                self._receive_left -= 1  # counts the message (see __init__)
                return item
        try:
            return await self._receive_slow()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def _refill_receive(self) -> None:
        """A schedule point: the count of receives before the next one starts again."""
        self._received += YIELD_EVERY - self._receive_left
        self._receive_left = YIELD_EVERY

    async def _receive_slow(self) -> Any:
        """A receive the fast path could not finish; cancellation is already checked."""
        try:
            lane = self._check_receive()
            item = lane.try_get(_EMPTY)
            if item is _EMPTY:
                self._refill_receive()  # waiting is a schedule point
                item = await lane.get_waiting()
        except BaseException:
            self._received -= 1  # a call, not a message (see __init__)
            raise
        finally:
            self._receive_left -= 1
        return item

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        batch = await self._check_receive().get_many(max_items)
        self._received += len(batch)
        return batch

    # -- lifetime ---------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close both directions: END what this side sends (if not already ended or
        failed) and stop receiving (the peer's further sends raise
        :class:`trio.BrokenResourceError`)."""
        self.close_nowait()
        await trio.lowlevel.checkpoint()

    def close_nowait(self) -> None:
        if self._closed:
            return
        self.end_nowait()
        self._closed = True
        self._rx1 = None
        if self._rx is not None:
            self._rx.close_reader()

    @property
    def stats(self) -> PipeStats:
        return PipeStats(
            messages_sent=self._sent + YIELD_EVERY - self._send_left,
            messages_received=self._received + YIELD_EVERY - self._receive_left,
            paused_seconds=self._paused,
            queue_depth=self._rx.depth if self._rx is not None else 0,
        )

    def __repr__(self) -> str:
        return f"<LocalPipe {self.name!r}>"


def open_pipe_pair(
    capacity: int = DEFAULT_CAPACITY, *, names: tuple[str, str] = ("a", "b")
) -> tuple[LocalPipe, LocalPipe]:
    """Two connected in-process pipe ends. Each direction buffers at most ``capacity``
    messages; objects are passed by reference, never copied or encoded."""
    a_to_b = Lane(capacity, shared=False)
    b_to_a = Lane(capacity, shared=False)
    return (
        LocalPipe(b_to_a, (a_to_b,), name=names[0]),
        LocalPipe(a_to_b, (b_to_a,), name=names[1]),
    )
