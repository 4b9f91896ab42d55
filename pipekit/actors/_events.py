"""What arrives on ``events()`` and, in message mode, on ``listen()``/``inbox()``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ._pid import Pid

__all__ = [
    "CANCEL",
    "EXIT",
    "LINK_DOWN",
    "UNDELIVERED",
    "CancelEvent",
    "Event",
    "EventKind",
    "ExitEvent",
    "LinkDownEvent",
    "Message",
    "UndeliveredEvent",
]


class EventKind(StrEnum):
    """The ``kind`` of a system event; each equals its string (``"pid.exit"``, ...).

    Example::

        if event.kind == EventKind.EXIT:          # or == EXIT, or == "pid.exit"
            ...
    """

    EXIT = "pid.exit"
    """A monitored process exited (with a result or an error)."""
    LINK_DOWN = "pid.link.down"
    """A linked process failed, and this process traps links."""
    CANCEL = "pid.cancel"
    """Someone asked this process to stop by ``deadline``."""
    UNDELIVERED = "pid.undelivered"
    """Messages this process sent to another node were not delivered there."""


EXIT = EventKind.EXIT
LINK_DOWN = EventKind.LINK_DOWN
CANCEL = EventKind.CANCEL
UNDELIVERED = EventKind.UNDELIVERED


class Event:
    """A system event: ``kind``, ``sender`` (the process it is about, or that sent it;
    None for a CANCEL sent from outside any actor)
    and ``at`` (when it happened, on trio's clock: ``trio.current_time()``).

    Example::

        event = await process.events().receive()
        print(event.kind, event.sender, event.at)
    """

    __slots__ = ("at", "kind", "sender")

    kind: EventKind

    sender: Pid | None

    def __init__(self, sender: Pid | None, at: float) -> None:
        self.sender = sender
        self.at = at

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sender={self.sender}, at={self.at:g})"


class ExitEvent(Event):
    """EXIT: the monitored process ``sender`` returned ``result`` (``error`` is None),
    or failed with ``error`` (``result`` is None).

    Example::

        if event.kind == EXIT:
            print(event.sender, event.error or event.result)
    """

    __slots__ = ("error", "result")
    kind = EventKind.EXIT
    sender: Pid

    def __init__(
        self, sender: Pid, at: float, result: Any = None, error: BaseException | None = None
    ) -> None:
        super().__init__(sender, at)
        self.result = result
        self.error = error

    @property
    def ok(self) -> bool:
        """True if the process returned (rather than failed)."""
        return self.error is None

    def __repr__(self) -> str:
        outcome = f"error={self.error!r}" if self.error is not None else f"result={self.result!r}"
        return f"ExitEvent(sender={self.sender}, at={self.at:g}, {outcome})"


class LinkDownEvent(Event):
    """LINK_DOWN: the linked process ``sender`` failed with ``error``; this process
    traps links, so it lives on.

    Example::

        if event.kind == LINK_DOWN:
            print("lost", event.sender, "to", event.error)
    """

    __slots__ = ("error",)
    kind = EventKind.LINK_DOWN
    sender: Pid

    def __init__(self, sender: Pid, at: float, error: BaseException) -> None:
        super().__init__(sender, at)
        self.error = error


class CancelEvent(Event):
    """CANCEL: ``sender`` asks this process to finish by ``deadline`` (trio's clock;
    ``with trio.move_on_at(event.deadline):`` fits). At the deadline it is stopped.

    Example::

        if event.kind == CANCEL:
            await flush_within(event.deadline)
            return "stopped cleanly"
    """

    __slots__ = ("deadline",)
    kind = EventKind.CANCEL

    def __init__(self, sender: Pid | None, at: float, deadline: float) -> None:
        super().__init__(sender, at)
        self.deadline = deadline


class UndeliveredEvent(Event):
    """UNDELIVERED: ``count`` messages on ``topic`` that this process sent to ``dest``
    on another node were not delivered (``error``: :class:`MailboxFull`,
    :class:`NoSuchProcess`, a payload the codec cannot carry, :class:`NoConnection`),
    or a remote spawn failed (``topic`` None, ``error`` a :class:`SpawnError`).
    ``sender`` is None: the report comes from the runtime.

    Example::

        if event.kind == UNDELIVERED:
            print(event.count, "messages to", event.dest, "lost:", event.error)
    """

    __slots__ = ("count", "dest", "error", "topic")
    kind = EventKind.UNDELIVERED

    def __init__(
        self, dest: Any, at: float, topic: str | None, count: int, error: BaseException
    ) -> None:
        super().__init__(None, at)
        self.dest = dest
        self.topic = topic
        self.count = count
        self.error = error

    def __repr__(self) -> str:
        return (
            f"UndeliveredEvent(dest={self.dest}, topic={self.topic!r}, count={self.count}, "
            f"error={self.error!r})"
        )


class Message:
    """One message as message mode (``listen(topic, message=True)``) and ``inbox()``
    give it: ``sender`` (a :class:`Pid`, or None if sent from outside any actor),
    ``topic`` and ``payload``.

    Example::

        msg = await process.listen("echo", message=True).receive()
        process.send(msg.sender, "reply", msg.payload)
    """

    __slots__ = ("payload", "sender", "topic")

    def __init__(self, sender: Pid | None, topic: str, payload: Any) -> None:
        self.sender = sender
        self.topic = topic
        self.payload = payload

    def __repr__(self) -> str:
        return f"Message(sender={self.sender}, topic={self.topic!r}, payload={self.payload!r})"
