"""The process API: what an actor calls about itself and other processes.

Every function works on the process whose task calls it (a context variable names it;
tasks an actor starts in its own nurseries act as that process), and in the thread of a
process spawned on the ``"thread"`` host (the call hops to the node's trio thread;
receive there with ``ch.receive_blocking()``). Outside an actor they
raise :class:`~pipekit.actors.NotInActor`. Destinations are a :class:`Pid`, its string
form or a registered name.

Example::

    from pipekit.actors import process

    async def echo():
        msg = await process.listen("echo", message=True).receive()
        process.send(msg.sender, "reply", msg.payload)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ..kernel.lane import YIELD_EVERY, run_context
from ._context import current
from ._entries import Entry
from ._events import CANCEL, EXIT, LINK_DOWN, UNDELIVERED
from ._mailbox import Receiver
from ._outlet import emit
from ._pid import Pid
from ._proc import Proc
from ._wire import SEND_WAIT

__all__ = [
    "CANCEL",
    "EXIT",
    "LINK_DOWN",
    "UNDELIVERED",
    "Options",
    "cancel",
    "emit",
    "events",
    "get_options",
    "inbox",
    "link",
    "listen",
    "monitor",
    "pid",
    "send",
    "send_wait",
    "set_options",
    "spawn",
    "spawn_linked",
    "spawn_monitored",
    "terminate",
    "unlink",
    "unmonitor",
]


@dataclass(frozen=True, slots=True)
class Options:
    """A process's options (``get_options()``). ``trap_links``: a linked process's
    failure arrives as a LINK_DOWN event instead of killing this process.

    Example::

        if not process.get_options().trap_links:
            process.set_options(trap_links=True)
    """

    trap_links: bool = False


def _call(me: Proc, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(...)`` for the process ``me``: directly in its trio task, or in the node's
    trio thread for a thread process."""
    if me.threaded:
        return me.node.from_thread(me, functools.partial(fn, *args, **kwargs))
    return fn(*args, **kwargs)


def pid() -> Pid:
    """This process's Pid.

    Example::

        process.send(server, "request", {"reply_to": process.pid()})
    """
    return current().pid


def spawn(entry: Entry, host: str | None = None, *args: Any) -> Pid:
    """Start ``entry(*args)`` as a new process on ``host`` (None or ``"local"``: a trio
    task of this node; ``"thread"``: a thread of its own; ``"process"``: a child node in
    an OS process of its own; a connected node's name: there) and return its Pid.
    Neither linked nor monitored: its end does not concern this process.
    :class:`~pipekit.actors.SpawnError` for an unknown entry or host (on another node
    the spawn returns at once; its failure arrives as an EXIT or LINK_DOWN with the
    SpawnError if linked or monitored, else as an UNDELIVERED event).

    Example::

        worker = process.spawn("app.jobs:worker", None, "queue-1")
    """
    me = current()
    new: Pid = _call(me, me.node.spawn_process, entry, host, args, me, link=False, monitor=False)
    return new


def spawn_monitored(entry: Entry, host: str | None = None, *args: Any) -> Pid:
    """:func:`spawn`, and this process gets an EXIT event when the new one ends (with
    its result or its error).

    Example::

        child = process.spawn_monitored(task_worker, None, {"value": 10})
        event = await process.events().receive()   # event.kind == EXIT
    """
    me = current()
    new: Pid = _call(me, me.node.spawn_process, entry, host, args, me, link=False, monitor=True)
    return new


def spawn_linked(entry: Entry, host: str | None = None, *args: Any) -> Pid:
    """:func:`spawn`, linked both ways: if either fails, the other is killed with
    :class:`~pipekit.actors.LinkedFailure` (or, if it traps links, gets LINK_DOWN).

    Example::

        helper = process.spawn_linked(cache_warmer)   # it dies with us, we with it
    """
    me = current()
    new: Pid = _call(me, me.node.spawn_process, entry, host, args, me, link=True, monitor=False)
    return new


def send(dest: Pid | str, topic: str, *payloads: Any) -> None:
    """Send each payload as one message on ``topic`` (none: one message of None). Never
    blocks; messages from one sender to one receiver keep their order. All or nothing:
    :class:`~pipekit.actors.MailboxFull` if they do not all fit,
    :class:`~pipekit.actors.NoSuchProcess` if ``dest`` is not a live process.

    Example::

        process.send("worker1", "task", {"id": 1}, {"id": 2})   # two messages
    """
    me = current()
    if me.threaded:
        me.node.from_thread(me, me.node.deliver, me.pid, dest, topic, payloads)
        return
    node = me.node
    cluster = node._cluster
    if cluster is not None and type(dest) is Pid and type(topic) is str:
        # A process of a connected node: its stand-in, found as Node.target finds it,
        # without the local lookups before it (the hot path of remote sends).
        peer = dest.node
        if peer is not None and peer != node.name:
            link = cluster.links.get(peer)
            if link is not None:
                proxy = link.proxies.get(dest) or link.proxy(dest)
                proxy.deliver(me._pid or me.pid, topic, payloads)
                return
    node.deliver(me._pid or me.pid, dest, topic, payloads)  # the hot path


async def send_wait(dest: Pid | str, topic: str, *payloads: Any) -> None:
    """:func:`send`, waiting while ``dest``'s mailbox is too full to take them
    (backpressure). A cancel point.

    Example::

        for item in items:
            await process.send_wait(consumer, "item", item)
    """
    me = current()
    node = me.node
    cluster = node._cluster
    if cluster is not None and type(dest) is Pid and type(topic) is str:
        peer = dest.node  # (as in send)
        if peer is not None and peer != node.name and peer in cluster.links:
            node._budget -= 1  # Node.deliver_wait's checkpoint, cancel_point inlined
            if node._budget <= 0:
                node._budget = YIELD_EVERY
                await trio.lowlevel.checkpoint()
            else:
                task = run_context.task
                if task._cancel_status.effectively_cancelled or task._runner.ki_pending:
                    await trio.lowlevel.checkpoint()
                task._cancel_points += 1
            link = cluster.links.get(peer)  # (gone while this yielded: NoSuchProcess)
            if link is not None:
                if link.queued + (len(payloads) or 1) <= link.limit and not link.closed:
                    # RemoteProc.deliver_wait's common case: room on the link.
                    text = dest._text or str(dest)
                    link.put(SEND_WAIT, text, me._pid or me.pid, topic, payloads or (None,))
                    return
                proxy = link.proxies.get(dest) or link.proxy(dest)
                await proxy.deliver_wait(me._pid or me.pid, topic, payloads)
                return
    await node.deliver_wait(me._pid or me.pid, dest, topic, payloads)


def listen(topic: str, message: bool = False) -> Receiver:
    """The channel of this process's messages on ``topic``: payloads, or with
    ``message=True`` :class:`~pipekit.actors.Message` objects (``.sender``, ``.topic``,
    ``.payload``). Calling it again returns the same channel. Messages on the topic that
    arrived before (and no inbox took) are on it.

    Example::

        tasks = process.listen("tasks")
        task = await tasks.receive()
    """
    if type(topic) is not str:
        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
    me = current()
    return _call(me, me.listen, topic, bool(message))  # type: ignore[no-any-return]


def inbox() -> Receiver:
    """The channel of this process's messages on topics nobody listens to, as
    :class:`~pipekit.actors.Message` objects. Until it is first called such messages
    wait, so a ``listen`` called later still gets its topic's.

    Example::

        msg = await process.inbox().receive()
        print(msg.topic, msg.payload, msg.sender)
    """
    me = current()
    return _call(me, me.open_inbox)  # type: ignore[no-any-return]


def events() -> Receiver:
    """The channel of this process's system events: EXIT, LINK_DOWN, CANCEL (see
    :class:`~pipekit.actors.Event`). Events that came before it was called are on it.

    Example::

        event = await process.events().receive()
        if event.kind == process.CANCEL:
            ...
    """
    me = current()
    return _call(me, me.open_events)  # type: ignore[no-any-return]


def link(dest: Pid | str) -> None:
    """Link this process and ``dest`` both ways (see :func:`spawn_linked`).

    Example::

        process.link(registry.lookup("database"))
    """
    me = current()
    _call(me, me.node.link, me, dest)


def unlink(dest: Pid | str) -> None:
    """Remove the link between this process and ``dest`` (no error if there is none).

    Example::

        process.unlink(helper)
        process.terminate(helper)                 # its end no longer concerns us
    """
    me = current()
    _call(me, me.node.unlink, me, dest)


def monitor(dest: Pid | str) -> None:
    """Get an EXIT event when ``dest`` ends.

    Example::

        process.monitor(worker)
    """
    me = current()
    _call(me, me.node.monitor, me, dest)


def unmonitor(dest: Pid | str) -> None:
    """Stop monitoring ``dest`` (no error if this process did not).

    Example::

        process.unmonitor(worker)
    """
    me = current()
    _call(me, me.node.unmonitor, me, dest)


def terminate(dest: Pid | str) -> None:
    """Stop ``dest`` at once (at its next checkpoint); its error is
    ``Terminated("terminated")``.

    Example::

        process.terminate("stuck_worker")
    """
    me = current()
    _call(me, me.node.terminate_from, dest, me.pid)


def cancel(dest: Pid | str, deadline: float | str) -> None:
    """Ask ``dest`` to finish: it gets a CANCEL event whose ``deadline`` is ``deadline``
    (seconds, or ``"5s"``, ``"100ms"``) from now, and is stopped then if it still runs
    (error ``Terminated("cancel deadline passed")``). If it returns before, its result
    stands.

    Example::

        process.cancel(worker, "5s")
    """
    me = current()
    _call(me, me.node.cancel, dest, deadline, me.pid)


def get_options() -> Options:
    """This process's :class:`Options`.

    Example::

        process.get_options().trap_links          # False unless set
    """
    return Options(trap_links=current().trap_links)


def set_options(*, trap_links: bool | None = None) -> Options:
    """Change this process's options (those given); returns them all.

    Example::

        process.set_options(trap_links=True)     # LINK_DOWN instead of dying
    """
    me = current()
    if trap_links is not None:
        if not isinstance(trap_links, bool):
            raise TypeError(f"trap_links is a bool, got {type(trap_links).__name__}")
        me.trap_links = trap_links
    return Options(trap_links=me.trap_links)
