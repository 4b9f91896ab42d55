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
clients that send none); a disallowed origin gets HTTP 403 with the reason. By default
(:data:`DEFAULT_ORIGINS`) only the listener's own pages and clients that send no
``Origin`` are admitted, so that no other site open in a browser can connect;
``origins=None`` admits every origin.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Unpack

import trio
from websockets.exceptions import InvalidMessage
from websockets.trio.client import ClientConnection
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import Server, ServerConnection
from websockets.trio.server import serve as ws_serve

from ..kernel.errors import ErrorKind, RemoteProtocolError
from ..kernel.framed import FramedPipe
from ..kernel.options import PipeOptions, PipeSettings
from ._connect import Reconnect, connect_pipe
from ._listener import (
    DEFAULT_MAX_PEERS,
    Handler,
    Listener,
    listener_settings,
    open_tcp_listeners,
    run_listener,
    serve_forever,
)
from ._refusal import Refusal
from ._wsaccept import SlotListener, peer_of, slot_stream, upgrade_watcher
from ._wsgate import BROWSER_CLIENT_PATH, SAME_ORIGIN, Gate, HttpResource, browser_client
from ._wstransport import PipekitClientConnection, WebSocketTransport, websocket_settings

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

DEFAULT_PATH = "/ws"
DEFAULT_ORIGINS: tuple[str | None, ...] = (SAME_ORIGIN, None)
"""The ``origins`` a listener admits unless told otherwise: the pages it serves itself
(:data:`SAME_ORIGIN`) and clients that send no ``Origin`` (programs, not browsers)."""


@asynccontextmanager
async def listen(
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str = DEFAULT_PATH,
    handler: Handler | None = None,
    token: str | None = None,
    origins: Sequence[str | None] | None = DEFAULT_ORIGINS,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool = False,
    max_peers: int = DEFAULT_MAX_PEERS,
    http: Mapping[str, HttpResource] | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[Listener]:
    """Serve WebSocket peers at ``ws://host:port{path}`` for the duration of the block
    (``handler`` and accepting as in :func:`pipekit.adapters.tcp.listen`). Also serves
    the browser client at ``/pipekit.js`` and the GET resources in ``http``."""
    settings = listener_settings(options)
    resources_ = {BROWSER_CLIENT_PATH: HttpResource(browser_client(), "text/javascript")}
    resources_.update(http or {})
    scheme = "wss" if ssl_context is not None else "ws"
    listener = Listener(
        [],
        address=None,
        label=f"{scheme}://{host}:{port}{path}",
        settings=settings,
        token=token,
        ssl_context=None,  # TLS is done by the SlotListener's streams, before the upgrade
        max_peers=max_peers,
        handler=handler,
    )
    gate = Gate(listener, path, origins, resources_)

    async def on_connection(ws: ServerConnection) -> None:
        stream = slot_stream(ws)
        await listener.serve_transport(
            WebSocketTransport(ws), peer_of(ws), stream.slot, stream.accepted_at
        )

    sockets = await open_tcp_listeners(host, port)

    async def start(nursery: trio.Nursery) -> None:
        server: Server = await nursery.start(
            partial(
                ws_serve,
                on_connection,
                listeners=[SlotListener(sock, listener, ssl_context) for sock in sockets],  # type: ignore[misc]
                ssl=None,  # TLS is done by SlotListener's streams, so failures are seen
                process_request=gate,
                server_header=None,
                create_connection=upgrade_watcher(listener, settings.handshake_timeout),
                **websocket_settings(settings, compression),
            )
        )
        bound = server.listeners[0].socket.getsockname()
        gate.bind("https" if ssl_context is not None else "http", bound[0], bound[1])
        listener.address = (bound[0], bound[1])
        listener.label = f"{scheme}://{bound[0]}:{bound[1]}{path}"
        listener.url = f"{scheme}://{bound[0]}:{bound[1]}{path}"

    async with run_listener(listener, start):
        yield listener


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    path: str = DEFAULT_PATH,
    token: str | None = None,
    origins: Sequence[str | None] | None = DEFAULT_ORIGINS,
    ssl_context: ssl.SSLContext | None = None,
    compression: bool = False,
    max_peers: int = DEFAULT_MAX_PEERS,
    http: Mapping[str, HttpResource] | None = None,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[PipeOptions],
) -> None:
    """Serve ``handler`` until cancelled; ``await nursery.start(serve, handler, ...)``
    returns the :class:`Listener` (its ``url`` is the WebSocket address)."""
    listening = listen(
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
    )
    await serve_forever(listening, task_status)


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

    @asynccontextmanager
    async def open_websocket(settings: PipeSettings) -> AsyncIterator[WebSocketTransport]:
        ws_options = websocket_settings(settings, compression)
        timeout = settings.handshake_timeout
        if ssl_context is not None:
            ws_options["ssl"] = ssl_context
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
                    ws_connect(
                        url,
                        origin=origin,  # type: ignore[arg-type]
                        create_connection=PipekitClientConnection,
                        **ws_options,
                    )
                )
            except TimeoutError as exc:
                # The same error as every transport's handshake timeout (and retried).
                raise RemoteProtocolError(
                    f"{url}: WebSocket upgrade did not complete within {timeout} s",
                    kind=ErrorKind.HANDSHAKE_TIMEOUT,
                ) from exc
            except InvalidMessage as exc:
                # No HTTP answer: for example a wss:// listener that refused TLS.
                raise RemoteProtocolError(
                    f"{url}: the server did not answer the WebSocket upgrade ({exc})",
                    kind=ErrorKind.HANDSHAKE,
                ) from exc
            assert isinstance(ws, ClientConnection)
            yield WebSocketTransport(ws)

    async with connect_pipe(
        open_websocket, label=url, token=token, reconnect=reconnect, options=options
    ) as pipe:
        yield pipe
