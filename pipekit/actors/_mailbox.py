"""The channels a process receives on: one per listened topic, the inbox, the events.

Each is a :class:`pipekit.channels.Channel` (so ``select`` takes its
``case_receive()``), filled by the runtime: delivery is a plain append by the sender
(``send`` never blocks and never switches task), or a hand-over to a task already
blocked in ``receive`` or ``select``. A receive that finds a message takes it without
a hand-off; it is always a cancel point, and every
:data:`~pipekit.kernel.lane.YIELD_EVERY`-th one on a channel is a schedule point, so a
busy receiver cannot starve its neighbours.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from ..channels import Case, Channel
from ..kernel.lane import YIELD_EVERY, run_context
from ._errors import ActorError

if TYPE_CHECKING:
    from ._proc import Proc

__all__ = ["Receiver"]


class Receiver(Channel[Any]):
    """A receive channel of a process: what ``listen(topic)``, ``inbox()`` and
    ``events()`` return. A :class:`pipekit.channels.Channel` (``await receive()``,
    ``receive_nowait()`` raising :class:`trio.WouldBlock`, ``async for``,
    ``case_receive()`` for ``select``) that belongs to the process: nothing can be sent
    into it and it cannot be closed. It never ends while its process runs, except the
    input topic of a pipeline stage (``pk.actor``), which ends when the stage's input does.
    ``topic`` is the listened topic (None for the inbox and the events).

    Example::

        tasks = process.listen("tasks")
        async for task in tasks:                  # one payload at a time
            handle(task)
    """

    def __init__(
        self, owner: Proc, topic: str | None, *, message_mode: bool, counted: bool
    ) -> None:
        super().__init__(0)
        self._owner = owner
        self._items = self._buffer
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

    # -- the runtime's side --------------------------------------------------------------

    def _hand_over(self) -> None:
        """Give queued messages to the tasks blocked on this channel (oldest first)."""
        items = self._items
        receivers = self._receivers
        while receivers and items:
            op = next(iter(receivers))
            item = items.popleft()
            if self._counted:
                self._taken()
            op.waiter.fire(op.index, item)  # takes op out of receivers

    def _end(self) -> None:
        """No more messages will come: receives get those queued, then
        :class:`trio.EndOfChannel`."""
        Channel.close(self)

    def _put(self, item: Any) -> None:
        self._items.append(item)
        if self._receivers:
            self._hand_over()

    def _taken(self) -> None:
        owner = self._owner
        owner.queued -= 1
        if owner.room_waiters and owner.queued <= owner.capacity >> 1:
            owner.wake_room()

    def _poll_receive(self) -> object:
        items = self._items
        if items:
            item = items.popleft()
            if self._counted:
                self._taken()
            return item
        return super()._poll_receive()  # nothing queued: "blocked"

    def _poll_send(self, value: Any) -> NoReturn:
        raise TypeError(f"{self!r} is a process's: only the runtime puts messages in it")

    # -- receiving -----------------------------------------------------------------------

    async def receive(self) -> Any:
        """The next message, waiting for one. A cancel point (and at times a schedule
        point) even when a message is ready."""
        self._budget -= 1
        if self._budget <= 0:
            self._budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()
        else:  # cancel_point(), inlined: two calls less per message
            task = run_context.task
            if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
                await trio.lowlevel.checkpoint()
            task._cancel_points += 1
        items = self._items
        if not items:
            self._budget = YIELD_EVERY  # waiting is a schedule point
            return await super().receive()
        item = items.popleft()
        if self._counted:
            owner = self._owner
            owner.queued -= 1
            if owner.room_waiters and owner.queued <= owner.capacity >> 1:
                owner.wake_room()
        return item

    def receive_blocking(self) -> Any:
        """:meth:`receive`, from the thread of a process on the ``"thread"`` host:
        blocks the thread until a message comes. If the process is stopped meanwhile,
        raises its :class:`~pipekit.actors.Terminated` (or other kill reason).

        Example::

            def blocking_worker():                     # spawn(blocking_worker, "thread")
                jobs = process.listen("job")
                while (job := jobs.receive_blocking()) is not None:
                    do_blocking_io(job)
        """
        node = self._owner.node
        if threading.get_ident() == node._thread_id:
            raise RuntimeError(
                "receive_blocking() is for the thread of a 'thread' process: in trio, "
                "use await receive()"
            )
        return trio.from_thread.run(self._receive_for_thread, trio_token=node._token)

    async def _receive_for_thread(self) -> Any:
        owner = self._owner
        if owner.kill_reason is not None:
            raise owner.kill_reason
        if owner.thread_waits is None:
            owner.thread_waits = set()
        with trio.CancelScope() as scope:
            owner.thread_waits.add(scope)
            try:
                return await self.receive()
            finally:
                owner.thread_waits.discard(scope)
        raise owner.kill_reason or ActorError("receive_blocking was cancelled")

    def close(self) -> NoReturn:
        """Refused: a process's channels live as long as the process."""
        raise ActorError(f"{self!r} belongs to its process: it cannot be closed")

    def case_send(self, value: Any) -> Case[Any]:
        """Refused: nothing can be sent into a process's channel (use ``send``)."""
        raise TypeError(f"{self!r} is a process's: send to the process instead")
