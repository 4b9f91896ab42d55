"""The thread port: the blocking end of a pipe, for code running in a worker thread."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import trio

from ..kernel.lane import Lane
from ..kernel.pipe import error_for_peer
from ._threadrunner import Interrupt

__all__ = ["SendRoute", "ThreadPort"]

_CARRY = 256  # the send countdown stays within the small integers CPython keeps


class SendRoute(Protocol):
    """Where a :class:`ThreadPort` offers its messages before its lanes (see
    :meth:`ThreadPort.route_sends`): each call delivers all of its messages and
    returns True, or delivers none and returns False."""

    def send(self, value: Any) -> bool: ...

    def send_batch(self, values: Sequence[Any]) -> bool: ...


class ThreadPort:
    """The blocking end of a pipe, for code running in a worker thread.

    ``receive()`` raises :class:`trio.EndOfChannel` at the end (iteration simply stops);
    ``send()`` blocks while the receiving side is full. All calls raise
    :class:`trio.ClosedResourceError` once the owning module is being stopped.
    """

    def __init__(
        self,
        receive_lane: Lane | None,
        send_lanes: Sequence[Lane],
        abort: Interrupt,
        *,
        name: str = "thread-port",
        writer_key: object = None,
    ) -> None:
        self.name = name
        self.writer_key = writer_key
        self._rx = receive_lane
        self._tx = tuple(send_lanes)
        self._tx1 = self._tx[0] if len(self._tx) == 1 else None  # send's fast path
        self._abort = abort
        self._ended = not self._tx
        # Messages taken from the lane and not handed out yet, and the count of all
        # taken: messages_received is the difference, so handing one out costs a
        # popleft and no integer (``x += 1`` beyond 256 allocates: ~300 instructions).
        self._batch: deque[Any] = deque()
        self._taken = 0
        # The same for sending: a small countdown, carried into _sent_base every
        # _CARRY sends (see messages_sent).
        self._sent_base = 0
        self._send_left = _CARRY
        self._route: SendRoute | None = None

    @property
    def messages_received(self) -> int:
        """Messages this port handed out (by ``receive``, iteration or batches)."""
        return self._taken - len(self._batch)

    @messages_received.setter
    def messages_received(self, value: int) -> None:
        self._taken = value + len(self._batch)

    @property
    def messages_sent(self) -> int:
        """Messages this port sent."""
        return self._sent_base + _CARRY - self._send_left

    @messages_sent.setter
    def messages_sent(self, value: int) -> None:
        self._sent_base = value - (_CARRY - self._send_left)

    # -- receiving --------------------------------------------------------------------

    def _lane(self) -> Lane:
        if self._rx is None:
            raise trio.ClosedResourceError(f"{self.name}: this port cannot receive")
        return self._rx

    def _refill(self) -> None:
        """Take everything queued (waiting for at least one message) into the batch."""
        taken = self._lane().get_many_blocking(None, self._abort)
        self._taken += len(taken)
        self._batch.extend(taken)

    def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """Block until at least one message is available; return up to ``max_items``."""
        batch = self._batch
        if batch:
            if max_items is None or len(batch) <= max_items:
                rest = list(batch)
                batch.clear()
                return rest
            return [batch.popleft() for _ in range(max_items)]
        taken = self._lane().get_many_blocking(max_items, self._abort)
        self._taken += len(taken)
        return taken

    def receive(self) -> Any:
        """Block until a message is available and return it."""
        if not self._batch:
            self._refill()
        return self._batch.popleft()

    def __iter__(self) -> Iterator[Any]:
        # receive() inlined: a call per message costs ~470 instructions, most of what
        # iterating a port costs. The batch is re-read at every step, so that calls
        # to receive() in the loop's body and requeue_unread() see it exact.
        batch = self._batch
        while True:
            if batch:
                yield batch.popleft()
                continue
            try:
                self._refill()
            except trio.EndOfChannel:
                return

    def requeue_unread(self) -> None:
        """Put messages taken from the lane but not yet handed out back at its front."""
        batch = self._batch
        if self._rx is not None and batch:
            self._rx.unget(list(batch))
        self._taken -= len(batch)  # never handed out: not received
        batch.clear()

    # -- sending ----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._ended:
            raise trio.ClosedResourceError(f"{self.name}: sending direction already ended")

    def route_sends(self, route: SendRoute | None) -> None:
        """Offer every later ``send`` and ``send_batch`` to ``route`` first: the messages
        it takes (its call returned True) skip the lanes; the others go to the lanes as
        usual. ``end`` and ``fail`` always go through the lanes, so ``route`` must
        deliver what it takes before returning, ahead of what the lanes carry next.
        ``None`` removes the route. Call it from the port's thread, or before the thread
        starts.

        Example::

            port.route_sends(direct)  # direct.send(v) -> True: written, not queued
        """
        self._route = route

    def send(self, value: Any) -> None:
        if self._ended:
            self._check_send()
        lane = self._tx1
        route = self._route
        if route is not None and route.send(value):
            pass
        # try_put_fast: this runs in a thread pipekit started, never the main thread.
        elif lane is None or self._abort.raised or not lane.try_put_fast(value):
            for lane in self._tx:
                lane.put_many_blocking((value,), self._abort)
        left = self._send_left - 1  # counts the message (see messages_sent)
        if left:
            self._send_left = left
        else:
            self._sent_base += _CARRY
            self._send_left = _CARRY

    def send_batch(self, values: Sequence[Any]) -> None:
        self._check_send()
        if values:
            route = self._route
            if route is None or not route.send_batch(values):
                for lane in self._tx:
                    lane.put_many_blocking(values, self._abort)
            self._sent_base += len(values)

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            for lane in self._tx:
                lane.end_writer(self.writer_key)

    def fail(self, exc: BaseException) -> None:
        if not self._ended:
            self._ended = True
            err = error_for_peer(exc, self.name)
            for lane in self._tx:
                lane.fail(err)
