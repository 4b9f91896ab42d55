"""A node's peers: joining them (listen, connect, the node HELLO), routing to their
processes, what they send (the node messages of ``docs/protocol.md``, "Nodes"), their
names, and what happens when one goes away."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from ..kernel import Pipe, PipekitError, RemoteError
from . import _wire as wire
from ._entries import Entry, entry_name
from ._errors import (
    ActorError,
    LinkedFailure,
    MailboxFull,
    NameTaken,
    NoConnection,
    NodeError,
    NoSuchProcess,
    SpawnError,
    Terminated,
)
from ._events import CancelEvent, ExitEvent, LinkDownEvent, UndeliveredEvent
from ._link import DEFAULT_LINK_QUEUE, Link, RemoteProc
from ._pid import Pid, make_pid
from ._tasks import wait_for_room

if TYPE_CHECKING:
    from ._node import Node
    from ._proc import Proc

__all__ = ["Cluster", "open_address"]

log = logging.getLogger("pipekit.actors")

MALFORMED = (ValueError, TypeError, IndexError)
"""What a node message that does not parse raises while it is handled."""
_DEST_CACHE = 4096


# -- addresses ---------------------------------------------------------------------------


def _split(address: str) -> tuple[str, str]:
    if not isinstance(address, str) or not address:
        raise TypeError(f"an address is a non-empty str, got {address!r}")
    if address.startswith(("ws://", "wss://")):
        return "ws", address
    if address.startswith(("tcp://", "tls://")):
        return "tcp", address.split("://", 1)[1]
    if address.startswith("unix:"):
        return "unix", address[5:]
    if "/" in address:
        return "unix", address
    if ":" in address:
        return "tcp", address
    raise ValueError(
        f"not an address: {address!r} (a unix socket path, 'unix:PATH', 'HOST:PORT', "
        f"'tcp://HOST:PORT' or a ws:// URL)"
    )


def _host_port(where: str) -> tuple[str, int]:
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {where!r}")
    return host.strip("[]"), int(port)


def open_address(
    address: str, *, token: str | None, **options: Any
) -> AbstractAsyncContextManager[Pipe]:
    """The adapter's ``connect`` for ``address`` (a path, ``unix:PATH``, ``HOST:PORT``,
    ``tcp://HOST:PORT``, ``tls://HOST:PORT`` or a ``ws://``/``wss://`` URL). Only that
    adapter is imported (the websocket one alone takes 35-55 ms)."""
    kind, where = _split(address)
    if kind == "unix":
        from ..adapters import unix

        return unix.connect(where, token=token, **options)
    if kind == "tcp":
        from ..adapters import tcp

        host, port = _host_port(where)
        return tcp.connect(host, port, token=token, **options)
    from ..adapters import websocket

    return websocket.connect(where, token=token, **options)


def listen_address(
    address: str, handler: Callable[[Any], Awaitable[Any]], *, token: str | None, **options: Any
) -> AbstractAsyncContextManager[Any]:
    kind, where = _split(address)
    if kind == "unix":
        from ..adapters import unix

        return unix.listen(where, handler=handler, token=token, **options)
    if kind == "tcp":
        from ..adapters import tcp

        host, port = _host_port(where)
        return tcp.listen(host, port, handler=handler, token=token, **options)
    from ..adapters import websocket

    url = urlsplit(where)
    return websocket.listen(
        url.hostname or "127.0.0.1",
        url.port or 0,
        path=url.path or "/",
        handler=handler,
        token=token,
        **options,
    )


def _bound(address: str, listener: Any) -> str:
    kind, _ = _split(address)
    if kind == "unix":
        return f"unix:{listener.address}"
    if kind == "tcp":
        host, port = listener.address
        scheme = "tls" if address.startswith("tls://") else "tcp"
        return f"{scheme}://{host}:{port}"
    return str(listener.url)


# -- the cluster -------------------------------------------------------------------------


class Cluster:
    """The peers of one node (``node._cluster``, made by its first listen or connect)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.links: dict[str, Link] = {}
        self.names: dict[str, dict[str, Pid]] = {}
        """Names registered on peers: name -> {peer node: pid}."""
        self.clashes: list[tuple[str, list[str]]] = []
        self._spawned = 0
        self._dests: dict[Any, Proc] = {}
        """Local processes by the pid string peers address them with (a cache)."""
        self._handlers: dict[str, Callable[[Link, list[Any]], Awaitable[None] | None]] = {
            wire.SEND: self._on_send,
            wire.SEND_WAIT: self._on_send_wait,
            wire.LINK: self._on_link,
            wire.UNLINK: self._on_unlink,
            wire.MONITOR: self._on_monitor,
            wire.UNMONITOR: self._on_unmonitor,
            wire.EXIT: self._on_exit,
            wire.DOWN: self._on_down,
            wire.TERMINATE: self._on_terminate,
            wire.CANCEL: self._on_cancel,
            wire.SPAWN: self._on_spawn,
            wire.UNDELIVERED: self._on_undelivered,
            wire.REGISTER: self._on_register,
            wire.UNREGISTER: self._on_unregister,
        }

    # -- joining -----------------------------------------------------------------------

    def _names_out(self) -> dict[str, str]:
        return {name: str(pid) for name, pid in self.node.registry.names().items()}

    def _check_peer(self, peer: str) -> None:
        if peer == self.node.name:
            raise NodeError(f"the peer node is named {peer!r}, like this node")
        if peer in self.links:
            raise NodeError(f"a node named {peer!r} is already connected to {self.node.name!r}")

    async def join(
        self,
        pipe: Pipe,
        initiator: bool,
        limit: int,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
        link: Link | None = None,
    ) -> None:
        """The node HELLO on ``pipe`` (the initiator speaks first; the acceptor checks
        before it answers), then the link, until it ends. ``link``: one made already
        (the ``"process"`` host's, which queues before its child has started)."""
        made: Link | None = None
        try:
            if initiator:
                await pipe.send(wire.hello(self.node.name, self._names_out()))
            peer, names = wire.parse_hello(await pipe.receive())
            if link is None:
                self._check_peer(peer)
                # Taken at once (before the answer's await): a second peer of this name
                # joining meanwhile is refused.
                link = made = self.links[peer] = Link(self, pipe, peer, limit)
            elif peer != link.peer:
                raise NodeError(f"expected node {link.peer!r}, got {peer!r}")
            if not initiator:
                await pipe.send(wire.hello(self.node.name, self._names_out()))
        except BaseException as exc:
            if made is not None and self.links.get(made.peer) is made:
                del self.links[made.peer]
            if isinstance(exc, RemoteError):
                raise NodeError(f"the peer refused to join: {exc}") from exc
            if isinstance(exc, ValueError | trio.EndOfChannel):
                await _refuse(pipe, NodeError(f"not a node: {exc}"))
                raise NodeError(f"the peer is not a node: {exc}") from exc
            if isinstance(exc, NodeError):
                await _refuse(pipe, exc)
            raise
        link.attach(pipe)
        for name, pid in names.items():
            self._add_name(peer, name, pid)
        task_status.started(peer)
        await link.run()

    async def connect(
        self, address: str, *, token: str | None, link_queue: int, **options: Any
    ) -> str:
        async def run(task_status: trio.TaskStatus[str]) -> None:
            joined: list[str] = []

            class Started:
                def started(self, peer: str) -> None:
                    joined.append(peer)
                    task_status.started(peer)

            try:
                async with open_address(address, token=token, **options) as pipe:
                    await self.join(pipe, True, link_queue, Started())  # type: ignore[arg-type]
            except (trio.BrokenResourceError, trio.ClosedResourceError, PipekitError) as exc:
                if not joined:
                    raise
                log.info("the link to node %r closed: %s", joined[0], exc)

        try:
            peer: str = await self.node._nursery.start(run)
        except RemoteError as exc:
            raise NodeError(f"{address}: {exc}") from exc
        return peer

    async def listen(
        self, address: str, *, token: str | None, link_queue: int, **options: Any
    ) -> str:
        async def handler(pipe: Any) -> None:
            try:
                await self.join(pipe, False, link_queue)
            except NodeError as exc:
                log.warning("node %r refused a peer: %s", self.node.name, exc)

        async def run(task_status: trio.TaskStatus[str]) -> None:
            async with listen_address(address, handler, token=token, **options) as listener:
                task_status.started(_bound(address, listener))
                await trio.sleep_forever()

        bound: str = await self.node._nursery.start(run)
        return bound

    def process_node(self) -> str:
        """The name of the ``"process"`` host's child node, started on first use (a
        ``python -m pipekit.actors._child`` over the stdio adapter) and reused; requests
        queue on its link until it has joined."""
        name = f"{self.node.name}.process"
        if name not in self.links:
            link = Link(self, None, name, DEFAULT_LINK_QUEUE)
            self.links[name] = link
            self.node._nursery.start_soon(self._run_child, link, name=name)
        return name

    async def _run_child(self, link: Link) -> None:
        from ..adapters.stdio import ProcessSpec, open_process

        spec = ProcessSpec(
            (sys.executable, "-m", "pipekit.actors._child", link.peer),
            mode="frames",
            stderr="inherit",
            name=link.peer,
        )
        try:
            async with open_process(spec) as pipe:
                await self.join(pipe, True, link.limit, link=link)
        except (PipekitError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.warning("the 'process' host's node %r ended: %s", link.peer, exc)
        finally:
            if not link.closed:  # it never ran: what waits on it learns noconnection
                link.closed = True
                self.link_down(link)

    # -- routing -----------------------------------------------------------------------

    def resolve(self, dest: Pid | str) -> RemoteProc | None:
        """The stand-in for ``dest`` if it is a process (or a name) of a connected node."""
        if type(dest) is Pid:
            link = self.links.get(dest.node) if dest.node is not None else None
            if link is None:
                return None
            return link.proxies.get(dest) or link.proxy(dest)
        if isinstance(dest, str):
            pid = self.lookup(dest)
            if pid is None or pid.node == self.node.name:
                return None
            return self.resolve(pid)
        return None

    def lookup(self, name: str) -> Pid | None:
        """The holder of ``name`` in the cluster: if several nodes hold it, the one on
        the node whose name sorts first (every node picks the same one)."""
        holders = self.names.get(name)
        local = self.node.registry.find(name)
        if not holders:
            return None if local is None else local.pid
        if local is not None:
            holders = {**holders, self.node.name: local.pid}
        return holders[min(holders)]

    def check_free(self, name: str) -> None:
        """:class:`NameTaken` if a connected node holds ``name``."""
        holders = self.names.get(name)
        if holders:
            peer, pid = next(iter(holders.items()))
            raise NameTaken(f"the name {name!r} is taken by {pid} on node {peer!r}")

    def registered(self, name: str, pid: Pid) -> None:
        for link in self.links.values():
            link.push([wire.REGISTER, name, str(pid)])

    def unregistered(self, name: str) -> None:
        for link in self.links.values():
            link.push([wire.UNREGISTER, name])

    def _add_name(self, peer: str, name: str, pid: Pid) -> None:
        holders = self.names.setdefault(name, {})
        holders[peer] = pid
        local = self.node.registry.find(name)
        nodes = sorted(holders) + ([self.node.name] if local is not None else [])
        if len(nodes) > 1:
            nodes.sort()
            self.clashes.append((name, nodes))
            log.warning(
                "the name %r is registered on nodes %s: it resolves to the holder on %r",
                name,
                ", ".join(nodes),
                nodes[0],
            )

    # -- requests to peers ------------------------------------------------------------

    def spawn(
        self,
        entry: Entry,
        peer: str,
        args: tuple[Any, ...],
        parent: Proc | None,
        link: bool,
        monitor: bool,
    ) -> Pid:
        """Ask ``peer`` to spawn ``entry(*args)``: the Pid is minted here (its ``proc``
        is ``"<this node>.<n>"``), so the call returns at once."""
        if isinstance(entry, str):
            name = entry
        elif callable(entry):
            name = entry_name(entry)
        else:
            raise SpawnError(f"an entry is a callable or a str, got {type(entry).__name__}")
        self._spawned += 1
        pid = make_pid(peer, "local", name, f"{self.node.name}.{self._spawned}")
        chan = self.links[peer]
        proxy = chan.proxy(pid)
        caller = None
        if parent is not None:
            caller = str(parent.pid)
            if link:
                _add(parent, "links", proxy)
                _add(proxy, "links", parent)
            if monitor:
                _add(parent, "watching", proxy)
                _add(proxy, "watchers", parent)
        chan.push(
            [wire.SPAWN, caller, str(pid), name, wire.encode_value(list(args)), link, monitor]
        )
        return pid

    def link(self, me: Proc, proxy: RemoteProc) -> None:
        _add(me, "links", proxy)
        _add(proxy, "links", me)
        proxy.link.push([wire.LINK, str(me.pid), proxy.text])

    def unlink(self, me: Proc, proxy: RemoteProc) -> None:
        _discard(me, "links", proxy)
        _discard(proxy, "links", me)
        proxy.link.push([wire.UNLINK, str(me.pid), proxy.text])

    def monitor(self, me: Proc, proxy: RemoteProc) -> None:
        _add(me, "watching", proxy)
        _add(proxy, "watchers", me)
        proxy.link.push([wire.MONITOR, str(me.pid), proxy.text])

    def unmonitor(self, me: Proc, proxy: RemoteProc) -> None:
        _discard(me, "watching", proxy)
        _discard(proxy, "watchers", me)
        proxy.link.push([wire.UNMONITOR, str(me.pid), proxy.text])

    def terminate(self, proxy: RemoteProc, sender: Pid | None) -> None:
        proxy.link.push([wire.TERMINATE, None if sender is None else str(sender), proxy.text])

    def cancel(self, proxy: RemoteProc, seconds: float, sender: Pid | None) -> None:
        src = None if sender is None else str(sender)
        proxy.link.push([wire.CANCEL, src, proxy.text, seconds])

    # -- what peers send ---------------------------------------------------------------

    def handle(self, link: Link, message: Any) -> Awaitable[None] | None:
        """Act on one node message from ``link``'s peer; for one that has to wait (a
        SEND_WAIT to a full mailbox) return the coroutine that does it, with nothing
        done before it is awaited."""
        try:
            if type(message) is not list or not message:
                raise ValueError("a node message is a non-empty array")
            handler = self._handlers.get(message[0])
            if handler is None:
                log.info("node %r ignores an unknown node message %r", self.node.name, message[0])
                return None
            return handler(link, message)
        except MALFORMED as exc:
            self._malformed(link, exc)
            return None

    def handle_now(self, link: Link, message: Any) -> bool:
        """:meth:`handle`, for a caller that cannot wait (the link's pipe reader): False,
        with nothing done, for a message that has to wait."""
        waiting = self.handle(link, message)
        if waiting is None:
            return True
        close = getattr(waiting, "close", None)
        if close is not None:
            close()  # a coroutine that never ran: the link's reader calls handle() again
        return False

    def _malformed(self, link: Link, exc: Exception) -> None:
        """A peer's message that does not parse is logged and ignored (protocol 15.1)."""
        log.warning("node %r: a malformed node message from %r: %s", self.node.name, link.peer, exc)

    def _local(self, link: Link, dest: Any) -> Proc:
        if type(dest) is str and dest.startswith("{"):
            pid = link.pid(dest)
            if pid.node != self.node.name:
                raise NoSuchProcess(f"{pid} does not run on node {self.node.name!r}")
            return self.node.find(pid)
        return self.node.find(dest)

    def _bounce(
        self, link: Link, sender: Any, dest: Any, topic: Any, count: int, error: BaseException
    ) -> None:
        if sender is not None:
            # One report per (sender, dest, topic, error type) while it is queued.
            key = (sender, dest, topic, type(error).__name__)
            link.report(
                key, [wire.UNDELIVERED, sender, dest, topic, count, wire.encode_error(error)]
            )
        else:
            log.warning(
                "%d message(s) from outside any actor on node %r to %s on %r not delivered: %s",
                count,
                link.peer,
                dest,
                self.node.name,
                error,
            )

    def _dest(self, link: Link, dest: Any) -> Proc:
        proc = self._dests.get(dest)
        if proc is None or not proc.alive:
            proc = self._local(link, dest)
            if dest.startswith("{"):
                if len(self._dests) >= _DEST_CACHE:
                    self._dests.clear()
                self._dests[dest] = proc
        return proc

    def _on_send(self, link: Link, m: list[Any]) -> None:
        """SEND: each value one message; those the mailbox has no room for (or all, if
        there is no such process) are reported to the sender."""
        dest, sender, topic = m[1], m[2], m[3]
        count = len(m) - 4
        delivered = 0
        try:
            if type(topic) is not str:
                raise TypeError(f"a topic is a str, got {type(topic).__name__}")
            if count < 1:
                raise ValueError("a SEND carries at least one value")
            proc = self._dest(link, dest)
            src = None if sender is None else (link._pids.get(sender) or link.pid(sender))
            if count == 1:
                payload = m[4]
                if type(payload) is list or type(payload) is dict:
                    payload = wire.decode_value(payload)
                proc.deliver(src, topic, (payload,))
                return
            values = _values(m, 4, min(count, proc.capacity - proc.queued))
            if values:
                proc.deliver(src, topic, values)
                delivered = len(values)
            if delivered < count:
                # (No count in the text: the report's count, which grows as reports
                # merge, says how many.)
                raise MailboxFull(f"the mailbox of {proc.pid} is full ({proc.capacity} messages)")
        except ActorError as exc:
            self._bounce(link, sender, dest, topic, count - delivered, exc)

    def _on_send_wait(self, link: Link, m: list[Any]) -> Awaitable[None] | None:
        """SEND_WAIT: delivered now if the mailbox has room, else the link's reader
        waits for room (and so the pipe PAUSEs the sender: backpressure)."""
        if type(m[3]) is not str:  # checked here, inside handle()'s guard, not after a wait
            raise TypeError(f"a topic is a str, got {type(m[3]).__name__}")
        try:
            proc = self._dest(link, m[1])
        except ActorError as exc:
            self._bounce(link, m[2], m[1], m[3], len(m) - 4, exc)
            return None
        if proc.queued + len(m) - 4 <= proc.capacity:
            self._on_send(link, m)
            return None
        return self._send_when_room(link, m, proc)

    async def _send_when_room(self, link: Link, m: list[Any], proc: Proc) -> None:
        dest, sender, topic = m[1], m[2], m[3]
        at, end = 4, len(m)
        try:
            src = None if sender is None else link.pid(sender)
            while at < end:
                while proc.alive and proc.queued >= proc.capacity:
                    await wait_for_room(proc)
                if not proc.alive:
                    raise NoSuchProcess(f"{proc.pid} exited before its mailbox had room")
                values = _values(m, at, min(end - at, proc.capacity - proc.queued))
                proc.deliver(src, topic, values)
                at += len(values)
        except ActorError as exc:
            self._bounce(link, sender, dest, topic, end - at, exc)
        except MALFORMED as exc:  # found after the wait, outside handle()'s guard
            self._malformed(link, exc)

    def _on_link(self, link: Link, m: list[Any]) -> None:
        _, src, dest = m
        proxy = link.proxy(link.pid(src))
        try:
            proc = self._local(link, dest)
        except NoSuchProcess as exc:
            link.report((wire.DOWN, dest, src), [wire.DOWN, dest, src, wire.encode_error(exc)])
            return
        _add(proc, "links", proxy)
        _add(proxy, "links", proc)

    def _on_unlink(self, link: Link, m: list[Any]) -> None:
        _, src, dest = m
        proxy = link.proxy(link.pid(src))
        with contextlib.suppress(NoSuchProcess):
            proc = self._local(link, dest)
            _discard(proc, "links", proxy)
            _discard(proxy, "links", proc)

    def _on_monitor(self, link: Link, m: list[Any]) -> None:
        _, src, dest = m
        proxy = link.proxy(link.pid(src))
        try:
            proc = self._local(link, dest)
        except NoSuchProcess as exc:
            answer = [wire.EXIT, dest, src, None, wire.encode_error(exc)]
            link.report((wire.EXIT, dest, src), answer)
            return
        _add(proc, "watchers", proxy)
        _add(proxy, "watching", proc)

    def _on_unmonitor(self, link: Link, m: list[Any]) -> None:
        _, src, dest = m
        proxy = link.proxy(link.pid(src))
        with contextlib.suppress(NoSuchProcess):
            proc = self._local(link, dest)
            _discard(proc, "watchers", proxy)
            _discard(proxy, "watching", proc)

    def _on_exit(self, link: Link, m: list[Any]) -> None:
        _, about, to, result, error = m
        pid = link.pid(about)
        proxy = link.proxy(pid)
        try:
            watcher = self._local(link, to)
        except NoSuchProcess:
            return
        if proxy.watchers is not None and watcher in proxy.watchers:
            proxy.watchers.discard(watcher)
            _discard(watcher, "watching", proxy)
            now = trio.current_time()
            watcher.post(ExitEvent(pid, now, wire.decode_value(result), wire.decode_error(error)))

    def _on_down(self, link: Link, m: list[Any]) -> None:
        _, about, to, error = m
        pid = link.pid(about)
        proxy = link.proxy(pid)
        try:
            proc = self._local(link, to)
        except NoSuchProcess:
            return
        if proxy.links is None or proc not in proxy.links:
            return
        proxy.links.discard(proc)
        _discard(proc, "links", proxy)
        reason = wire.decode_error(error)
        if reason is not None:
            _linked_failed(proc, pid, reason)

    def _on_terminate(self, link: Link, m: list[Any]) -> None:
        _, sender, dest = m
        try:
            self._local(link, dest).kill(Terminated("terminated"))
        except NoSuchProcess as exc:
            self._bounce(link, sender, dest, None, 0, exc)

    def _on_cancel(self, link: Link, m: list[Any]) -> None:
        _, sender, dest, seconds = m
        try:
            proc = self._local(link, dest)
        except NoSuchProcess as exc:
            self._bounce(link, sender, dest, None, 0, exc)
            return
        now = trio.current_time()
        at = now + float(seconds)
        proc.post(CancelEvent(None if sender is None else link.pid(sender), now, at))
        scope = proc.cancel_scope()
        if at < scope.deadline:
            scope.deadline = at

    def _on_spawn(self, link: Link, m: list[Any]) -> None:
        _, caller, text, entry, args, linked, monitored = m
        pid = link.pid(text)
        node = self.node
        try:
            if pid.node != node.name or pid.host != "local":
                raise SpawnError(f"{pid} cannot run on node {node.name!r}")
            if not isinstance(args, list):
                raise SpawnError("spawn arguments are an array")
            new = node.spawn_process(
                entry,
                None,
                tuple(wire.decode_value(args)),
                None,
                link=False,
                monitor=False,
                key=pid.proc,
            )
        except (ActorError, ValueError) as exc:
            error = exc if isinstance(exc, SpawnError) else SpawnError(str(exc))
            if caller is None:
                log.warning(
                    "node %r could not spawn %s for %r: %s", node.name, text, link.peer, exc
                )
            elif linked or monitored:
                if linked:
                    answer = [wire.DOWN, text, caller, wire.encode_error(error)]
                    link.report((wire.DOWN, text, caller), answer)
                if monitored:
                    answer = [wire.EXIT, text, caller, None, wire.encode_error(error)]
                    link.report((wire.EXIT, text, caller), answer)
            else:
                self._bounce(link, caller, text, None, 0, error)
            return
        if new != pid:
            log.warning("node %r spawned %s for %s (asked: %s)", node.name, new, link.peer, pid)
        if caller is not None and (linked or monitored):
            proc = node.find(new)
            proxy = link.proxy(link.pid(caller))
            if linked:
                _add(proc, "links", proxy)
                _add(proxy, "links", proc)
            if monitored:
                _add(proc, "watchers", proxy)
                _add(proxy, "watching", proc)

    def _on_undelivered(self, link: Link, m: list[Any]) -> None:
        _, to, dest, topic, count, error = m
        reason = wire.decode_error(error) or ActorError("undelivered")
        try:
            about: Any = link.pid(dest) if isinstance(dest, str) and dest.startswith("{") else dest
        except ValueError:
            about = dest
        try:
            proc = self._local(link, to)
        except NoSuchProcess:
            log.warning("%s: %d message(s) to %s not delivered: %s", to, count, about, reason)
            return
        proc.post(UndeliveredEvent(about, trio.current_time(), topic, int(count), reason))

    def _on_register(self, link: Link, m: list[Any]) -> None:
        _, name, text = m
        self._add_name(link.peer, str(name), link.pid(text))

    def _on_unregister(self, link: Link, m: list[Any]) -> None:
        _, name = m
        holders = self.names.get(name)
        if holders is not None:
            holders.pop(link.peer, None)
            if not holders:
                del self.names[name]

    def unsendable(self, link: Link, message: list[Any], error: BaseException) -> None:
        """``message`` was not sent (the codec cannot carry it, or the link ended
        before it was written): tell whoever sent it."""
        op = message[0]
        if op in (wire.SEND, wire.SEND_WAIT):
            dest, sender, topic = message[1:4]
            count = len(message) - 4
            if sender is not None:
                with contextlib.suppress(NoSuchProcess, ValueError):
                    proc = self._local(link, sender)
                    now = trio.current_time()
                    proc.post(UndeliveredEvent(link.pid(dest), now, topic, count, error))
                    return
            log.warning("%d message(s) to %s on topic %r not sent: %s", count, dest, topic, error)
        elif op == wire.EXIT:
            message[3] = None
            message[4] = wire.encode_error(SpawnError(f"its result cannot be sent: {error}"))
            message[4]["type"] = "UnsendableResult"
            link.push(message)
        else:
            log.warning("node message %r to %r not sent: %s", op, link.peer, error)

    # -- a peer goes away -----------------------------------------------------------------

    def link_down(self, link: Link) -> None:
        """``link`` ended: every local process linked to or monitoring one of the peer's
        gets ``noconnection``; the peer's names go."""
        if self.links.get(link.peer) is link:
            del self.links[link.peer]
        for name in [n for n, h in self.names.items() if link.peer in h]:
            holders = self.names[name]
            del holders[link.peer]
            if not holders:
                del self.names[name]
        now = trio.current_time()
        why = "is gone" if link.dropped is None else f"was dropped: {link.dropped}"
        error = NoConnection(f"noconnection: node {link.peer!r} {why}")
        unsent, link.out = link.out, deque()
        for message in unsent:  # queued, never written: their senders are told
            if message[0] in (wire.SEND, wire.SEND_WAIT) and message[2] is not None:
                self.unsendable(link, message, error)
        for proxy in link.proxies.values():
            watchers, links, watching = proxy.watchers, proxy.links, proxy.watching
            proxy.watchers = proxy.links = proxy.watching = None
            for proc in watching or ():
                _discard(proc, "watchers", proxy)
            for proc in watchers or ():
                _discard(proc, "watching", proxy)
                if proc.alive:
                    proc.post(ExitEvent(proxy.pid, now, None, error))
            for proc in links or ():
                _discard(proc, "links", proxy)
                if proc.alive:
                    _linked_failed(proc, proxy.pid, error)
        link.proxies.clear()


def _values(m: list[Any], start: int, count: int) -> tuple[Any, ...]:
    """``count`` values of the SEND ``m`` from ``start``, decoded."""
    values = m[start : start + count]
    decode = wire.decode_value
    for i, v in enumerate(values):
        # decode_value's common case inlined (a map holding no array or map, not a
        # pid: as it is), a call less per message.
        kind = type(v)
        if kind is dict:
            if len(v) == 1:
                values[i] = decode(v)
                continue
            for x in v.values():
                t = type(x)
                if t is dict or t is list:
                    values[i] = decode(v)
                    break
        elif kind is list:
            values[i] = decode(v)
    return tuple(values)


def _linked_failed(proc: Proc, pid: Pid, error: BaseException) -> None:
    if proc.trap_links:
        proc.post(LinkDownEvent(pid, trio.current_time(), error))
    else:
        proc.kill(LinkedFailure(pid, error))


def _add(owner: Any, attr: str, item: Any) -> None:
    items = getattr(owner, attr)
    if items is None:
        items = set()
        setattr(owner, attr, items)
    items.add(item)


def _discard(owner: Any, attr: str, item: Any) -> None:
    items = getattr(owner, attr)
    if items:
        items.discard(item)


async def _refuse(pipe: Pipe, error: NodeError) -> None:
    with contextlib.suppress(Exception):
        await pipe.fail(error)
