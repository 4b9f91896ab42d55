"""The tcp adapter: pipekit/1 over TCP, optionally inside TLS.

:func:`listen` serves many peers (each with its own pipe, handed to a handler or taken
with :meth:`~pipekit.adapters.Listener.accept`); :func:`serve` is the same for use with
``nursery.start``; :func:`connect` opens one pipe to a listener. With ``token=`` a
listener refuses every peer whose HELLO does not carry that token (compared in constant
time) with an ERROR saying why, before any DATA is accepted. ``ssl_context=`` wraps the
connection in TLS (:class:`trio.SSLStream`); the TLS handshake counts towards
``handshake_timeout``. Every option of :func:`~pipekit.kernel.framed_pipe` applies
(``max_frame``, ``handshake_timeout``, ``idle_timeout``, watermarks, ...); a listener's
``idle_timeout`` is 60 s unless given (``None`` turns it off), so that peers which go
silent cannot hold every slot.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

import trio

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

__all__ = ["Listener", "Reconnect", "Refusal", "connect", "listen", "serve"]


def _unlimit_unsent(sock: trio.socket.SocketType) -> None:
    """Undo the 16 KiB ``TCP_NOTSENT_LOWAT`` that :class:`trio.SocketStream` sets, on
    Linux (0: the system's default, no limit). With it, a write stops once 16 KiB are
    queued unsent, so a 1 MiB message took 5 ``sendmsg`` calls and as many wake-ups of
    the writer (measured one way, 1 MiB messages: 20 -> 4 sender context switches a
    message, about half the sender's CPU); pipekit/1 bounds what is queued itself
    (``send_buffer``, PAUSE). Messages sent one at a time never queue 16 KiB."""
    if sys.platform == "linux" and hasattr(socket, "TCP_NOTSENT_LOWAT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 0)


class _Accepting(trio.abc.Listener[trio.SocketStream]):
    """A :class:`trio.SocketListener` whose connections get :func:`_unlimit_unsent`."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self._listener = listener

    async def accept(self) -> trio.SocketStream:
        stream = await self._listener.accept()
        _unlimit_unsent(stream.socket)
        return stream

    async def aclose(self) -> None:
        await self._listener.aclose()


@asynccontextmanager
async def listen(
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    handler: Handler | None = None,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_peers: int = DEFAULT_MAX_PEERS,
    backlog: int | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[Listener]:
    """Listen on ``host``:``port`` (port 0 picks a free one: see ``listener.address``)
    for the duration of the block. With ``handler``, each peer's pipe is passed to
    ``await handler(pipe)`` in its own task (its exception fails that peer's pipe only);
    without, take peers with ``await listener.accept()`` or ``async for``. On exit no more
    peers are accepted and every peer's pipe is closed."""
    settings = listener_settings(options)
    listeners = await open_tcp_listeners(host, port, backlog)
    bound = listeners[0].socket.getsockname()
    scheme = "tls" if ssl_context is not None else "tcp"
    listener = Listener(
        [_Accepting(each) for each in listeners],
        address=(bound[0], bound[1]),
        label=f"{scheme}://{bound[0]}:{bound[1]}",
        settings=settings,
        token=token,
        ssl_context=ssl_context,
        max_peers=max_peers,
        handler=handler,
    )
    async with run_listener(listener):
        yield listener


async def serve(
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_peers: int = DEFAULT_MAX_PEERS,
    backlog: int | None = None,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[PipeOptions],
) -> None:
    """Serve ``handler`` until cancelled; ``await nursery.start(serve, handler, ...)``
    returns the :class:`Listener` (for its ``address``)."""
    listening = listen(
        host,
        port,
        handler=handler,
        token=token,
        ssl_context=ssl_context,
        max_peers=max_peers,
        backlog=backlog,
        **options,
    )
    await serve_forever(listening, task_status)


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    reconnect: Reconnect | bool | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[FramedPipe]:
    """Connect to a listener and yield the pipe once the handshake is done.

    ``ssl_context`` enables TLS (``server_hostname`` defaults to ``host``). Connection
    failures raise :class:`OSError`; a refusal by the listener raises
    :class:`~pipekit.kernel.RemoteError` with its reason (kind ``auth_failed`` for a wrong
    token). ``reconnect=True`` or a :class:`Reconnect` retries failed connection attempts
    with exponential backoff (off by default); a pipe that broke after the handshake is
    not silently replaced."""
    label = f"{'tls' if ssl_context is not None else 'tcp'}://{host}:{port}"

    @asynccontextmanager
    async def open_stream(settings: PipeSettings) -> AsyncIterator[trio.abc.Stream]:
        tcp_stream = await trio.open_tcp_stream(host, port)
        _unlimit_unsent(tcp_stream.socket)
        stream: trio.abc.Stream = tcp_stream
        if ssl_context is not None:
            tls = trio.SSLStream(stream, ssl_context, server_hostname=server_hostname or host)
            timeout = settings.handshake_timeout
            try:
                with trio.fail_after(math.inf if timeout is None else timeout):
                    await tls.do_handshake()
            except BaseException as exc:
                await trio.aclose_forcefully(stream)
                if isinstance(exc, trio.TooSlowError):
                    # The same error as every transport's handshake timeout (and retried).
                    raise RemoteProtocolError(
                        f"{label}: TLS handshake did not complete within {timeout} s",
                        kind=ErrorKind.HANDSHAKE_TIMEOUT,
                    ) from None
                raise
            stream = tls
        yield stream

    async with connect_pipe(
        open_stream, label=label, token=token, reconnect=reconnect, options=options
    ) as pipe:
        yield pipe
