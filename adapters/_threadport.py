"""The thread port: the blocking end of a pipe, for code running in a worker thread."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import trio

from ..kernel.lane import Lane
from ..kernel.pipe import error_for_peer
from ._threadrunner import Interrupt

__all__ = ["ThreadPort"]


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
        self._batch: list[Any] = []
        self._pos = 0
        self.messages_sent = 0
        self.messages_received = 0

    # -- receiving --------------------------------------------------------------------

    def _lane(self) -> Lane:
        if self._rx is None:
            raise trio.ClosedResourceError(f"{self.name}: this port cannot receive")
        return self._rx

    def receive_batch(self, max_items: int | None = None) -> list[Any]:
        """Block until at least one message is available; return up to ``max_items``."""
        if self._pos < len(self._batch):
            rest = self._batch[self._pos :]
            self._batch, self._pos = [], 0
            if max_items is not None and len(rest) > max_items:
                self._batch, rest = rest[max_items:], rest[:max_items]
            self.messages_received += len(rest)
            return rest
        batch = self._lane().get_many_blocking(max_items, self._abort)
        self.messages_received += len(batch)
        return batch

    def receive(self) -> Any:
        """Block until a message is available and return it."""
        if self._pos >= len(self._batch):
            self._batch = self._lane().get_many_blocking(None, self._abort)
            self._pos = 0
        item = self._batch[self._pos]
        self._pos += 1
        self.messages_received += 1
        return item

    def __iter__(self) -> Iterator[Any]:
        # receive() inlined: a call per message costs ~470 instructions, most of what
        # iterating a port costs. The state is re-read at every step, so that calls
        # to receive() in the loop's body and requeue_unread() see it exact.
        while True:
            pos = self._pos
            batch = self._batch
            if pos < len(batch):
                self._pos = pos + 1
                self.messages_received += 1
                yield batch[pos]
                continue
            try:
                self._batch = self._lane().get_many_blocking(None, self._abort)
            except trio.EndOfChannel:
                return
            self._pos = 0

    def requeue_unread(self) -> None:
        """Put messages taken from the lane but not yet handed out back at its front."""
        if self._rx is not None and self._pos < len(self._batch):
            self._rx.unget(self._batch[self._pos :])
        self._batch, self._pos = [], 0

    # -- sending ----------------------------------------------------------------------

    def _check_send(self) -> None:
        if self._ended:
            raise trio.ClosedResourceError(f"{self.name}: sending direction already ended")

    def send(self, value: Any) -> None:
        if self._ended:
            self._check_send()
        lane = self._tx1
        # try_put_fast: this runs in a thread pipekit started, never the main thread.
        if lane is None or self._abort.raised or not lane.try_put_fast(value):
            for lane in self._tx:
                lane.put_many_blocking((value,), self._abort)
        self.messages_sent += 1

    def send_batch(self, values: Sequence[Any]) -> None:
        self._check_send()
        if values:
            for lane in self._tx:
                lane.put_many_blocking(values, self._abort)
            self.messages_sent += len(values)

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
