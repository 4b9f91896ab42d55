"""The channels a process receives on: one per listened topic, the inbox, the events.

Delivery is a plain append to a deque by the sender (``send`` never blocks and never
switches task); a receive that finds a message takes it without a hand-off. A receive
is always a cancel point and every :data:`~pipekit.kernel.lane.YIELD_EVERY`-th one on a
channel is a schedule point, so a busy receiver cannot starve its neighbours.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..kernel.lane import YIELD_EVERY, cancel_point

if TYPE_CHECKING:
    from ._proc import Proc

__all__ = ["Receiver"]


class Receiver:
    """A receive channel of a process: what ``listen(topic)``, ``inbox()`` and
    ``events()`` return. It follows trio's receive-channel conventions (``await
    receive()``, ``receive_nowait()`` raising :class:`trio.WouldBlock`, ``async for``),
    never ends while its process runs, and is owned by the process: it cannot be
    closed. ``topic`` is the listened topic (None for the inbox and the events).

    Example::

        tasks = process.listen("tasks")
        async for task in tasks:                  # one payload at a time
            handle(task)
    """

    __slots__ = ("_budget", "_counted", "_items", "_owner", "_wakers", "message_mode", "topic")

    def __init__(
        self, owner: Proc, topic: str | None, *, message_mode: bool, counted: bool
    ) -> None:
        self._owner = owner
        self._items: deque[Any] = deque()
        self._wakers: list[Callable[[], None]] = []
        self._counted = counted
        self._budget = YIELD_EVERY
        self.topic = topic
        self.message_mode = message_mode

    def __repr__(self) -> str:
        what = "events" if not self._counted else f"topic {self.topic!r}" if self.topic else "inbox"
        return f"<Receiver {what} of {self._owner.pid}, {len(self._items)} queued>"

    @property
    def queued(self) -> int:
        """Messages waiting on this channel now."""
        return len(self._items)

    # -- the sending side (the runtime's) ----------------------------------------------

    def _wake(self) -> None:
        wakers = self._wakers
        self._wakers = []
        for wake in wakers:
            wake()

    def _put(self, item: Any) -> None:
        self._items.append(item)
        if self._wakers:
            self._wake()

    def _taken(self) -> None:
        owner = self._owner
        owner.queued -= 1
        if owner.room_waiters:
            owner.wake_room()

    # -- the receiving side ------------------------------------------------------------

    def receive_nowait(self) -> Any:
        """The next message if one is queued, else :class:`trio.WouldBlock`."""
        items = self._items
        if not items:
            raise trio.WouldBlock
        item = items.popleft()
        if self._counted:
            self._taken()
        return item

    async def receive(self) -> Any:
        """The next message, waiting for one. A cancel point (and at times a schedule
        point) even when a message is ready."""
        self._budget -= 1
        if self._budget <= 0:
            self._budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()
        else:
            await cancel_point()
        items = self._items
        while not items:
            await self._wait()
        item = items.popleft()
        if self._counted:
            owner = self._owner
            owner.queued -= 1
            if owner.room_waiters:
                owner.wake_room()
        return item

    async def _wait(self) -> None:
        task = trio.lowlevel.current_task()
        self._budget = YIELD_EVERY  # waiting is a schedule point

        def wake() -> None:
            trio.lowlevel.reschedule(task)

        self._wakers.append(wake)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if wake in self._wakers:
                self._wakers.remove(wake)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def add_waker(self, wake: Callable[[], None]) -> None:
        """Have ``wake()`` called once, when the next message arrives (for ``select``)."""
        self._wakers.append(wake)

    def remove_waker(self, wake: Callable[[], None]) -> None:
        """Forget a waker added with :meth:`add_waker` (no error if it already ran)."""
        if wake in self._wakers:
            self._wakers.remove(wake)

    def __aiter__(self) -> Receiver:
        return self

    async def __anext__(self) -> Any:
        return await self.receive()
