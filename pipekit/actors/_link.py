"""One connection to a peer node: its outgoing queue and writer, its reader, and the
stand-ins (:class:`RemoteProc`) for the peer's processes that local ones link to,
monitor or send to."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..kernel import CodecError, ErrorKind, Pipe, ProtocolError
from ..kernel.scopes import open_plain_nursery
from . import _wire as wire
from ._errors import LinkFull, NoConnection, NodeError
from ._events import Event, ExitEvent, LinkDownEvent
from ._pid import Pid

if TYPE_CHECKING:
    from ._cluster import Cluster
    from ._proc import Proc

__all__ = ["DEFAULT_LINK_QUEUE", "Link", "RemoteProc"]

DEFAULT_LINK_QUEUE = 65536
"""Messages (SEND values, and other node messages) a link queues for its writer before
a ``send`` over it raises :class:`LinkFull` (``send_wait`` waits instead)."""
REPORTS = 4096
"""Reports the peer provoked (``undelivered``, answers to its ``link``, ``mon`` and
``spawn``) that a link holds unwritten, after merging: one more and the link is dropped
(the peer does not read what it asks for)."""
_PID_CACHE = 4096
_PLAIN = wire.PLAIN
_MERGE = 4 + 256
"""At most 256 values in one SEND."""
log = logging.getLogger("pipekit.actors")


def _unsendable(exc: BaseException) -> bool:
    """``exc`` says a message cannot be sent at all (not that the pipe broke)."""
    return isinstance(exc, CodecError) or (
        isinstance(exc, ProtocolError) and exc.kind == ErrorKind.OVERSIZE
    )


class RemoteProc:
    """A process of the peer node, as the local runtime sees it: local processes linked
    to it (``links``), monitoring it (``watchers``), monitored by it (``watching``).
    What the runtime does to it (deliver, post an EXIT or LINK_DOWN) becomes a node
    message on the link. ``trap_links`` is True: the peer decides what a LINK_DOWN does
    to its own process."""

    __slots__ = ("link", "links", "pid", "text", "watchers", "watching")

    remote = True
    trap_links = True
    alive = True
    threaded = False
    room_waiters = None

    def __init__(self, link: Link, pid: Pid) -> None:
        self.link = link
        self.pid = pid
        self.text = str(pid)
        self.links: set[Any] | None = None
        self.watchers: set[Any] | None = None
        self.watching: set[Any] | None = None

    def __repr__(self) -> str:
        return f"<RemoteProc {self.text} via {self.link.peer!r}>"

    def idle(self) -> bool:
        return not (self.links or self.watchers or self.watching)

    def deliver(self, sender: Pid | None, topic: str, payloads: tuple[Any, ...]) -> None:
        """Queue the messages on the link (all or none), or :class:`LinkFull`."""
        link = self.link
        n = len(payloads) or 1
        if link.queued + n > link.limit:
            link.full(self.text, n)
        link.put(wire.SEND, self.text, sender, topic, payloads or (None,))

    async def deliver_wait(self, sender: Pid | None, topic: str, payloads: tuple[Any, ...]) -> None:
        """Wait for room on the link, then queue the messages as SEND_WAIT: the peer
        waits for room in the mailbox before it reads on (backpressure end to end)."""
        link = self.link
        n = len(payloads) or 1
        if link.queued + n <= link.limit and not link.closed:  # room: no wait
            link.put(wire.SEND_WAIT, self.text, sender, topic, payloads or (None,))
            return
        while link.queued + n > link.limit and n <= link.limit and not link.closed:
            await link.wait_room()
        if link.closed:
            raise NoConnection(f"noconnection: the link to node {link.peer!r} is closed")
        if n > link.limit:
            link.full(self.text, n)
        link.put(wire.SEND_WAIT, self.text, sender, topic, payloads or (None,))

    def post(self, event: Event) -> None:
        """An EXIT (this stand-in monitors a local process) or a LINK_DOWN (it is linked
        to one) for the peer's process."""
        about = str(event.sender)
        if isinstance(event, ExitEvent):
            self.link.push(
                [
                    wire.EXIT,
                    about,
                    self.text,
                    wire.encode_value(event.result),
                    wire.encode_error(event.error),
                ]
            )
        elif isinstance(event, LinkDownEvent):
            self.link.push([wire.DOWN, about, self.text, wire.encode_error(event.error)])

    def unlinked(self, proc: Proc) -> None:
        """The local process ``proc`` linked to this one returned: the peer drops the link."""
        self.link.push([wire.DOWN, str(proc.pid), self.text, None])

    def kill(self, reason: BaseException) -> None:  # pragma: no cover - trap_links
        self.link.push([wire.TERMINATE, None, self.text])

    def wake_room(self) -> None:  # pragma: no cover - never waited on
        pass


class Link:
    """One pipe to the peer node ``peer``. ``out`` queues node messages; the writer
    hands everything queued to the pipe in one ``send_batch`` (the pipe coalesces them
    into as few frames as it can and waits while the peer has PAUSEd it), and a lone
    SEND while the writer is idle goes to the pipe at once (``send_nowait``); the
    reader hands each message the peer sends to the cluster (a framed pipe's reader
    does it while this one waits, see :meth:`_take`)."""

    def __init__(self, cluster: Cluster, pipe: Pipe | None, peer: str, limit: int) -> None:
        self.cluster = cluster
        self.pipe = pipe
        self.peer = peer
        self.limit = limit
        self.out: deque[list[Any]] = deque()
        """Node messages for the writer, which takes all of them at once (what
        :meth:`report` relies on to know a report is still queued)."""
        self.queued = 0
        """Messages (payloads) in ``out``: what ``limit`` bounds."""
        self.dropped: NodeError | None = None
        """Why this node dropped the link (:meth:`drop`), if it did."""
        self._reports: dict[tuple[Any, ...], tuple[int, list[Any]]] = {}
        """Reports queued in ``out``, by key: (position in ``out``, the message)."""
        self._scope: trio.CancelScope | None = None
        self.proxies: dict[Pid, RemoteProc] = {}
        self.closed = False
        self._wakeup = trio.Event()
        self._parked = False  # the writer waits for work
        # The next lone send may go to the pipe itself: set when the writer parks and
        # when this link reads (either way the sender has yielded since it last did).
        self._direct_ok = False
        self._direct: Callable[[Any], bool] | None = getattr(pipe, "send_nowait", None)
        self._room: list[Callable[[], None]] = []
        self._pids: dict[str, Pid] = {}

    def __repr__(self) -> str:
        return f"<Link to {self.peer!r}: {len(self.out)} queued>"

    # -- sending -----------------------------------------------------------------------

    def wake(self) -> None:
        self._wakeup.set()

    def attach(self, pipe: Pipe) -> None:
        """The pipe of a link made before its connection (the ``"process"`` host's)."""
        self.pipe = pipe
        self._direct = getattr(pipe, "send_nowait", None)

    def put(
        self, op: str, dest: str, sender: Pid | None, topic: str, payloads: tuple[Any, ...]
    ) -> None:
        """Queue ``payloads`` for ``dest`` as one SEND (or SEND_WAIT): appended to the
        last one queued if it has the same op, destination, sender and topic and the
        writer has not taken it yet (a stream of sends becomes a few node messages)."""
        src = None if sender is None else (sender._text or str(sender))
        out = self.out
        last = out[-1] if out else None
        if (
            last is not None
            and last[0] is op
            and last[1] is dest
            and last[2] == src
            and last[3] == topic
            and len(last) < _MERGE
        ):
            message = last
        else:
            message = [op, dest, src, topic]
            last = None
        for p in payloads:
            # encode_value's common cases inlined (a scalar, a map of scalars: as they
            # are), a call less per message.
            kind = type(p)
            if kind is dict and len(p) != 1:
                for v in p.values():
                    if type(v) not in _PLAIN:
                        p = wire.encode_value(p)
                        break
            elif kind not in _PLAIN:
                p = wire.encode_value(p)
            message.append(p)
        if last is not None:
            self.queued += len(payloads)
            return
        if self._direct_ok and self._parked and not out and self._direct is not None:
            # The writer has handed everything to the pipe and waits: this one goes to
            # the pipe now, written at once if its writer is idle (a task switch less
            # on the way out). Sends that follow before the sender yields queue (and
            # merge) for our writer; once this link reads or the writer parks again, the
            # next lone send goes direct too. The writer is not woken for it.
            self._direct_ok = False
            try:
                if self._direct(message):
                    return
            except (CodecError, ProtocolError) as exc:
                if not _unsendable(exc):
                    raise
                self.cluster.unsendable(self, message, exc)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        out.append(message)
        self.queued += len(payloads)
        self._wakeup.set()

    def push(self, message: list[Any]) -> None:
        """Queue a control message of this node's own (never refused: at most one per
        request of a local process, and per link or monitor when it ends)."""
        if not self.closed and self.dropped is None:
            self.out.append(message)
            self.queued += 1
            self._wakeup.set()

    def report(self, key: tuple[Any, ...], message: list[Any]) -> None:
        """Queue ``message``, a report the peer provoked (an ``undelivered``, an answer
        to its ``link``, ``mon`` or ``spawn``), unless one with the same ``key`` is
        still queued: then an ``undelivered`` adds its count to that one, and any
        other report is the same answer again (dropped as such). So a peer that sends
        without reading makes this link hold at most one report per distinct key; past
        :data:`REPORTS` of them, the link is dropped (:meth:`drop`)."""
        if self.closed or self.dropped is not None:
            return
        out = self.out
        reports = self._reports
        entry = reports.get(key)
        if entry is not None:
            at, queued = entry
            if at < len(out) and out[at] is queued:  # not taken by the writer yet
                if message[0] == wire.UNDELIVERED:
                    queued[4] += message[4]
                return
        elif len(reports) >= REPORTS:
            # Forget those the writer has taken; if as many are still queued, the peer
            # has not read them: it cannot have more.
            n = len(out)
            reports = self._reports = {
                k: e for k, e in reports.items() if e[0] < n and out[e[0]] is e[1]
            }
            if len(reports) >= REPORTS:
                counts = sum(e[1][4] for e in reports.values() if e[1][0] == wire.UNDELIVERED)
                self.drop(
                    f"node {self.peer!r} does not read: {len(reports)} reports to it are "
                    f"queued unwritten (for {counts} undelivered messages), the limit"
                )
                return
        reports[key] = (len(out), message)
        out.append(message)
        self.queued += 1
        self._wakeup.set()

    def drop(self, reason: str) -> None:
        """End the link from this side: logged at WARNING, the peer told with a
        pipekit/1 ERROR of kind ``NodeError`` (if it still reads), and every link and
        monitor across it gets ``noconnection`` naming ``reason``."""
        if self.closed or self.dropped is not None:
            return
        self.dropped = NodeError(reason)
        log.warning("the link to node %r is dropped: %s", self.peer, reason)
        fail = getattr(self.pipe, "fail_nowait", None)
        if fail is not None:
            fail("NodeError", reason)
        if self._scope is not None:
            self._scope.cancel()

    def full(self, dest: str, n: int) -> None:
        raise LinkFull(
            f"the link to node {self.peer!r} queues {len(self.out)} messages (its limit "
            f"is {self.limit}): {n} message(s) to {dest} not sent; send_wait waits for room"
        )

    async def wait_room(self) -> None:
        task = trio.lowlevel.current_task()

        def wake() -> None:
            trio.lowlevel.reschedule(task)

        self._room.append(wake)

        def abort(_: Any) -> trio.lowlevel.Abort:
            if wake in self._room:
                self._room.remove(wake)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _writer(self) -> None:
        out = self.out
        pipe = self.pipe
        assert pipe is not None
        while True:
            if not out:
                if self._wakeup.is_set():
                    self._wakeup = trio.Event()
                self._parked = self._direct_ok = True
                try:
                    await self._wakeup.wait()
                finally:
                    self._parked = False
                continue
            batch = list(out)
            out.clear()
            self.queued = 0
            if self._room:
                room, self._room = self._room, []
                for wake in room:
                    wake()
            try:
                await pipe.send_batch(batch)
            except BaseException as exc:
                if not _unsendable(exc):
                    out.extendleft(reversed(batch))  # not sent: the link's end reports them
                    raise

                await self._send_each(batch)

    async def _send_each(self, batch: list[list[Any]]) -> None:
        """Send ``batch`` message by message (the codec could not carry all of it):
        what it cannot carry is reported to its sender (a merged SEND value by value)."""
        pipe = self.pipe
        assert pipe is not None
        for at, message in enumerate(batch):
            try:
                await pipe.send(message)
            except BaseException as exc:
                if not _unsendable(exc):
                    self.out.extendleft(reversed(batch[at:]))
                    raise
                if message[0] not in (wire.SEND, wire.SEND_WAIT) or len(message) < 6:
                    self.cluster.unsendable(self, message, exc)
                    continue
                for value in message[4:]:  # each value of a merged SEND alone
                    single = [*message[:4], value]
                    try:
                        await pipe.send(single)
                    except (CodecError, ProtocolError) as exc1:
                        if not _unsendable(exc1):
                            raise
                        self.cluster.unsendable(self, single, exc1)

    # -- receiving ---------------------------------------------------------------------

    def pid(self, text: Any) -> Pid:
        """The Pid ``text`` names (parsed once, then cached)."""
        pid = self._pids.get(text)
        if pid is None:
            pid = Pid.parse(text)
            if len(self._pids) >= _PID_CACHE:
                self._pids.clear()
            self._pids[text] = pid
        return pid

    def proxy(self, pid: Pid) -> RemoteProc:
        """The stand-in for the peer's process ``pid`` (made on first use)."""
        proxy = self.proxies.get(pid)
        if proxy is None:
            if len(self.proxies) >= _PID_CACHE:
                self.proxies = {k: v for k, v in self.proxies.items() if not v.idle()}
            proxy = self.proxies[pid] = RemoteProc(self, pid)
        return proxy

    def _take(self, messages: list[Any]) -> int:
        """What the pipe hands over while the reader waits (``FramedPipe.receive_with``,
        in the pipe's own reader task: a task switch less per batch): each message acted
        on at once, up to one that has to wait, left for the reader."""
        self._direct_ok = True
        handle_now = self.cluster.handle_now
        for at, message in enumerate(messages):
            if not handle_now(self, message):
                return at
        return len(messages)

    async def _reader(self) -> None:
        pipe = self.pipe
        assert pipe is not None
        handle = self.cluster.handle
        receive_with = getattr(pipe, "receive_with", None)
        take = self._take
        while True:
            try:
                if receive_with is not None:
                    batch = await receive_with(take)
                else:
                    batch = await pipe.receive_batch()
            except (trio.EndOfChannel, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self._direct_ok = True
            for message in batch:
                waiting = handle(self, message)
                if waiting is not None:
                    await waiting

    async def run(self) -> None:
        """Write and read until the peer goes (or this node closes); then the cluster
        turns every link and monitor across it into ``noconnection``."""
        try:
            async with open_plain_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self.dropped is not None:  # before it ran
                    nursery.cancel_scope.cancel()

                async def read_then_stop() -> None:
                    await self._reader()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(self._writer)
                nursery.start_soon(read_then_stop)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("link to node %r broke: %s", self.peer, exc)
        finally:
            self.closed = True
            room, self._room = self._room, []
            for wake in room:
                wake()
            self.cluster.link_down(self)
