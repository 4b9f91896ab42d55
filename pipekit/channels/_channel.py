"""The channel: a FIFO between trio tasks, with the waiter bookkeeping ``select`` needs.

A blocked operation (a ``send``, a ``receive`` or a whole ``select``) is one
:class:`_Waiter` holding one :class:`_Op` per case, each registered with its channel.
The operation that arrives later and finds it completes it on the spot: it hands the
value over, unregisters every op of the waiter and reschedules its task. trio runs one
task at a time, so this is atomic; and trio calls an abort function only for a task not
yet rescheduled, so a cancelled wait unregisters ops that never fired. That is what
makes ``select`` cancel-safe: a case that did not fire consumed and sent nothing.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["Case", "Channel", "channel"]

T = TypeVar("T")

_BLOCKED = object()
"""What a poll returns when the operation would have to wait."""
_CLOSED = object()
"""What a receive poll (or a completed receive op) returns for a closed, drained channel."""


class _Waiter:
    """A task blocked in ``send``, ``receive`` or ``select``, waiting for one of its ops."""

    __slots__ = ("ops", "task")

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.ops: list[_Op] = []

    def fire(self, index: int, value: object) -> None:
        """Complete the wait with case ``index`` and ``value``: every op leaves its channel."""
        for op in self.ops:
            op.channel._forget(op)
        trio.lowlevel.reschedule(self.task, outcome.Value((index, value)))

    def fail(self, error: BaseException) -> None:
        for op in self.ops:
            op.channel._forget(op)
        trio.lowlevel.reschedule(self.task, outcome.Error(error))

    def abort(self, _: object) -> trio.lowlevel.Abort:
        for op in self.ops:
            op.channel._forget(op)
        return trio.lowlevel.Abort.SUCCEEDED


class _Op:
    """One case of a waiter, registered with its channel (``value``: what a send sends)."""

    __slots__ = ("channel", "index", "sends", "value", "waiter")

    def __init__(
        self, waiter: _Waiter, index: int, channel: Channel[Any], value: object, sends: bool
    ) -> None:
        self.waiter = waiter
        self.index = index
        self.channel = channel
        self.value = value
        self.sends = sends


class Case(Generic[T]):
    """One alternative of :func:`~pipekit.channels.select`: receiving from a channel
    (``ch.case_receive()``) or sending a value into it (``ch.case_send(v)``).

    A case is a description, not an operation: building one does nothing, and the same
    case may be given to many selects.

    Example::

        got = await select([inbox.case_receive(), out.case_send(item)])
        if got.case.sends:
            ...                       # item was delivered
    """

    __slots__ = ("channel", "sends", "value")

    def __init__(self, channel: Channel[T], sends: bool, value: object = None) -> None:
        self.channel = channel
        self.sends = sends
        self.value = value

    def __repr__(self) -> str:
        if self.sends:
            return f"<case_send({self.value!r}) on {self.channel!r}>"
        return f"<case_receive() on {self.channel!r}>"


class Channel(trio.abc.Channel[T]):
    """A FIFO channel between trio tasks, with the semantics of trio's memory channels.

    ``capacity`` values may wait in it (``0``, the default: none, so a ``send`` waits for
    a ``receive``, a rendezvous; ``math.inf``: unbounded). ``close()`` ends it: the
    values still in it are received, then ``receive`` raises :class:`trio.EndOfChannel`
    (``async for`` stops); ``send`` after ``close`` (and a ``send`` blocked when it
    happens) raises :class:`trio.ClosedResourceError`. Any number of tasks may send and
    receive at once; blocked ones are served first come, first served. Every
    operation is a trio checkpoint and cancel-safe: a cancelled ``send`` sent nothing, a
    cancelled ``receive`` took nothing.

    ``case_receive()`` and ``case_send(v)`` are its alternatives for
    :func:`~pipekit.channels.select`. A channel belongs to one trio run: it is not for
    OS threads.

    Example::

        ch = channel(10)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer, ch)     # sends, then ch.close()
            async for item in ch:
                print(item)
    """

    def __init__(self, capacity: float = 0) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int | float):
            raise TypeError(f"capacity must be an int or math.inf, not {capacity!r}")
        if capacity != math.inf and (not isinstance(capacity, int) or capacity < 0):
            raise ValueError(f"capacity must be an int >= 0 or math.inf, not {capacity!r}")
        self._capacity = capacity
        self._buffer: deque[T] = deque()
        # Ops of blocked tasks, oldest first (dicts keep insertion order).
        self._receivers: dict[_Op, None] = {}
        self._senders: dict[_Op, None] = {}
        self._closed = False

    @property
    def capacity(self) -> float:
        """How many values may wait in the channel."""
        return self._capacity

    @property
    def closed(self) -> bool:
        """``close()`` was called (values may still wait to be received)."""
        return self._closed

    def __len__(self) -> int:
        """The values waiting in the channel (blocked senders' values not counted)."""
        return len(self._buffer)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<Channel capacity={self._capacity} holding={len(self._buffer)}{state}>"

    # The non-blocking core: the poll half of send, receive and select. It is also
    # the contract with subclasses inside pipekit (the actors' Receiver): they may
    # override the two polls, read _buffer and _receivers (the ops of blocked
    # receives, oldest first), and hand a value to a blocked receive with
    # op.waiter.fire(op.index, value), which unregisters that waiter's every op.
    # Change these only together with pipekit/actors/_mailbox.py.

    def _poll_receive(self) -> object:
        """Take a value now, or return ``_CLOSED`` or ``_BLOCKED``."""
        if self._buffer:
            value = self._buffer.popleft()
            if self._senders:
                op = next(iter(self._senders))
                self._buffer.append(op.value)  # type: ignore[arg-type]
                op.waiter.fire(op.index, None)
            return value
        if self._senders:
            op = next(iter(self._senders))
            op.waiter.fire(op.index, None)
            return op.value
        return _CLOSED if self._closed else _BLOCKED

    def _poll_send(self, value: T) -> bool:
        """Deliver ``value`` now (True) or say it would block (False)."""
        if self._closed:
            raise trio.ClosedResourceError(f"send on a closed channel ({self!r})")
        if self._receivers:
            op = next(iter(self._receivers))
            op.waiter.fire(op.index, value)
            return True
        if len(self._buffer) < self._capacity:
            self._buffer.append(value)
            return True
        return False

    def _register(self, op: _Op, sends: bool) -> None:
        (self._senders if sends else self._receivers)[op] = None

    def _forget(self, op: _Op) -> None:
        (self._senders if op.sends else self._receivers).pop(op, None)

    def _deadline(self) -> float:
        """When the channel becomes ready by itself (timers); ``inf`` for a plain channel."""
        return math.inf

    # The public operations.

    def send_nowait(self, value: T) -> None:
        """Send ``value`` without waiting, or raise :class:`trio.WouldBlock`."""
        if not self._poll_send(value):
            raise trio.WouldBlock

    def receive_nowait(self) -> T:
        """Receive a value without waiting, or raise :class:`trio.WouldBlock`
        (:class:`trio.EndOfChannel` once closed and drained)."""
        got = self._poll_receive()
        if got is _BLOCKED:
            raise trio.WouldBlock
        if got is _CLOSED:
            raise trio.EndOfChannel
        return got  # type: ignore[return-value]

    async def send(self, value: T) -> None:
        """Send ``value``, waiting while the channel is full (or, unbuffered, until a
        receiver takes it)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._poll_send(value):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(trio.lowlevel.current_task())
        op = _Op(waiter, 0, self, value, True)
        waiter.ops.append(op)
        self._senders[op] = None
        await trio.lowlevel.wait_task_rescheduled(waiter.abort)

    async def receive(self) -> T:
        """The next value, waiting for one; :class:`trio.EndOfChannel` once the channel
        is closed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        got = self._poll_receive()
        if got is _BLOCKED:
            waiter = _Waiter(trio.lowlevel.current_task())
            op = _Op(waiter, 0, self, None, False)
            waiter.ops.append(op)
            self._receivers[op] = None
            _, got = await trio.lowlevel.wait_task_rescheduled(waiter.abort)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if got is _CLOSED:
            raise trio.EndOfChannel
        return got  # type: ignore[return-value]

    def close(self) -> None:
        """End the channel: no more sends; receivers get what it holds, then
        :class:`trio.EndOfChannel`. Blocked senders get :class:`trio.ClosedResourceError`
        (their values are not delivered). Closing twice does nothing."""
        if self._closed:
            return
        self._closed = True
        for op in list(self._senders):
            op.waiter.fail(trio.ClosedResourceError(f"the channel was closed ({self!r})"))
        for op in list(self._receivers):
            op.waiter.fire(op.index, _CLOSED)

    async def aclose(self) -> None:
        """``close()``, as trio's resources do it (a checkpoint)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def case_receive(self) -> Case[T]:
        """The :func:`~pipekit.channels.select` case that receives from this channel.
        It fires with the value, or with ``ok=False`` once the channel is closed and
        drained."""
        return Case(self, False)

    def case_send(self, value: T) -> Case[T]:
        """The :func:`~pipekit.channels.select` case that sends ``value`` into this
        channel. On a closed channel, ``select`` raises :class:`trio.ClosedResourceError`."""
        return Case(self, True, value)


def channel(capacity: float = 0) -> Channel[Any]:
    """A new :class:`Channel` holding up to ``capacity`` values (0: unbuffered, a
    rendezvous; ``math.inf``: unbounded).

    Example::

        ch = channel()                    # unbuffered: send waits for a receiver
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ch.send, "hello")
            print(await ch.receive())     # hello
    """
    return Channel(capacity)
