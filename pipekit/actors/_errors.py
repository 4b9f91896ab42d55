"""The actor runtime's exceptions: every one is a :class:`~pipekit.PipekitError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..kernel import PipekitError

if TYPE_CHECKING:
    from ._pid import Pid

__all__ = [
    "ActorError",
    "LinkFull",
    "LinkedFailure",
    "MailboxFull",
    "NameTaken",
    "NoConnection",
    "NoSuchProcess",
    "NodeError",
    "NotInActor",
    "RemoteFailure",
    "SpawnError",
    "SupervisorGaveUp",
    "Terminated",
]


class ActorError(PipekitError):
    """Base class of the actor runtime's errors.

    Example::

        try:
            process.send("worker1", "task", job)
        except ActorError as exc:                  # MailboxFull, NoSuchProcess, ...
            log.warning("not delivered: %s", exc)
    """


class NoSuchProcess(ActorError, LookupError):
    """The destination is not a live process: an unknown name, a PID that has exited,
    or a PID of a node this one is not connected to.

    Example::

        try:
            process.send(pid, "ping", 1)
        except NoSuchProcess:
            pid = process.spawn(worker)            # it exited: start another
    """


class MailboxFull(ActorError):
    """The destination's mailbox holds as many messages as it may: nothing of this
    ``send`` was delivered. ``await send_wait(...)`` waits for room instead.

    Example::

        try:
            process.send(pid, "job", item)
        except MailboxFull:
            await process.send_wait(pid, "job", item)
    """


class NameTaken(ActorError):
    """``registry.register(name)``: another live process holds that name.

    Example::

        try:
            registry.register("db")
        except NameTaken:
            db = registry.lookup("db")             # someone else is the db
    """


class NotInActor(ActorError):
    """A process function (``process.send``, ``registry.register``, ...) was called
    outside an actor: use the node's methods there (``node.send``, ``node.registry``).

    Example::

        process.pid()                              # at top level: NotInActor
    """


class SpawnError(ActorError):
    """``spawn``: the entry cannot be found or called, or the host is unknown.

    Example::

        process.spawn("no.such.module:main")       # SpawnError: cannot import ...
    """


class Terminated(ActorError):
    """The error of a process stopped from outside: ``terminate(pid)``, a ``cancel``
    whose deadline passed, a supervisor stopping it, or its node closing. ``reason``
    says which.

    Example::

        process.terminate(pid)
        event = await process.events().receive()
        assert isinstance(event.error, Terminated)  # event.error.reason == "terminated"
    """

    def __init__(self, reason: str = "terminated") -> None:
        super().__init__(reason)
        self.reason = reason


class LinkedFailure(ActorError):
    """The error of a process killed because a process linked to it failed (it did
    not trap links). ``pid`` is the failed process, ``reason`` its error.

    Example::

        event = await process.events().receive()   # EXIT of a monitored process
        if isinstance(event.error, LinkedFailure):
            print(event.error.pid, "took it down:", event.error.reason)
    """

    def __init__(self, pid: Pid, reason: BaseException) -> None:
        super().__init__(f"linked process {pid} failed: {reason!r}")
        self.pid = pid
        self.reason = reason


class SupervisorGaveUp(ActorError):
    """A supervisor restarted its children more than ``intensity`` times within
    ``period`` seconds: it stopped them all and exited with this error. ``child`` is the
    child whose exit was one too many, ``reason`` that exit's error (or None).

    Example::

        result = await node.run(Supervisor([...], intensity=3, period=5))
        # raises SupervisorGaveUp when the children keep crashing
    """

    def __init__(self, child: str, reason: BaseException | None) -> None:
        super().__init__(f"restart intensity exceeded: child {child!r} exited with {reason!r}")
        self.child = child
        self.reason = reason


class LinkFull(MailboxFull):
    """A send to a process on another node: the link to that node already queues as
    many messages as it may (``link_queue`` of :meth:`Node.connect`): nothing of this
    ``send`` was queued. ``await send_wait(...)`` waits for room instead.

    Example::

        try:
            process.send(remote_pid, "job", item)
        except LinkFull:                           # also a MailboxFull
            await process.send_wait(remote_pid, "job", item)
    """


class NoConnection(ActorError):
    """The error of a remote process whose node went away (the connection closed or
    broke): what links and monitors of it see. ``reason`` is ``"noconnection"``.

    Example::

        event = await process.events().receive()
        if isinstance(event.error, NoConnection):
            print(event.sender, "is unreachable")
    """

    def __init__(self, message: str = "noconnection") -> None:
        super().__init__(message)
        self.reason = "noconnection"


class NodeError(ActorError):
    """Joining another node failed at the node layer: a node of the same name is
    already connected (or is this node), or the peer does not speak it.

    Example::

        try:
            await node.connect("tcp://10.0.0.2:4000")
        except NodeError as exc:
            print("not joined:", exc)
    """


class RemoteFailure(ActorError):
    """An error raised on another node, as it arrived: ``type`` is its class name
    there, the message its text.

    Example::

        if isinstance(event.error, RemoteFailure) and event.error.type == "KeyError":
            ...
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.type = kind
        self.message = message
