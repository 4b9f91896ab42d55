"""What the socket adapters share: pipe options, listeners, refusals, reconnecting.

A :class:`Listener` accepts peers on one or more trio listeners; each peer is handshaken
(TLS first, if configured, then the pipekit/1 HELLO with its token) inside its own task,
and only then handed out, as a :class:`~pipekit.kernel.FramedPipe`, to a handler or to
:meth:`Listener.accept`. A peer that fails any of that is refused with a reason (an ERROR
frame where the protocol allows one), recorded in :attr:`Listener.refusals`, and closed;
the listener keeps serving everyone else.
"""

from __future__ import annotations

import enum
import logging
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypedDict

import trio

from ..kernel.codecs import CODEC_NAMES
from ..kernel.errors import PipekitError, ProtocolError, RemoteError
from ..kernel.framed import (
    DEFAULT_SEND_BUFFER,
    FramedPipe,
    MessageTransport,
    Transport,
    framed_pipe,
)
from ..kernel.protocol import (
    DEFAULT_HIGH_WATER,
    DEFAULT_HIGH_WATER_BYTES,
    DEFAULT_MAX_FRAME,
    DEFAULT_PAUSE_SLACK,
    Connection,
)
from ..kernel.scopes import open_plain_nursery

__all__ = [
    "DEFAULT_MAX_PEERS",
    "Handler",
    "Listener",
    "PipeOptions",
    "Reconnect",
    "Refusal",
    "Slot",
    "connect_with_retry",
]

log = logging.getLogger("pipekit.adapters")

DEFAULT_MAX_PEERS = 256
"""Peers a listener serves at once; more are refused with kind ``busy``."""
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
LINGER_SECONDS = 1.0
"""How long a refused peer's input is drained after our ERROR, so that closing does not
reset the connection before the peer has read the reason."""
_KEPT_REFUSALS = 100

Handler = Callable[[FramedPipe], Awaitable[Any]]


class PipeOptions(TypedDict, total=False):
    """pipekit/1 options every socket adapter passes to
    :func:`~pipekit.kernel.framed_pipe` (see there)."""

    name: str | None
    codecs: Sequence[str]
    max_frame: int
    high_water: int
    low_water: int | None
    high_water_bytes: int
    low_water_bytes: int | None
    pause_slack: int
    send_buffer: int
    handshake_timeout: float | None
    idle_timeout: float | None


def pipe_options(
    *,
    name: str | None = None,
    codecs: Sequence[str] = CODEC_NAMES,
    max_frame: int = DEFAULT_MAX_FRAME,
    high_water: int = DEFAULT_HIGH_WATER,
    low_water: int | None = None,
    high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
    low_water_bytes: int | None = None,
    pause_slack: int = DEFAULT_PAUSE_SLACK,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
) -> PipeOptions:
    """Validated :class:`PipeOptions` with the defaults filled in."""
    if handshake_timeout is not None and handshake_timeout <= 0:
        raise ValueError("handshake_timeout must be positive or None")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive or None")
    return PipeOptions(
        name=name,
        codecs=tuple(codecs),
        max_frame=max_frame,
        high_water=high_water,
        low_water=low_water,
        high_water_bytes=high_water_bytes,
        low_water_bytes=low_water_bytes,
        pause_slack=pause_slack,
        send_buffer=send_buffer,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
    )


class Slot(enum.Enum):
    """What an accepted connection holds while it is open (see :meth:`Listener.take_slot`)."""

    PEER = "peer"
    """One of the ``max_peers`` slots: the peer is handshaken and served."""
    REFUSING = "refusing"
    """All peer slots are taken: the peer is told ``busy``. At most ``max_peers``
    connections are being turned away like this at once."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A peer a listener turned away: who, why (``kind`` as in the ERROR frame, or
    ``tls``/``closed``/``busy``) and the readable reason."""

    peer: str
    kind: str
    reason: str


def describe_peer(stream: trio.abc.Stream) -> str:
    """The remote address of a socket stream, for refusals and logs."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        inner = getattr(stream, "transport_stream", None)
        return describe_peer(inner) if inner is not None else "peer"
    try:
        name = sock.getpeername()
    except OSError:
        return "peer"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}" if ":" not in str(name[0]) else f"[{name[0]}]:{name[1]}"
    return str(name) or "unix peer"


async def _linger_close(stream: trio.abc.Stream) -> None:
    """Close ``stream`` gracefully: half-close, drain the peer's input for a moment (so
    closing does not reset the connection under our ERROR frame), then close."""
    with trio.CancelScope(shield=True), trio.move_on_after(LINGER_SECONDS):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            for _ in range(1024):
                if not await stream.receive_some(65536):
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


async def refuse(transport: Transport, kind: str, reason: str) -> None:
    """Answer a peer's HELLO with ERROR ``{kind, reason}`` (without reading it) and close."""
    conn = Connection(initiator=False)
    conn.reject(reason, kind)
    with trio.move_on_after(LINGER_SECONDS):
        try:
            if isinstance(transport, MessageTransport):
                for frame in conn.frames_to_send():
                    await transport.send_message(frame)
            else:
                await transport.send_all(conn.data_to_send())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    if isinstance(transport, MessageTransport):
        await trio.aclose_forcefully(transport)
    else:
        await _linger_close(transport)


def _refusal_kind(exc: BaseException) -> str:
    if isinstance(exc, PipekitError):
        return getattr(exc, "kind", None) or type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        return "tls"
    return "closed"


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
        options: PipeOptions,
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
        self._options = options
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

    # -- serving ----------------------------------------------------------------------

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as handlers:
            await handlers.start(trio.serve_listeners, self._serve_peer, self._listeners)
            task_status.started()

    def _refuse(self, peer: str, kind: str, reason: str) -> None:
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
        self._refuse(
            peer,
            "busy",
            f"server busy: {self._max_peers} peers served and {self._max_peers} more being "
            "refused; closed without a reply",
        )

    async def _serve_peer(self, stream: trio.abc.Stream) -> None:
        peer = describe_peer(stream)
        slot = self.take_slot()
        if slot is None:
            self.drop(peer)
            await trio.aclose_forcefully(stream)
            return
        started = trio.current_time()  # one handshake timeout covers TLS and HELLO
        try:
            # TLS first, even for a peer refused as busy: a refusal sent in clear could
            # not be read by a TLS client (it would see a TLS error instead).
            transport = await self._secure(stream, peer, started)
            if transport is not None:
                await self.serve_transport(transport, peer, slot, started)
        finally:
            self.release_slot(slot)

    async def serve_transport(
        self, transport: Transport, peer: str, slot: Slot, started: float | None = None
    ) -> None:
        """Serve a peer that holds ``slot`` (from :meth:`take_slot`) on ``transport``:
        handshake and hand its pipe out, or refuse it as busy. The handshake timeout
        counts from ``started`` (the accept, a :func:`trio.current_time`), else from now.
        Used directly by the websocket adapter, whose server accepts the connections."""
        if slot is Slot.REFUSING:
            self._refuse(peer, "busy", f"server busy: {self._max_peers} peers already served")
            await refuse(transport, "busy", "server busy, try again later")
            return
        await self._run_peer(transport, peer, started)

    async def _secure(
        self, stream: trio.abc.Stream, peer: str, started: float
    ) -> trio.abc.Stream | None:
        """TLS server handshake if configured, within the handshake timeout counted from
        ``started``; None (and the peer refused) if it failed."""
        options = self._options
        transport = stream
        if self._ssl_context is not None:
            tls = trio.SSLStream(stream, self._ssl_context, server_side=True)
            timeout = options.get("handshake_timeout")
            try:
                with trio.fail_at(math.inf if timeout is None else started + timeout):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                cause = exc.__cause__ or exc
                kind = "handshake_timeout" if isinstance(exc, trio.TooSlowError) else "tls"
                self._refuse(peer, kind, f"TLS handshake failed: {cause}")
                await trio.aclose_forcefully(stream)
                return None
            transport = tls
        return transport

    async def _run_peer(self, transport: Transport, peer: str, started: float | None) -> None:
        """Run the pipekit/1 handshake on ``transport`` and serve the peer (hand its pipe
        to the handler or to :meth:`accept`), refusing it if the handshake fails."""
        options = self._options
        options = options.copy()
        options["name"] = options.get("name") or f"{self.label}<-{peer}"
        handed_out = False
        try:
            async with framed_pipe(
                transport,
                initiator=False,
                expected_token=self._token,
                handshake_started=started,
                **options,
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
                kind = _refusal_kind(exc)
                self._refuse(peer, kind, str(exc))
            elif not isinstance(exc, RemoteError):
                log.warning("%s: peer %s failed: %s", self.label, peer, exc)
        except Exception:
            # A handler's own failure: the peer got it as an ERROR frame; the listener
            # goes on serving the others.
            log.exception("%s: handler failed for peer %s", self.label, peer)


@asynccontextmanager
async def run_listener(listener: Listener) -> AsyncIterator[Listener]:
    """Serve ``listener`` for the duration of the block; on exit stop accepting and close
    every peer's pipe. An exception of the block comes out as itself, not in a group."""
    async with open_plain_nursery() as nursery:
        await nursery.start(listener._serve)
        try:
            yield listener
        finally:
            listener._send.close()
            listener._receive.close()
            nursery.cancel_scope.cancel()


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Retry policy for a client's connection attempts (off unless given).

    Attempt ``n`` (from 0) waits ``min(initial * factor**n, max_delay)`` seconds before the
    next one; after ``attempts`` failures the last error is raised. Refused or
    unreachable addresses, broken and timed-out handshakes and a listener refusing
    because it is ``busy`` are retried; any other refusal by the peer (a wrong token,
    say) is not, since trying again cannot fix it."""

    attempts: int = 5
    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.initial < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError("need initial >= 0, factor >= 1 and max_delay >= 0")

    def delay(self, attempt: int) -> float:
        try:
            return float(min(self.initial * self.factor**attempt, self.max_delay))
        except OverflowError:  # factor**attempt is beyond any float: long past max_delay
            return float(self.max_delay)


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, RemoteError):
        return exc.kind == "busy"
    if isinstance(exc, ProtocolError):
        return exc.kind in ("handshake", "handshake_timeout")
    if isinstance(exc.__cause__, ssl.SSLCertVerificationError):
        return False  # the same certificate will fail the same way
    return isinstance(exc, OSError | trio.BrokenResourceError | trio.ClosedResourceError)


@asynccontextmanager
async def connect_with_retry(
    open_pipe: Callable[[], AbstractAsyncContextManager[FramedPipe]],
    reconnect: Reconnect | bool | None,
    label: str,
) -> AsyncIterator[FramedPipe]:
    """Enter ``open_pipe()``, retrying a failed connection under ``reconnect``. Only the
    connection is retried: once the pipe is yielded, a failure is the body's to see."""
    policy = Reconnect() if reconnect is True else (reconnect or None)
    attempts = policy.attempts if policy is not None else 1
    async with AsyncExitStack() as stack:
        for attempt in range(attempts):
            try:
                pipe = await stack.enter_async_context(open_pipe())
                break
            except Exception as exc:
                if policy is None or attempt == attempts - 1 or not _retryable(exc):
                    raise
                wait = policy.delay(attempt)
                log.info(
                    "%s: connection attempt %d failed (%s); retrying in %.2f s",
                    label,
                    attempt + 1,
                    exc,
                    wait,
                )
                await trio.sleep(wait)
        yield pipe
