"""The node: the actor runtime of one OS process (here: of one trio run)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ..channels import parse_duration
from ..kernel.lane import YIELD_EVERY, cancel_point
from ..kernel.scopes import open_plain_nursery
from ._entries import Entry, entry_name, import_entry
from ._errors import (
    ActorError,
    LinkedFailure,
    MailboxFull,
    NoSuchProcess,
    SpawnError,
    Terminated,
)
from ._events import CancelEvent, ExitEvent, LinkDownEvent
from ._pid import Pid, check_part, make_pid
from ._proc import Proc
from ._registry import Registry
from ._tasks import process_main, thread_main, wait_for_room

if TYPE_CHECKING:
    from ._cluster import Cluster
    from ._link import RemoteProc

__all__ = ["DEFAULT_MAILBOX", "HOSTS", "Node", "NodeStats", "open_node", "run"]

DEFAULT_MAILBOX = 1024
"""Messages a process's mailbox holds (every listened topic and the inbox together)."""
HOSTS = ("local", "thread", "process")
"""The hosts a node runs processes on so far: ``"local"`` (a trio task of the node) and
``"thread"`` (a thread of its own, for blocking code), ``"process"`` (a child node in
an OS process of its own, started on first use and reused); besides these, the name of
a connected node runs it there (see :meth:`Node.connect`)."""

_NAME_CACHE = 256
log = logging.getLogger("pipekit.actors")


@dataclass(frozen=True, slots=True)
class NodeStats:
    """What a node holds now: live processes, registered names, links (each counted
    once) and monitors (those its processes hold, and those held on them from other
    nodes).

    Example::

        assert node.stats() == NodeStats(processes=0, names=0, links=0, monitors=0)
    """

    processes: int
    names: int
    links: int
    monitors: int


class Node:
    """One actor runtime: its processes, their names, the entries it knows. Made by
    :func:`open_node`; its methods are for code outside any actor (inside one, use
    :mod:`pipekit.actors.process`).

    Example::

        async with open_node("app") as node:
            print(await node.run(main, 42))        # runs main(42) as a process
    """

    def __init__(self, name: str, nursery: trio.Nursery, mailbox_size: int) -> None:
        self.name = name
        self.mailbox_size = mailbox_size
        self.registry = Registry(self)
        """The node's names (:class:`Registry`)."""
        self._nursery = nursery
        self._procs: dict[str, Proc] = {}
        """The live processes by key (the Pid's ``proc`` part, unique on the node)."""
        self._entries: dict[str, Callable[..., Any]] = {}
        self._names: dict[Any, str] = {}
        """Pid names of the callables spawned lately (bounded: closures come and go)."""
        self._serial = 0
        self._budget = YIELD_EVERY
        self._closed = False
        self._token = trio.lowlevel.current_trio_token()
        self._thread_id = threading.get_ident()
        self._threads = trio.CapacityLimiter(math.inf)
        self._cluster: Cluster | None = None
        """The connected nodes (made by the first :meth:`listen` or :meth:`connect`)."""

    def __repr__(self) -> str:
        return f"<Node {self.name!r}: {len(self._procs)} processes>"

    # -- entries -----------------------------------------------------------------------

    def add_entry(self, name: str, fn: Callable[..., Any]) -> None:
        """Let ``spawn(name)`` start ``fn`` (``name`` is usually ``"namespace:name"``;
        it becomes the middle part of the processes' Pids).

        Example::

            node.add_entry("app:echo", echo)
            pid = node.spawn("app:echo")
        """
        check_part("an entry name", name)
        if not callable(fn):
            raise TypeError(f"an entry is callable, got {type(fn).__name__}")
        self._entries[name] = fn

    def _resolve(self, entry: Entry) -> tuple[Callable[..., Any], str]:
        if isinstance(entry, str):
            fn = self._entries.get(entry)
            if fn is not None:
                return fn, entry
            return import_entry(entry), entry
        try:
            name = self._names.get(entry)
        except TypeError:  # an unhashable callable object
            name = None
        if name is None:
            if not callable(entry):
                raise SpawnError(
                    f"an entry is a callable, an import string or a registered name; "
                    f"got {type(entry).__name__}"
                )
            name = entry_name(entry)
            if len(self._names) >= _NAME_CACHE:
                self._names.clear()
            with contextlib.suppress(TypeError):
                self._names[entry] = name
        return entry, name

    # -- finding processes -------------------------------------------------------------

    def find(self, dest: Pid | str) -> Proc:
        """The live process ``dest`` (a Pid, its string form or a registered name), or
        :class:`NoSuchProcess`."""
        if type(dest) is Pid:
            proc = self._procs.get(dest.proc)
            if proc is not None and not proc.is_pid(dest):
                proc = None
        elif isinstance(dest, str):
            if dest.startswith("{"):
                return self.find(Pid.parse(dest))
            proc = self.registry.find(dest)
            if proc is None:
                raise NoSuchProcess(f"no process is registered as {dest!r}")
        else:
            raise TypeError(
                f"a destination is a Pid, a pid string or a registered name; "
                f"got {type(dest).__name__}"
            )
        if proc is None:
            assert isinstance(dest, Pid)
            if dest.node != self.name:
                if self._cluster is not None and dest.node in self._cluster.links:
                    raise NoSuchProcess(
                        f"{dest} runs on node {dest.node!r}: this node ({self.name!r}) "
                        f"reaches it by sending, not as one of its own processes"
                    )
                raise NoSuchProcess(
                    f"{dest} runs on node {dest.node!r}, which this node ({self.name!r}) "
                    f"is not connected to"
                )
            raise NoSuchProcess(f"{dest} is not running (it exited or never existed)")
        return proc

    def target(self, dest: Pid | str) -> Proc | RemoteProc:
        """:meth:`find`, or the stand-in for a process (or a name) of a connected node."""
        cluster = self._cluster
        if cluster is not None:
            if type(dest) is Pid:
                if dest.node != self.name and dest.node is not None:
                    remote = cluster.resolve(dest)
                    if remote is not None:
                        return remote
            elif isinstance(dest, str) and not dest.startswith("{"):
                if self.registry.find(dest) is None or dest in cluster.names:
                    pid = cluster.lookup(dest)
                    if pid is not None and pid.node != self.name:
                        return cluster.resolve(pid) or self.find(dest)
            elif isinstance(dest, str):
                return self.target(Pid.parse(dest))
        return self.find(dest)

    def connected(self) -> list[str]:
        """The names of the nodes connected to this one.

        Example::

            await node.connect("tcp://10.0.0.2:4000")
            assert "db" in node.connected()
        """
        return sorted(self._cluster.links) if self._cluster is not None else []

    def _the_cluster(self) -> Cluster:
        if self._closed:
            raise ActorError(f"node {self.name!r} is closed")
        if self._cluster is None:
            from ._cluster import Cluster

            self._cluster = Cluster(self)
        return self._cluster

    async def listen(
        self,
        address: str,
        *,
        token: str | None = None,
        link_queue: int | None = None,
        **options: Any,
    ) -> str:
        """Accept other nodes at ``address`` until this node closes: a unix socket path
        (or ``"unix:PATH"``), ``"HOST:PORT"`` (or ``"tcp://HOST:PORT"``; port 0 picks
        one) or a ``ws://HOST:PORT/PATH`` URL. ``token`` is the secret peers must
        present; other keywords go to the adapter's ``listen`` (``ssl_context``,
        ``max_peers``, pipe options). Returns the address peers connect to.

        Example::

            address = await node.listen("127.0.0.1:0", token="s3cret")
            # another node: await other.connect(address, token="s3cret")
        """
        from ._link import DEFAULT_LINK_QUEUE

        return await self._the_cluster().listen(
            address, token=token, link_queue=_queue_size(link_queue, DEFAULT_LINK_QUEUE), **options
        )

    async def connect(
        self,
        address: str,
        *,
        token: str | None = None,
        link_queue: int | None = None,
        **options: Any,
    ) -> str:
        """Join the node listening at ``address`` (forms as :meth:`listen`; ``tls://``
        with ``ssl_context``): returns its name once both nodes have said HELLO. The
        link lasts until either node closes or the connection breaks.
        :class:`NodeError` if a node of that name is already connected; the adapter's
        errors (a wrong token: :class:`~pipekit.kernel.RemoteError`, an address nobody
        listens on: :class:`OSError`) as they are. ``link_queue``: messages queued for
        the link (65,536 unless given) before a ``send`` raises :class:`LinkFull`.

        Example::

            peer = await node.connect("unix:/run/app/db.sock")
            node.send(node.registry.lookup("db"), "query", "select 1")
        """
        from ._link import DEFAULT_LINK_QUEUE

        return await self._the_cluster().connect(
            address, token=token, link_queue=_queue_size(link_queue, DEFAULT_LINK_QUEUE), **options
        )

    def stats(self) -> NodeStats:
        """What the node holds now (see :class:`NodeStats`)."""
        procs = self._procs.values()
        links = sum(len(p.links or ()) for p in procs)
        monitors = sum(len(p.watching or ()) for p in procs)
        if self._cluster is not None:  # a link or monitor with a remote process: once
            remote_links = sum(o.remote for p in procs for o in p.links or ())
            links += remote_links
            monitors += sum(o.remote for p in procs for o in p.watchers or ())
        links //= 2
        return NodeStats(len(self._procs), len(self.registry), links, monitors)

    # -- spawning ----------------------------------------------------------------------

    def spawn(self, entry: Entry, host: str | None = None, *args: Any) -> Pid:
        """Start ``entry(*args)`` as a process of this node (no parent: nothing links
        to or monitors it); its Pid.

        Example::

            pid = node.spawn(worker, None, "job-1")   # host None: a local task
        """
        return self.spawn_process(entry, host, args, None, link=False, monitor=False)

    def spawn_process(
        self,
        entry: Entry,
        host: str | None,
        args: tuple[Any, ...],
        parent: Proc | None,
        *,
        link: bool,
        monitor: bool,
        key: str | None = None,
    ) -> Pid:
        """Start a process; link it to and/or have it monitored by ``parent``. ``key``:
        its Pid's ``proc`` part, if a peer chose it (a remote spawn)."""
        if self._closed:
            raise ActorError(f"node {self.name!r} is closed: it starts no more processes")
        threaded = False
        if host is None or host == "local":
            host = "local"
        elif host == "thread":
            threaded = True
        elif host == "process":
            here = self._the_cluster()
            return here.spawn(entry, here.process_node(), args, parent, link, monitor)
        elif isinstance(host, str):
            cluster = self._cluster
            if cluster is not None and host in cluster.links:
                return cluster.spawn(entry, host, args, parent, link, monitor)
            raise SpawnError(
                f"unknown host {host!r}: this node runs processes on {', '.join(HOSTS)} "
                f"and on the nodes connected to it "
                f"(spawn(entry, host, *args): the arguments come after the host)"
            )
        else:
            raise TypeError(
                f"a host is None or a str, got {type(host).__name__} (spawn(entry, host, "
                f"*args): the arguments come after the host; None means a local task)"
            )
        fn: Callable[..., Any] = entry  # type: ignore[assignment]
        name = None
        if type(entry) is not str:  # the common case first: a callable spawned lately
            try:
                name = self._names.get(entry)
            except TypeError:  # an unhashable callable object
                name = None
        if name is None:
            fn, name = self._resolve(entry)
        if threaded and inspect.iscoroutinefunction(fn):
            raise SpawnError(
                f"{name} is an async function: it runs on the local host; the 'thread' "
                f"host runs plain (blocking) functions"
            )
        if key is None:
            self._serial += 1
            key = str(self._serial)
        elif key in self._procs:
            raise SpawnError(f"a process {key!r} already runs on node {self.name!r}")
        proc = Proc(self, host, name, key, self.mailbox_size)
        self._procs[key] = proc
        if parent is not None:
            if link:
                proc.links = {parent}
                if parent.links is None:
                    parent.links = set()
                parent.links.add(proc)
            if monitor:
                proc.watchers = {parent}
                if parent.watching is None:
                    parent.watching = set()
                parent.watching.add(proc)
        if threaded:
            proc.threaded = True
            self._nursery.start_soon(thread_main, proc, fn, args, self._threads, name=name)
        else:
            self._nursery.start_soon(process_main, proc, fn, args, name=name)
        # Not kept in proc (proc.pid makes an equal one when asked): a process that
        # nobody addresses holds one object fewer while it waits to start.
        return make_pid(self.name, host, name, key)

    def from_thread(self, proc: Proc, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the node's trio thread, for the thread process ``proc``
        (:class:`Terminated` if it has been stopped)."""
        if proc.kill_reason is not None:
            raise proc.kill_reason
        if threading.get_ident() == self._thread_id:
            return fn(*args)
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    async def run(self, entry: Entry, *args: Any) -> Any:
        """Run ``entry(*args)`` as a process and wait for it: its result, or its error
        raised here. If this call is cancelled, the process is terminated.

        Example::

            async with open_node("app") as node:
                total = await node.run("shop.cart:main", order_id)
        """
        pid = self.spawn(entry, None, *args)
        proc = self._procs[pid.proc]
        done = trio.Event()
        outcome: list[tuple[Any, BaseException | None]] = []

        def finished(result: Any, error: BaseException | None) -> None:
            outcome.append((result, error))
            done.set()

        proc.on_exit = [finished]
        try:
            await done.wait()
        except BaseException:
            proc.kill(Terminated("the caller of node.run was cancelled"))
            raise
        result, error = outcome[0]
        if error is not None:
            raise error
        return result

    # -- messages ----------------------------------------------------------------------

    def send(self, dest: Pid | str, topic: str, *payloads: Any) -> None:
        """Send from outside any actor (the messages' sender is None): as
        :func:`pipekit.actors.process.send`.

        Example::

            node.send("logger", "line", "started")
        """
        self.deliver(None, dest, topic, payloads)

    def deliver(
        self, sender: Pid | None, dest: Pid | str, topic: str, payloads: tuple[Any, ...]
    ) -> None:
        if type(dest) is Pid:  # inline find(): the hot path
            proc = self._procs.get(dest.proc)
            if (
                proc is None
                or dest.name != proc.entry_name
                or dest.host != proc.host
                or dest.node != self.name
            ):
                target = self.target(dest)
                if type(topic) is not str:
                    raise TypeError(f"a topic is a str, got {type(topic).__name__}")
                target.deliver(sender, topic, payloads)
                return
        else:
            target = self.target(dest)
            if type(topic) is not str:
                raise TypeError(f"a topic is a str, got {type(topic).__name__}")
            target.deliver(sender, topic, payloads)
            return
        if type(topic) is not str:
            raise TypeError(f"a topic is a str, got {type(topic).__name__}")
        proc.deliver(sender, topic, payloads)

    async def send_wait(self, dest: Pid | str, topic: str, *payloads: Any) -> None:
        """:meth:`send`, waiting while the destination's mailbox is full."""
        await self.deliver_wait(None, dest, topic, payloads)

    async def deliver_wait(
        self, sender: Pid | None, dest: Pid | str, topic: str, payloads: tuple[Any, ...]
    ) -> None:
        self._budget -= 1
        if self._budget <= 0:
            self._budget = YIELD_EVERY
            await trio.lowlevel.checkpoint()
        else:
            await cancel_point()
        while True:
            proc: Proc | None = None
            if type(dest) is Pid:
                proc = self._procs.get(dest.proc)
                if proc is not None and not proc.is_pid(dest):
                    proc = None
            if proc is None:
                target = self.target(dest)
                if target.remote:
                    if type(topic) is not str:
                        raise TypeError(f"a topic is a str, got {type(topic).__name__}")
                    await target.deliver_wait(sender, topic, payloads)  # type: ignore[union-attr]
                    return
                proc = target  # type: ignore[assignment]
                assert proc is not None
            if proc.queued + (len(payloads) or 1) <= proc.capacity:
                if type(topic) is not str:
                    raise TypeError(f"a topic is a str, got {type(topic).__name__}")
                proc.deliver(sender, topic, payloads)
                return
            if (len(payloads) or 1) > proc.capacity:
                raise MailboxFull(
                    f"{len(payloads)} messages never fit in the mailbox of {proc.pid} "
                    f"({proc.capacity} messages): send them in parts"
                )
            await wait_for_room(proc)

    # -- lifecycle ---------------------------------------------------------------------

    def terminate(self, dest: Pid | str) -> None:
        """Stop ``dest`` now: its error is ``Terminated("terminated")``."""
        self.terminate_from(dest, None)

    def terminate_from(self, dest: Pid | str, sender: Pid | None) -> None:
        target = self.target(dest)
        if target.remote:
            assert self._cluster is not None
            self._cluster.terminate(target, sender)  # type: ignore[arg-type]
        else:
            target.kill(Terminated("terminated"))

    def cancel(self, dest: Pid | str, deadline: float | str, sender: Pid | None = None) -> None:
        """Ask ``dest`` to stop: it gets a CANCEL event, and is stopped (error
        ``Terminated("cancel deadline passed")``) if it still runs ``deadline`` (seconds,
        or ``"5s"``, ``"100ms"``) from now."""
        target = self.target(dest)
        if target.remote:
            assert self._cluster is not None
            self._cluster.cancel(target, parse_duration(deadline), sender)  # type: ignore[arg-type]
            return
        proc: Proc = target  # type: ignore[assignment]
        now = trio.current_time()
        at = now + parse_duration(deadline)
        proc.post(CancelEvent(sender, now, at))
        scope = proc.cancel_scope()
        if at < scope.deadline:
            scope.deadline = at

    def link(self, a: Proc, dest: Pid | str) -> None:
        target = self.target(dest)
        if target.remote:
            assert self._cluster is not None
            self._cluster.link(a, target)  # type: ignore[arg-type]
            return
        b: Proc = target  # type: ignore[assignment]
        if b is a:
            return
        for x, y in ((a, b), (b, a)):
            if x.links is None:
                x.links = set()
            x.links.add(y)

    def unlink(self, a: Proc, dest: Pid | str) -> None:
        target = self.target(dest)
        if target.remote:
            assert self._cluster is not None
            self._cluster.unlink(a, target)  # type: ignore[arg-type]
            return
        b: Proc = target  # type: ignore[assignment]
        if a.links:
            a.links.discard(b)
        if b.links:
            b.links.discard(a)

    def monitor(self, watcher: Proc, dest: Pid | str) -> None:
        remote = self.target(dest)
        if remote.remote:
            assert self._cluster is not None
            self._cluster.monitor(watcher, remote)  # type: ignore[arg-type]
            return
        target: Proc = remote  # type: ignore[assignment]
        if target.watchers is None:
            target.watchers = set()
        target.watchers.add(watcher)
        if watcher.watching is None:
            watcher.watching = set()
        watcher.watching.add(target)

    def unmonitor(self, watcher: Proc, dest: Pid | str) -> None:
        remote = self.target(dest)
        if remote.remote:
            assert self._cluster is not None
            self._cluster.unmonitor(watcher, remote)  # type: ignore[arg-type]
            return
        target: Proc = remote  # type: ignore[assignment]
        if target.watchers:
            target.watchers.discard(watcher)
        if watcher.watching:
            watcher.watching.discard(target)

    def exited(self, proc: Proc, result: Any, error: BaseException | None) -> None:
        """``proc`` is done: forget it, release its names, tell its monitors, and
        take its links down with it if it failed (or tell those that trap links)."""
        proc.alive = False
        procs = self._procs
        del procs[proc.key]
        if not procs:
            self._procs = {}  # a dict keeps its peak size: let it go once empty
        if proc.names:
            self.registry.release(proc)
        watchers, links, watching = proc.watchers, proc.links, proc.watching
        if watchers is not None or links is not None or watching is not None:
            proc.watchers = proc.links = proc.watching = None  # (no dict made for None)
        if watchers or links:
            now = trio.current_time()
            if watchers:
                exit_event = ExitEvent(proc.pid, now, result, error)
                for watcher in watchers:
                    if watcher.watching:
                        watcher.watching.discard(proc)
                    watcher.post(exit_event)
            if links:
                for other in links:
                    if other.links:
                        other.links.discard(proc)
                    if error is None:
                        if other.remote:
                            other.unlinked(proc)  # type: ignore[attr-defined]
                        continue
                    if other.trap_links:
                        other.post(LinkDownEvent(proc.pid, now, error))
                    else:
                        other.kill(LinkedFailure(proc.pid, error))
        elif error is not None and not proc.on_exit and not isinstance(error, Terminated):
            log.warning("process %s failed: %r", proc.pid, error, exc_info=error)
        if watching:
            for target in watching:
                if target.watchers:
                    target.watchers.discard(proc)
        if proc.room_waiters:
            proc.wake_room()
        on_exit = proc.on_exit
        if on_exit is not None:
            proc.on_exit = None
            for callback in on_exit:
                callback(result, error)


def _queue_size(value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"link_queue must be an int >= 1, got {value!r}")
    return value


@asynccontextmanager
async def open_node(
    name: str = "node", *, mailbox_size: int = DEFAULT_MAILBOX
) -> AsyncIterator[Node]:
    """Run an actor node for the length of the block. Its processes are trio tasks of
    the block's nursery; leaving the block stops those still running (their error is
    ``Terminated("node closed")``). ``mailbox_size``: how many messages a process's
    mailbox holds.

    Example::

        async with open_node("app") as node:
            result = await node.run(main)
    """
    check_part("a node name", name)
    if isinstance(mailbox_size, bool) or not isinstance(mailbox_size, int) or mailbox_size < 1:
        raise ValueError(f"mailbox_size must be an int >= 1, got {mailbox_size!r}")
    async with open_plain_nursery() as nursery:
        node = Node(name, nursery, mailbox_size)
        try:
            yield node
        finally:
            node._closed = True
            for proc in list(node._procs.values()):
                if proc.threaded:  # its thread stops at its next process call
                    proc.kill(Terminated("node closed"))
            nursery.cancel_scope.cancel()


def run(entry: Entry, *args: Any, node: str = "main", mailbox_size: int = DEFAULT_MAILBOX) -> Any:
    """Start a node, run ``entry(*args)`` as its first process, and return its result
    (or raise its error): the blocking form of ``node.run`` for scripts.

    Example::

        from pipekit import actors

        print(actors.run(main, 10))
    """

    async def main() -> Any:
        async with open_node(node, mailbox_size=mailbox_size) as n:
            return await n.run(entry, *args)

    return trio.run(main)
