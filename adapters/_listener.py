"""The listener every socket adapter serves its peers with: connection slots, the TLS
and pipekit/1 handshakes, refusals, handing pipes out, and the listen/serve lifecycle.

A :class:`Listener` accepts peers on one or more trio listeners; each peer is handshaken
(TLS first, if configured, then the pipekit/1 HELLO with its token) inside its own task,
and only then handed out, as a :class:`~pipekit.kernel.FramedPipe`, to a handler or to
:meth:`Listener.accept`. A peer that fails any of that is refused with a reason (an ERROR
frame where the protocol allows one), recorded in :attr:`Listener.refusals`, and closed;
the listener keeps serving everyone else.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from ..kernel.errors import PipekitError, RemoteError
from ..kernel.framed import FramedPipe, Transport, framed_pipe
from ..kernel.options import PipeOptions, PipeSettings
from ..kernel.scopes import open_plain_nursery
from ._refusal import Refusal, RefusalKind, describe_peer, refusal_kind, refuse

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PEERS",
    "Handler",
    "Listener",
    "Slot",
    "listener_settings",
    "open_tcp_listeners",
    "run_listener",
    "serve_forever",
]

log = logging.getLogger("pipekit.adapters")

DEFAULT_MAX_PEERS = 256
"""Peers a listener serves at once; more are refused with kind ``busy``."""
DEFAULT_IDLE_TIMEOUT = 60.0
"""A listener's ``idle_timeout`` unless given (``idle_timeout=None`` turns it off): a
peer from which nothing arrives for this long is dropped. It is PINGed after half of it,
so a live peer with nothing to say answers and stays."""
_KEPT_REFUSALS = 100

Handler = Callable[[FramedPipe], Awaitable[Any]]


def listener_settings(options: PipeOptions) -> PipeSettings:
    """The checked settings of a listener's pipes: ``options`` with the listener's own
    default, an ``idle_timeout`` of :data:`DEFAULT_IDLE_TIMEOUT` unless one is given
    (``None`` turns it off), so that peers which go silent cannot hold every slot."""
    settings = PipeSettings(**options)
    if "idle_timeout" not in options:
        settings = dataclasses.replace(settings, idle_timeout=DEFAULT_IDLE_TIMEOUT)
    return settings


async def open_tcp_listeners(
    host: str | None, port: int, backlog: int | None = None
) -> list[trio.SocketListener]:
    """:func:`trio.open_tcp_listeners`, whose :class:`OSError` (an address in use, a
    port that needs privileges, an unknown host) names the address it could not take."""
    try:
        return await trio.open_tcp_listeners(port, host=host, backlog=backlog)
    except OSError as exc:
        where = f"[{host}]:{port}" if host and ":" in host else f"{host or '*'}:{port}"
        reason = f"cannot listen on {where}: {exc.strerror or exc}"
        raise (OSError(reason) if exc.errno is None else OSError(exc.errno, reason)) from exc


class Slot(enum.Enum):
    """What an accepted connection holds while it is open (see :meth:`Listener.take_slot`)."""

    PEER = "peer"
    """One of the ``max_peers`` slots: the peer is handshaken and served."""
    REFUSING = "refusing"
    """All peer slots are taken: the peer is told ``busy``. At most ``max_peers``
    connections are being turned away like this at once."""


class Listener:
    """Peers accepted on a listening socket, as handshaken pipes.

    Use it from :func:`listen` of an adapter: ``async for pipe in listener`` or ``await
    listener.accept()`` hands out each accepted peer's pipe. A pipe handed out stays open
    until it is closed with ``aclose()`` or the listener's block exits. ``address`` is
    what the listener is bound to; ``refusals`` keeps the last 100 peers turned away.

    Every connection counts from the moment it is accepted, before any handshake (TLS,
    the WebSocket upgrade, HELLO): ``peers`` of them (at most ``max_peers``) are being
    served, ``refusing`` more (at most ``max_peers`` too) are being told ``busy``, and
    any connection beyond both is closed at once without a word, so that peers which
    never finish a handshake cannot pile up.
    """

    def __init__(
        self,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        address: Any,
        label: str,
        settings: PipeSettings,
        token: str | None,
        ssl_context: ssl.SSLContext | None,
        max_peers: int,
        handler: Handler | None,
    ) -> None:
        if max_peers < 1:
            raise ValueError("max_peers must be at least 1")
        self.address = address
        self.url: str | None = None
        self.label = label
        self._listeners = list(listeners)
        self._settings = settings
        self._token = token
        self._ssl_context = ssl_context
        self._max_peers = max_peers
        self._handler = handler
        self.refusals: deque[Refusal] = deque(maxlen=_KEPT_REFUSALS)
        self.refused = 0
        self.accepted = 0
        self.peers = 0
        self.refusing = 0
        self._refused_event = trio.Event()
        self._send, self._receive = trio.open_memory_channel[FramedPipe](0)

    # -- the public side --------------------------------------------------------------

    async def accept(self) -> FramedPipe:
        """The next peer's pipe, once its handshake succeeded."""
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError(f"{self.label}: listener is closed") from None

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> FramedPipe:
        try:
            return await self.accept()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None

    async def wait_refused(self, count: int = 1) -> Refusal:
        """Wait until at least ``count`` peers were refused in all; return the latest."""
        while self.refused < count:
            if self._refused_event.is_set():
                self._refused_event = trio.Event()
            await self._refused_event.wait()
        return self.refusals[-1]

    def __repr__(self) -> str:
        return f"<Listener {self.label} peers={self.peers} refused={self.refused}>"

    # -- the adapters' side -----------------------------------------------------------

    def record_refusal(self, peer: str, kind: str, reason: str) -> None:
        """Count and keep a refusal of ``peer`` (the adapter has turned it away)."""
        self.refused += 1
        self.refusals.append(Refusal(peer, kind, reason))
        self._refused_event.set()
        log.info("%s refused %s: [%s] %s", self.label, peer, kind, reason)

    def take_slot(self) -> Slot | None:
        """Count a newly accepted connection: a peer slot, else a place among the
        connections being refused as busy, else None (close it at once, after
        :meth:`drop`). Give it back with :meth:`release_slot` once the connection is
        closed."""
        if self.peers < self._max_peers:
            self.peers += 1
            return Slot.PEER
        if self.refusing < self._max_peers:
            self.refusing += 1
            return Slot.REFUSING
        return None

    def release_slot(self, slot: Slot) -> None:
        if slot is Slot.PEER:
            self.peers -= 1
        else:
            self.refusing -= 1

    def drop(self, peer: str) -> None:
        """Record a connection closed at once because every slot is taken."""
        self.record_refusal(
            peer,
            RefusalKind.BUSY,
            f"server busy: {self._max_peers} peers served and {self._max_peers} more being "
            "refused; closed without a reply",
        )

    async def admit(self, stream: trio.abc.Stream) -> Slot | None:
        """:meth:`take_slot` for a newly accepted ``stream``; if there is none, record
        the peer as dropped, close ``stream`` at once and return None."""
        slot = self.take_slot()
        if slot is None:
            self.drop(describe_peer(stream))
            await trio.aclose_forcefully(stream)
        return slot

    async def serve_transport(
        self, transport: Transport, peer: str, slot: Slot, started: float | None = None
    ) -> None:
        """Serve a peer that holds ``slot`` (from :meth:`take_slot`) on ``transport``:
        handshake and hand its pipe out, or refuse it as busy. The handshake timeout
        counts from ``started`` (the accept, a :func:`trio.current_time`), else from now.
        Used directly by the websocket adapter, whose server accepts the connections."""
        if slot is Slot.REFUSING:
            self.record_refusal(
                peer, RefusalKind.BUSY, f"server busy: {self._max_peers} peers already served"
            )
            await refuse(transport, RefusalKind.BUSY, "server busy, try again later")
            return
        await self._run_peer(transport, peer, started)

    async def serve_sockets(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept and serve peers on the trio listeners this listener was made with,
        until cancelled (each peer in its own task)."""
        async with trio.open_nursery() as handlers:
            await handlers.start(trio.serve_listeners, self._serve_peer, self._listeners)
            task_status.started()

    def close(self) -> None:
        """Stop handing pipes out: :meth:`accept` raises
        :class:`trio.ClosedResourceError` (iteration ends), and a peer handshaken but not
        taken yet is closed. Accepting connections stops with :func:`run_listener`."""
        self._send.close()
        self._receive.close()

    # -- serving one peer -------------------------------------------------------------

    async def _serve_peer(self, stream: trio.abc.Stream) -> None:
        slot = await self.admit(stream)
        if slot is None:
            return
        peer = describe_peer(stream)
        started = trio.current_time()  # one handshake timeout covers TLS and HELLO
        try:
            # TLS first, even for a peer refused as busy: a refusal sent in clear could
            # not be read by a TLS client (it would see a TLS error instead).
            transport = await self._secure(stream, peer, started)
            if transport is not None:
                await self.serve_transport(transport, peer, slot, started)
        finally:
            self.release_slot(slot)

    async def _secure(
        self, stream: trio.abc.Stream, peer: str, started: float
    ) -> trio.abc.Stream | None:
        """TLS server handshake if configured, within the handshake timeout counted from
        ``started``; None (and the peer refused) if it failed."""
        options = self._settings
        transport = stream
        if self._ssl_context is not None:
            tls = trio.SSLStream(stream, self._ssl_context, server_side=True)
            timeout = options.handshake_timeout
            try:
                with trio.fail_at(math.inf if timeout is None else started + timeout):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                cause = exc.__cause__ or exc
                kind = (
                    RefusalKind.HANDSHAKE_TIMEOUT
                    if isinstance(exc, trio.TooSlowError)
                    else RefusalKind.TLS
                )
                self.record_refusal(peer, kind, f"TLS handshake failed: {cause}")
                await trio.aclose_forcefully(stream)
                return None
            transport = tls
        return transport

    async def _run_peer(self, transport: Transport, peer: str, started: float | None) -> None:
        """Run the pipekit/1 handshake on ``transport`` and serve the peer (hand its pipe
        to the handler or to :meth:`accept`), refusing it if the handshake fails."""
        options = self._settings
        if options.name is None:
            options = dataclasses.replace(options, name=f"{self.label}<-{peer}")
        handed_out = False
        try:
            async with framed_pipe(
                transport,
                initiator=False,
                expected_token=self._token,
                handshake_started=started,
                settings=options,
            ) as pipe:
                self.accepted += 1
                handed_out = True
                if self._handler is not None:
                    await self._handler(pipe)
                else:
                    try:
                        await self._send.send(pipe)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return  # the listener closed before anyone accepted this peer
                    await pipe.wait_closed()
        except (PipekitError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if not handed_out:
                self.record_refusal(peer, refusal_kind(exc), str(exc))
            elif not isinstance(exc, RemoteError) and not _shutting_down():
                # (A listener shutting down breaks its peers' connections itself.)
                log.warning("%s: peer %s failed: %s", self.label, peer, exc)
        except Exception:
            # A handler's own failure: the peer got it as an ERROR frame; the listener
            # goes on serving the others.
            log.exception("%s: handler failed for peer %s", self.label, peer)


def _shutting_down() -> bool:
    """Whether the calling task is being cancelled (the listener is shutting down)."""
    return trio.current_effective_deadline() == -math.inf


@asynccontextmanager
async def run_listener(
    listener: Listener, start: Callable[[trio.Nursery], Awaitable[object]] | None = None
) -> AsyncIterator[Listener]:
    """Serve ``listener`` for the duration of the block; on exit stop accepting and close
    every peer's pipe. An exception of the block comes out as itself, not in a group.

    ``await start(nursery)`` starts accepting connections in ``nursery`` (by default:
    :meth:`Listener.serve_sockets`); the nursery is cancelled when the block exits."""
    async with open_plain_nursery() as nursery:
        if start is None:
            await nursery.start(listener.serve_sockets)
        else:
            await start(nursery)
        try:
            yield listener
        finally:
            listener.close()
            nursery.cancel_scope.cancel()


async def serve_forever(
    listening: AbstractAsyncContextManager[Listener], task_status: trio.TaskStatus[Listener]
) -> None:
    """Enter ``listening`` (an adapter's ``listen(...)``), report its listener to
    ``nursery.start`` and serve until cancelled: every adapter's ``serve``."""
    async with listening as listener:
        task_status.started(listener)
        await trio.sleep_forever()
