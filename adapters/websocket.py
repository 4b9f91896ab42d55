"""The websocket adapter: pipekit/1 over WebSocket (``websockets.trio``), and the
browser client.

Each pipekit/1 frame travels as one *binary* WebSocket message, both ways; a text
message, or a message that is not exactly one frame, is a protocol violation. The
WebSocket layer adds only what it must: compression is off unless asked for, the
largest message is ``max_frame`` plus the 8-byte header, and WebSocket keepalive pings
are off (pipekit's ``idle_timeout`` does that job for every transport alike).

:func:`listen` also answers plain HTTP GETs: ``/pipekit.js`` is the browser client (an
ES module, no build step; see ``docs/guide.md``), and ``http=`` adds more resources (the
demo page of ``pipekit serve``). ``origins=`` is the allow-list for the ``Origin``
header of WebSocket upgrades (browsers always send it; ``None`` in the list admits
clients that send none); a disallowed origin gets HTTP 403 with the reason.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Any, Unpack

import trio
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidMessage
from websockets.http11 import Request, Response
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.trio.connection import Connection as WebSocket
from websockets.trio.server import Server, ServerConnection
from websockets.trio.server import serve as ws_serve

from ..kernel.errors import ProtocolError
from ..kernel.framed import FramedPipe, MessageTransport, framed_pipe
from ..kernel.protocol import HEADER_SIZE, FrameType, encode_frame
from ..kernel.scopes import open_plain_nursery
from ._network import (
    DEFAULT_MAX_PEERS,
    Handler,
    Listener,
    PipeOptions,
    Reconnect,
    Refusal,
    Slot,
    connect_with_retry,
    describe_peer,
    pipe_options,
)

__all__ = [
    "BROWSER_CLIENT_PATH",
    "SAME_ORIGIN",
    "HttpResource",
    "Listener",
    "Reconnect",
    "Refusal",
    "WebSocketTransport",
    "browser_client",
    "connect",
    "listen",
    "serve",
]

BROWSER_CLIENT_PATH = "/pipekit.js"
SAME_ORIGIN = "same-origin"
"""In ``origins=``: admit the pages this listener serves itself (its own scheme, host and
port; for a loopback listener also ``localhost``), as a browser names their origin."""
DEFAULT_PATH = "/ws"
_CLOSE_TIMEOUT = 1.0


def browser_client() -> bytes:
    """The browser client's source (``pipekit.js``, an ES module)."""
    return resources.files(__package__).joinpath("web", "pipekit.js").read_bytes()


@dataclass(frozen=True, slots=True)
class HttpResource:
    """A static HTTP response body served by :func:`listen` for GET requests."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"


class WebSocketTransport(MessageTransport):
    """A ``websockets.trio`` connection as a :class:`~pipekit.kernel.MessageTransport`."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._peer_refused = False

    async def send_message(self, frame: bytes) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed as exc:
            raise trio.BrokenResourceError(f"WebSocket closed: {_describe(exc)}") from exc

    async def receive_message(self) -> bytes | None:
        try:
            message = await self.ws.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009 and not exc.rcvd_then_sent:
                # We closed: the peer's message was larger than our max_frame.
                raise ProtocolError(
                    f"WebSocket message too big: {exc.sent.reason}", kind="oversize"
                ) from exc
            if exc.rcvd is not None and exc.rcvd.code == 1009 and exc.rcvd_then_sent is not False:
                # The peer closed: our message was larger than its max_frame. Report it as
                # the ERROR a byte-stream peer would have sent (once; then the end).
                if self._peer_refused:
                    return None
                self._peer_refused = True
                return _error_frame(
                    "oversize", f"the peer refused a WebSocket message: {exc.rcvd.reason}"
                )
            raise trio.BrokenResourceError(f"WebSocket closed: {_describe(exc)}") from exc
        if isinstance(message, str):
            raise ProtocolError(
                "text WebSocket message: pipekit/1 frames travel as binary messages",
                kind="malformed",
            )
        return message

    async def aclose(self) -> None:
        """Close with the WebSocket closing handshake, even when cancelled: it is
        shielded but bounded (websockets aborts the TCP connection after
        ``close_timeout``), since tearing the socket down under websockets' own tasks
        makes it log internal errors."""
        with trio.CancelScope(shield=True):
            await self.ws.aclose()


def _error_frame(kind: str, message: str) -> bytes:
    payload = json.dumps({"kind": kind, "message": message}).encode("utf-8")
    return encode_frame(FrameType.ERROR, payload, json_flag=True)


def _describe(exc: ConnectionClosed) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "connection lost without a closing handshake"
    return f"code {close.code}" + (f" ({close.reason})" if close.reason else "")


def _peer_of(ws: WebSocket) -> str:
    try:
        address = ws.remote_address
    except Exception:
        return "peer"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, reason, headers, body)


class _Gate:
    """The HTTP side of :func:`listen`: static resources, the WebSocket path and the
    origin allow-list (refusals are recorded in the listener)."""

    def __init__(
        self,
        listener: Listener,
        path: str,
        origins: Sequence[str | None] | None,
        http: Mapping[str, HttpResource],
    ) -> None:
        self.listener = listener
        self.path = path
        self.origins = None if origins is None else list(origins)
        self.http = dict(http)

    def bind(self, scheme: str, host: str, port: int) -> None:
        """Replace :data:`SAME_ORIGIN` in the allow-list by the origins of the pages this
        listener serves itself, now that its port is known."""
        if self.origins is None or SAME_ORIGIN not in self.origins:
            return
        names = [f"[{host}]" if ":" in host else host]
        if host in ("127.0.0.1", "::1", "0.0.0.0", "::"):
            names = ["127.0.0.1", "localhost", "[::1]"]
        own = [f"{scheme}://{name}:{port}" for name in names]
        self.origins = [o for o in self.origins if o != SAME_ORIGIN] + own

    def __call__(self, ws: ServerConnection, request: Request) -> Response | None:
        # get_all: a repeated header must not make get() raise (HTTP 500).
        is_upgrade = "websocket" in ",".join(request.headers.get_all("Upgrade")).lower()
        route = request.path.split("?", 1)[0]
        if not is_upgrade:
            resource = self.http.get(route)
            if resource is None:
                return _response(404, "Not Found", b"not found\n", "text/plain; charset=utf-8")
            return _response(200, "OK", resource.body, resource.content_type)
        peer = _peer_of(ws)
        if route != self.path:
            reason = f"no WebSocket endpoint at {route} (use {self.path})"
            self.listener._refuse(peer, "not_found", reason)
            return ws.respond(404, reason + "\n")
        if self.origins is not None:
            origins = request.headers.get_all("Origin")
            origin = origins[0] if origins else None
            if len(origins) > 1 or origin not in self.origins:
                reason = (
                    f"more than one Origin header: {origins!r}"
                    if len(origins) > 1
                    else f"origin {origin!r} is not allowed"
                )
                self.listener._refuse(peer, "origin", reason)
                return ws.respond(403, reason + "\n")
        return None


class _SlotStream(trio.abc.Stream):
    """An accepted TCP connection holding a :class:`Slot` of the listener from the
    moment it is accepted (before TLS and the WebSocket upgrade) until it is closed.
    ``stream`` is the socket stream, or the :class:`trio.SSLStream` over it for wss."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        sock: trio.socket.SocketType,
        slot: Slot,
        release: Callable[[Slot], None],
    ) -> None:
        self.stream = stream
        self.socket = sock  # websockets reads addresses from it
        self.slot = slot
        self.accepted_at = trio.current_time()  # the handshake timeout counts from here
        self._release: Callable[[Slot], None] | None = release

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        # trio.serve_listeners closes every stream its handler got, so this always runs.
        release, self._release = self._release, None
        if release is not None:
            release(self.slot)
        await self.stream.aclose()


class _PlainSlotStream(_SlotStream, trio.abc.HalfCloseableStream):
    """A :class:`_SlotStream` without TLS: websockets half-closes it at the end."""

    stream: trio.SocketStream

    async def send_eof(self) -> None:
        await self.stream.send_eof()


class _SlotListener(trio.abc.Listener[trio.abc.Stream]):
    """The websockets server's listener: every connection takes a slot of ``listener``
    as it is accepted; one beyond every slot is closed at once. With ``ssl_context``
    the stream it returns is wrapped in TLS, whose handshake runs on first use (within
    the upgrade watcher, so that a failure is recorded as a refusal)."""

    def __init__(
        self, inner: trio.SocketListener, listener: Listener, ssl_context: ssl.SSLContext | None
    ) -> None:
        self.inner = inner
        self.socket = inner.socket  # websockets logs the address from it
        self.listener = listener
        self.ssl_context = ssl_context

    async def accept(self) -> trio.abc.Stream:
        while True:
            stream = await self.inner.accept()
            slot = self.listener.take_slot()
            if slot is None:
                self.listener.drop(describe_peer(stream))
                await trio.aclose_forcefully(stream)
                continue
            release = self.listener.release_slot
            if self.ssl_context is None:
                return _PlainSlotStream(stream, stream.socket, slot, release)
            tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
            return _SlotStream(tls, stream.socket, slot, release)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _slot_stream(ws: ServerConnection) -> _SlotStream:
    stream = ws.stream
    assert isinstance(stream, _SlotStream)
    return stream


def _upgrade_watcher(listener: Listener, timeout: float | None) -> type[ServerConnection]:
    """A ``ServerConnection`` that records, in ``listener``, the peers whose TLS
    handshake failed (kind ``tls``), whose TLS handshake or HTTP upgrade did not finish
    in time (``handshake_timeout``), that closed before sending the upgrade
    (``handshake``, as on the other transports) or that did not speak HTTP at all
    (``malformed``): websockets drops those before any handler runs."""

    class UpgradeWatcher(ServerConnection):
        # websockets only knows the addresses of a bare trio.SocketStream.
        @property
        def local_address(self) -> Any:
            return _slot_stream(self).socket.getsockname()

        @property
        def remote_address(self) -> Any:
            return _slot_stream(self).socket.getpeername()

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            peer = _peer_of(self)  # while the socket is still connected
            stage = "no WebSocket upgrade request"
            try:
                tls = _slot_stream(self).stream
                if isinstance(tls, trio.SSLStream):
                    stage = "TLS handshake not completed"
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        reason = f"TLS handshake failed: {exc.__cause__ or exc}"
                        listener._refuse(peer, "tls", reason)
                        raise
                    stage = "no WebSocket upgrade request"
                await super().handshake(*args, **kwargs)
            except trio.Cancelled as exc:
                if getattr(exc, "source", None) == "deadline":  # open_timeout
                    reason = stage + (
                        f" within {timeout:g} s" if timeout is not None else " in time"
                    )
                    listener._refuse(peer, "handshake_timeout", reason)
                raise
            failure = self.protocol.handshake_exc
            if self.request is None and failure is not None:
                if isinstance(failure.__cause__, EOFError):
                    reason = "connection closed before the WebSocket upgrade"
                    listener._refuse(peer, "handshake", reason)
                else:
                    listener._refuse(peer, "malformed", str(failure))

    return UpgradeWatcher


@asynccontextmanager
async def listen(
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str = DEFAULT_PATH,
    handler: Handler | None = None,
    token: str | None = None,
    origins: Sequence[str | None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool = False,
    max_peers: int = DEFAULT_MAX_PEERS,
    http: Mapping[str, HttpResource] | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[Listener]:
    """Serve WebSocket peers at ``ws://host:port{path}`` for the duration of the block
    (``handler`` and accepting as in :func:`pipekit.adapters.tcp.listen`). Also serves
    the browser client at ``/pipekit.js`` and the GET resources in ``http``."""
    opts = pipe_options(**options)
    resources_ = {BROWSER_CLIENT_PATH: HttpResource(browser_client(), "text/javascript")}
    resources_.update(http or {})
    scheme = "wss" if ssl_context is not None else "ws"
    listener = Listener(
        [],
        address=None,
        label=f"{scheme}://{host}:{port}{path}",
        options=opts,
        token=token,
        ssl_context=None,  # TLS is done by the _SlotListener's streams, before the upgrade
        max_peers=max_peers,
        handler=handler,
    )
    gate = _Gate(listener, path, origins, resources_)

    async def on_connection(ws: ServerConnection) -> None:
        stream = _slot_stream(ws)
        await listener.serve_transport(
            WebSocketTransport(ws), _peer_of(ws), stream.slot, stream.accepted_at
        )

    sockets = await trio.open_tcp_listeners(port, host=host)
    async with open_plain_nursery() as nursery:
        server: Server = await nursery.start(
            partial(
                ws_serve,
                on_connection,
                listeners=[_SlotListener(sock, listener, ssl_context) for sock in sockets],  # type: ignore[misc]
                ssl=None,  # TLS is done by _SlotListener's streams, so failures are seen
                compression="deflate" if compression else None,
                process_request=gate,
                open_timeout=opts.get("handshake_timeout"),
                ping_interval=None,
                close_timeout=_CLOSE_TIMEOUT,
                max_size=opts.get("max_frame", 0) + HEADER_SIZE,
                server_header=None,
                create_connection=_upgrade_watcher(listener, opts.get("handshake_timeout")),
            )
        )
        bound = server.listeners[0].socket.getsockname()
        gate.bind("https" if ssl_context is not None else "http", bound[0], bound[1])
        listener.address = (bound[0], bound[1])
        listener.label = f"{scheme}://{bound[0]}:{bound[1]}{path}"
        listener.url = f"{scheme}://{bound[0]}:{bound[1]}{path}"
        try:
            yield listener
        finally:
            listener._send.close()
            listener._receive.close()
            nursery.cancel_scope.cancel()


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str = DEFAULT_PATH,
    token: str | None = None,
    origins: Sequence[str | None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool = False,
    max_peers: int = DEFAULT_MAX_PEERS,
    http: Mapping[str, HttpResource] | None = None,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[PipeOptions],
) -> None:
    """Serve ``handler`` until cancelled; ``await nursery.start(serve, handler, ...)``
    returns the :class:`Listener` (its ``url`` is the WebSocket address)."""
    async with listen(
        host,
        port,
        path=path,
        handler=handler,
        token=token,
        origins=origins,
        ssl_context=ssl_context,
        compression=compression,
        max_peers=max_peers,
        http=http,
        **options,
    ) as listener:
        task_status.started(listener)
        await trio.sleep_forever()


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    origin: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool = False,
    reconnect: Reconnect | bool | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[FramedPipe]:
    """Connect to ``url`` (``ws://`` or ``wss://``) and yield the pipe once both the
    WebSocket and the pipekit/1 handshakes are done. A refused upgrade (a disallowed
    origin, a wrong path) raises ``websockets.exceptions.InvalidStatus`` with the
    server's status; a server that closes or answers without a valid HTTP response
    raises :class:`~pipekit.kernel.ProtocolError` (kind ``handshake``); other errors
    and ``reconnect`` as in :func:`pipekit.adapters.tcp.connect`."""
    opts = pipe_options(**options)
    opts["name"] = opts.get("name") or url

    @asynccontextmanager
    async def attempt() -> AsyncIterator[FramedPipe]:
        extra: dict[str, Any] = {} if ssl_context is None else {"ssl": ssl_context}
        timeout = opts.get("handshake_timeout")
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
                    ws_connect(
                        url,
                        origin=origin,  # type: ignore[arg-type]
                        compression="deflate" if compression else None,
                        open_timeout=timeout,
                        ping_interval=None,
                        close_timeout=_CLOSE_TIMEOUT,
                        max_size=opts.get("max_frame", 0) + HEADER_SIZE,
                        **extra,
                    )
                )
            except TimeoutError as exc:
                # The same error as every transport's handshake timeout (and retried).
                raise ProtocolError(
                    f"{url}: WebSocket upgrade did not complete within {timeout} s",
                    kind="handshake_timeout",
                ) from exc
            except InvalidMessage as exc:
                # No HTTP answer: for example a wss:// listener that refused TLS.
                raise ProtocolError(
                    f"{url}: the server did not answer the WebSocket upgrade ({exc})",
                    kind="handshake",
                ) from exc
            assert isinstance(ws, ClientConnection)
            async with framed_pipe(
                WebSocketTransport(ws), initiator=True, token=token, **opts
            ) as pipe:
                yield pipe

    async with connect_with_retry(attempt, reconnect, opts["name"] or url) as pipe:
        yield pipe
