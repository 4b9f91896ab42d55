"""One process's record: its mailbox, links, monitors, names and options."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ._errors import MailboxFull
from ._events import Event, Message
from ._mailbox import Receiver
from ._pid import Pid, make_pid

if TYPE_CHECKING:
    from ._node import Node

__all__ = ["Proc"]

_NO_LISTENERS: dict[str, Receiver] = {}
"""Every process's ``listeners`` until its first ``listen()``: shared, never written
(an empty dict per process would cost its allocation on every spawn)."""


class Proc:
    """The runtime's side of one process (users hold its :class:`Pid`).

    Mailbox routing: a message goes to the listener of its topic; if there is none, to
    the inbox once ``inbox()`` has been called; before that it waits in ``pending``
    until a ``listen(topic)`` or the ``inbox()`` claims it (so a message sent right
    after ``spawn`` is not lost to a listener created a moment later). Everything
    queued counts against ``capacity``; events do not (there are at most as many as
    links, monitors and cancels).
    """

    # Slots for what every process sets or a message reads; what few processes use
    # (links, monitors, names, options, a kill) stays at the class's default until set
    # (then in the instance's dict). A process that waits to start is smaller so, and
    # the garbage collector, which walks each slot, goes through a spawn burst faster.
    __slots__ = (
        "__dict__",
        "_pid",
        "alive",
        "capacity",
        "entry_name",
        "host",
        "inbox",
        "key",
        "listeners",
        "node",
        "pending",
        "queued",
        "room_waiters",
        "scope",
        "threaded",
    )

    remote = False
    """A process of this node (a :class:`~pipekit.actors._link.RemoteProc` says True)."""
    events: Receiver | None = None
    links: set[Proc] | None = None
    watchers: set[Proc] | None = None
    """Processes monitoring this one."""
    watching: set[Proc] | None = None
    """Processes this one monitors."""
    names: list[str] | None = None
    trap_links = False
    ended: set[str] | None = None
    """Topics whose sender is done (a pipeline stage's input): see :meth:`end_topic`."""
    kill_reason: BaseException | None = None
    on_exit: list[Callable[[Any, BaseException | None], None]] | None = None
    thread_waits: set[trio.CancelScope] | None = None
    """The scopes of its thread's blocking receives, cancelled when it is killed."""

    def __init__(self, node: Node, host: str, entry_name: str, key: str, capacity: int) -> None:
        self.node = node
        self.host = host
        self.entry_name = entry_name
        self.key = key
        """The Pid's ``proc`` part: the process's key in its node."""
        self._pid: Pid | None = None
        self.capacity = capacity
        """Messages the mailbox holds; ``send_wait`` callers blocked on a full one go on
        once it holds half as many."""
        self.scope: trio.CancelScope | None = None
        """Made by the process's task as it starts (or by :meth:`cancel_scope` if it is
        stopped before): a scope made at spawn would live as long as the queue of
        processes not started yet, and a spawn burst would pay for it in GC time."""
        self.listeners = _NO_LISTENERS
        self.inbox: Receiver | None = None
        self.pending: deque[Message] | None = None
        self.queued = 0
        self.alive = True
        self.room_waiters: list[Callable[[], None]] | None = None
        self.threaded = False
        """It runs in a thread of its own (host "thread"): its calls hop to trio."""

    @property
    def pid(self) -> Pid:
        """The process's Pid, made on first use: a spawn burst's processes that nobody
        addresses then hold one GC-tracked object fewer each (spawn hands out its own,
        equal, Pid)."""
        pid = self._pid
        if pid is None:
            pid = self._pid = make_pid(self.node.name, self.host, self.entry_name, self.key)
        return pid

    def is_pid(self, pid: Pid) -> bool:
        """``pid`` names this process (its key already matched)."""
        return pid.name == self.entry_name and pid.node == self.node.name and pid.host == self.host

    def __repr__(self) -> str:
        return f"<Proc {self.pid} {'alive' if self.alive else 'exited'}>"

    # -- mailbox -----------------------------------------------------------------------

    def deliver(self, sender: Pid | None, topic: str, payloads: tuple[Any, ...]) -> None:
        """Queue one message per payload (all or none), or raise :class:`MailboxFull`."""
        n = len(payloads) or 1
        if self.queued + n > self.capacity:
            raise MailboxFull(
                f"the mailbox of {self.pid} is full ({self.capacity} messages): "
                f"{n} message(s) on topic {topic!r} not delivered"
            )
        if not payloads:
            payloads = (None,)
        self.queued += n
        ch = self.listeners.get(topic)
        if ch is not None and not ch.message_mode:
            if n == 1:
                ch._items.append(payloads[0])
            else:
                ch._items.extend(payloads)
        else:
            if ch is None:
                ch = self.inbox
            if n == 1:
                msgs: Any = (Message(sender, topic, payloads[0]),)
            else:
                msgs = [Message(sender, topic, p) for p in payloads]
            if ch is None:
                if self.pending is None:
                    self.pending = deque()
                self.pending.extend(msgs)
                return
            ch._items.extend(msgs)
        if ch._receivers:
            ch._hand_over()

    def room(self) -> int:
        """Messages the mailbox can take now."""
        return self.capacity - self.queued

    def wake_room(self) -> None:
        waiters = self.room_waiters
        self.room_waiters = None
        for wake in waiters or ():
            wake()

    def listen(self, topic: str, message_mode: bool) -> Receiver:
        ch = self.listeners.get(topic)
        if ch is not None:
            if ch.message_mode != message_mode:
                from ._errors import ActorError

                raise ActorError(
                    f"this process already listens to {topic!r} with message={ch.message_mode}"
                )
            return ch
        if self.listeners is _NO_LISTENERS:
            self.listeners = {}
        ch = self.listeners[topic] = Receiver(self, topic, message_mode=message_mode, counted=True)
        pending = self.pending
        if pending:
            keep: deque[Message] = deque()
            for msg in pending:
                if msg.topic == topic:
                    ch._items.append(msg if message_mode else msg.payload)
                else:
                    keep.append(msg)
            self.pending = keep
        if self.ended and topic in self.ended:
            ch._end()
        return ch

    def end_topic(self, topic: str) -> None:
        """No more messages come on ``topic``: its listener (now or once made) gives the
        messages queued, then :class:`trio.EndOfChannel`."""
        if self.ended is None:
            self.ended = set()
        self.ended.add(topic)
        ch = self.listeners.get(topic)
        if ch is not None:
            ch._end()

    def open_inbox(self) -> Receiver:
        ch = self.inbox
        if ch is None:
            ch = self.inbox = Receiver(self, None, message_mode=True, counted=True)
            if self.pending:
                ch._items.extend(self.pending)
            self.pending = None
        return ch

    def open_events(self) -> Receiver:
        ch = self.events
        if ch is None:
            ch = self.events = Receiver(self, None, message_mode=True, counted=False)
        return ch

    def post(self, event: Event) -> None:
        """Deliver a system event (never refused)."""
        (self.events or self.open_events())._put(event)

    # -- lifecycle ---------------------------------------------------------------------

    def cancel_scope(self) -> trio.CancelScope:
        """The scope the process runs in (made now if its task has not started yet)."""
        scope = self.scope
        if scope is None:
            scope = self.scope = trio.CancelScope()
        return scope

    def kill(self, reason: BaseException) -> None:
        """Stop the process with ``reason`` as its error (at its next checkpoint)."""
        if self.alive and self.kill_reason is None:
            self.kill_reason = reason
            self.cancel_scope().cancel()
            for scope in self.thread_waits or ():
                scope.cancel()
