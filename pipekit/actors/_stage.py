"""Actors in pipelines: a process as a stage (``pk.actor``, :class:`ActorModule`), and a
stage that sends to processes (``pk.to_actor``).

The stage's process gets the pipeline's messages on a topic of its mailbox (the mailbox
bounds them: the stage takes from its input only what fits, so a slow process holds its
upstream back) and that topic ends when the input does; what it ``process.emit``\\ s goes
on downstream. It runs on the node of the process that runs the pipeline (or on the
``node=`` given), else on a node of its own, opened and closed with the stage.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Unpack

import trio

from ..kernel import Pipe
from ..kernel.scopes import open_plain_nursery
from ..pipeline import Stage, StageOptions, StageSettings
from ._context import current, current_or_none
from ._entries import Entry
from ._errors import NotInActor, Terminated
from ._node import DEFAULT_MAILBOX, Node, open_node
from ._outlet import Outlet, set_outlet
from ._pid import Pid
from ._proc import Proc
from ._tasks import wait_for_room

__all__ = ["STAGE_NODE", "ActorModule", "actor", "to_actor"]

STAGE_NODE = "pipeline"
"""The name of the node an actor stage opens when the pipeline runs outside any node."""


def _running_node() -> Node | None:
    """The node of the process whose task this is (the pipeline runs inside an actor),
    if it is a node of this trio run."""
    proc = current_or_none()
    if proc is None:
        return None
    node = proc.node
    if node._closed or node._token is not trio.lowlevel.current_trio_token():
        return None  # a thread process running a pipeline in a trio run of its own
    return node


def _check(topic: Any, mailbox_size: Any, node: Any) -> None:
    if type(topic) is not str:
        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
    if mailbox_size is not None and (
        isinstance(mailbox_size, bool) or not isinstance(mailbox_size, int) or mailbox_size < 1
    ):
        raise ValueError(f"mailbox_size must be None or an int >= 1, got {mailbox_size!r}")
    if node is not None and not isinstance(node, Node):
        raise TypeError(f"node must be None or a Node (open_node), got {type(node).__name__}")


def _label(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    return str(getattr(entry, "__name__", None) or type(entry).__name__)


class ActorModule:
    """An actor as a kernel module with ports ``inp`` and ``out``: each run spawns
    ``entry(*args)`` as a process; what arrives on ``inp`` is delivered to its mailbox on
    ``topic`` (never more than fits: backpressure, not loss), whose channel
    (``process.listen(topic)``) ends once ``inp`` has; what the process
    ``await process.emit(value)``\\ s goes out on ``out``. The run ends with the process:
    its result is :attr:`result`, its error is the module's. If the run is cancelled, the
    process is terminated and waited for. A run after a failed one (a restart) first
    gets the input the failed process had not received.

    The process runs on ``node``, else on the node of the process whose task runs the
    kernel, else on a node of its own (:data:`STAGE_NODE`) opened for the run and
    closed after it (with whatever the process spawned). ``mailbox_size``: its
    mailbox's bound (default: the node's). :attr:`pid` is the running process's Pid.

    Example::

        async with pk.open_kernel() as k:
            upper = k.add(ActorModule(shout), name="shout")
            k.connect(feed["out"], upper)
    """

    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(
        self,
        entry: Entry,
        *args: Any,
        topic: str = "in",
        mailbox_size: int | None = None,
        node: Node | None = None,
    ) -> None:
        _check(topic, mailbox_size, node)
        if not (isinstance(entry, str) or callable(entry)):
            raise TypeError(
                f"an actor entry is a callable, an import string or a registered name; "
                f"got {type(entry).__name__}"
            )
        self.entry = entry
        self.args = args
        self.topic = topic
        self.mailbox_size = mailbox_size
        self.node = node
        self.pid: Pid | None = None
        """The Pid of the process of the current (or last) run."""
        self.result: Any = None
        """What the process of the last run returned."""
        self._unread: list[Any] = []
        """Input a failed process had not received: the next run (a restart) gets it first."""

    def __repr__(self) -> str:
        return f"<ActorModule {_label(self.entry)} topic={self.topic!r}>"

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        node = self.node or _running_node()
        if node is not None:
            await self._run_on(node, inp, out)
            return
        async with open_node(STAGE_NODE, mailbox_size=self.mailbox_size or DEFAULT_MAILBOX) as own:
            await self._run_on(own, inp, out)

    async def _run_on(self, node: Node, inp: Pipe, out: Pipe) -> None:
        fn, name = node._resolve(self.entry)

        async def stage_main(*args: Any) -> Any:
            set_outlet(Outlet(current(), out))
            value = fn(*args)
            if inspect.isawaitable(value):
                value = await value
            return value

        stage_main.actor_name = name  # type: ignore[attr-defined]  # its Pid names the entry
        self.pid = pid = node.spawn_process(
            stage_main, None, self.args, None, link=False, monitor=False
        )
        proc = node.find(pid)
        if self.mailbox_size is not None:  # not started yet: its mailbox is empty
            proc.capacity = self.mailbox_size
        done = trio.Event()
        outcome: list[tuple[Any, BaseException | None]] = []

        def finished(result: Any, error: BaseException | None) -> None:
            outcome.append((result, error))
            done.set()

        proc.on_exit = [finished]
        try:
            async with open_plain_nursery() as nursery:
                nursery.start_soon(self._feed, inp, proc)
                await done.wait()
                nursery.cancel_scope.cancel()  # it returned: what it did not take stays
        except BaseException:
            if not done.is_set():
                proc.kill(Terminated("its pipeline stage was stopped"))
                with trio.CancelScope(shield=True):
                    await done.wait()
            raise
        result, error = outcome[0]
        if error is not None:
            self._unread = self._left_in(proc)
            raise error
        self.result = result

    def _left_in(self, proc: Proc) -> list[Any]:
        """The input that ``proc`` (exited) had not received, in order."""
        ch = proc.listeners.get(self.topic)
        if ch is not None:
            if ch.message_mode:
                return [msg.payload for msg in ch._items if msg.topic == self.topic]
            return list(ch._items)
        queued = proc.inbox._items if proc.inbox is not None else proc.pending or ()
        return [msg.payload for msg in queued if msg.topic == self.topic]

    async def _feed(self, inp: Pipe, proc: Proc) -> None:
        """Deliver the input to ``proc``'s mailbox, taking from ``inp`` only what fits."""
        topic = self.topic
        if self._unread:
            unread, self._unread = self._unread, []
            await self._deliver(proc, unread)
        while proc.alive:
            room = proc.capacity - proc.queued
            if room <= 0:
                await wait_for_room(proc)
                continue
            try:
                batch = await inp.receive_batch(room)
            except trio.EndOfChannel:
                proc.end_topic(topic)
                return
            await self._deliver(proc, batch)

    async def _deliver(self, proc: Proc, batch: list[Any]) -> None:
        """Deliver ``batch`` to ``proc``'s mailbox as room comes (others may fill it too)."""
        start = 0
        while proc.alive:
            room = min(proc.capacity - proc.queued, len(batch) - start)
            if room > 0:
                proc.deliver(None, self.topic, tuple(batch[start : start + room]))
                start += room
                if start == len(batch):
                    return
            await wait_for_room(proc)


class _ActorStage(Stage):
    def __init__(
        self,
        entry: Entry,
        args: tuple[Any, ...],
        topic: str,
        mailbox_size: int | None,
        node: Node | None,
        options: StageSettings,
    ) -> None:
        super().__init__(f"actor({_label(entry)})", options)
        self.entry = entry
        self.args = args
        self.topic = topic
        self.mailbox_size = mailbox_size
        self.node = node

    def module(self, *, first: bool = False) -> ActorModule:
        return ActorModule(
            self.entry, *self.args, topic=self.topic, mailbox_size=self.mailbox_size, node=self.node
        )


def actor(
    entry: Entry,
    *args: Any,
    topic: str = "in",
    mailbox_size: int | None = None,
    node: Node | None = None,
    **options: Unpack[StageOptions],
) -> Stage:
    """A stage run by an actor: ``entry(*args)`` runs as a process (see
    :class:`ActorModule`); the pipeline's messages arrive on its ``topic``
    (``process.listen(topic)``, which ends with :class:`trio.EndOfChannel` when the input
    does) and what it ``await process.emit(value)``\\ s flows on. It is a process like
    any other: it spawns, sends, listens to other topics. The stage ends when it
    returns (after its input ended, or before: then the stages before it stop, as for
    ``take``); its error fails the stage (:class:`~pipekit.ModuleError` naming it).
    Its mailbox (``mailbox_size``, default the node's) bounds what it holds: the stage
    takes no more input than fits. Keywords: :class:`~pipekit.pipeline.StageOptions`.

    Example::

        async def shout():
            async for word in process.listen("in"):
                await process.emit(word.upper() + "!")

        (pk.source(["hi", "yo"]) | pk.actor(shout) | pk.sink(print)).run()
    """
    _check(topic, mailbox_size, node)
    settings = StageSettings.from_options("actor", options)
    ActorModule(entry, *args, topic=topic, mailbox_size=mailbox_size, node=node)  # checks entry
    return _ActorStage(entry, args, topic, mailbox_size, node, settings)


class _ToActorModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, dest: Pid | str, topic: str, node: Node | None) -> None:
        self.dest = dest
        self.topic = topic
        self.node = node

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        node = self.node or _running_node()
        if node is None:
            raise NotInActor(
                f"pk.to_actor({str(self.dest)!r}, ...) sends to the processes of a node: run "
                f"the pipeline inside an actor (await pipeline.arun() in a process), or "
                f"pass node="
            )
        me = current_or_none()
        sender = me.pid if me is not None and me.node is node else None
        deliver_wait, dest, topic = node.deliver_wait, self.dest, self.topic
        async for batch in ports["inp"].batches():
            for msg in batch:
                await deliver_wait(sender, dest, topic, (msg,))


class _ToActor(Stage):
    role = "sink"

    def __init__(
        self, dest: Pid | str, topic: str, node: Node | None, options: StageSettings
    ) -> None:
        super().__init__(f"to_actor({dest})", options)
        self.dest = dest
        self.topic = topic
        self.node = node

    def module(self, *, first: bool = False) -> _ToActorModule:
        return _ToActorModule(self.dest, self.topic, self.node)


def to_actor(
    dest: Pid | str,
    topic: str,
    *,
    node: Node | None = None,
    **options: Unpack[StageOptions],
) -> Stage:
    """A sink that sends each message, in order, to the process ``dest`` (a Pid, its
    string form or a registered name) on ``topic``, waiting while its mailbox is full
    (``send_wait``: backpressure, never loss). A ``dest`` that is unknown or has exited
    fails the stage with :class:`~pipekit.actors.NoSuchProcess` naming it. The
    processes are those of the node of the process running the pipeline (or of
    ``node=``); elsewhere the stage fails with :class:`~pipekit.actors.NotInActor`. The
    messages' sender is that process (None when given ``node=`` outside any process).
    ``pk.tee(pk.to_actor(...))`` passes the messages on as well.

    Example::

        async def main():                          # a process: node.run(main)
            await (pk.source(jobs) | pk.to_actor("worker", "job")).arun()
    """
    if not isinstance(dest, Pid | str):
        raise TypeError(
            f"a destination is a Pid, a pid string or a registered name; got {type(dest).__name__}"
        )
    _check(topic, None, node)
    return _ToActor(dest, topic, node, StageSettings.from_options("to_actor", options))
