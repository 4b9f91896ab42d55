"""The unix adapter: pipekit/1 over Unix domain sockets.

Like :mod:`pipekit.adapters.tcp` (``handler``/``accept``, ``token``, ``max_frame``,
``handshake_timeout``, ``idle_timeout``, ``reconnect``), addressed by a filesystem path.
The socket file is created with permissions ``mode`` (0o600 by default: only this user
may connect) before the socket starts listening, and removed when the listener exits. A
stale socket file left by a dead listener is replaced; a live one is an error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

import trio

from ..kernel.framed import FramedPipe
from ..kernel.options import PipeOptions, PipeSettings
from ._connect import Reconnect, connect_pipe
from ._listener import (
    DEFAULT_MAX_PEERS,
    Handler,
    Listener,
    listener_settings,
    run_listener,
    serve_forever,
)
from ._refusal import Refusal

__all__ = ["Listener", "Reconnect", "Refusal", "connect", "listen", "serve"]

Path = str | os.PathLike[str]

SOCKET_BUFFER = 1 << 20
"""``SO_SNDBUF``/``SO_RCVBUF`` of every connection's socket, both ends (capped by the
system's ``wmem_max``/``rmem_max``), as on a stdio worker's channel. The default
(``wmem_default``, 208 KiB here) holds three 64 KiB messages: a sender then waits for
the reader after every few, and each side pays a wake-up per message or two (measured
one way, 64 KiB messages, medians of 5 interleaved rounds: 20k -> 31k msg/s, 0.06 ->
0.02 receiver context switches a message; 1 MiB messages: no clear change)."""


def _enlarge(sock: trio.socket.SocketType) -> None:
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)


class _Accepting(trio.abc.Listener[trio.SocketStream]):
    """A :class:`trio.SocketListener` whose connections get :data:`SOCKET_BUFFER`
    buffers (a Unix socket does not inherit them from the listening socket)."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._listener = trio.SocketListener(sock)

    async def accept(self) -> trio.SocketStream:
        stream = await self._listener.accept()
        _enlarge(stream.socket)
        return stream

    async def aclose(self) -> None:
        await self._listener.aclose()


def _clear_stale(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a live listener with a full backlog must not block us
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except BlockingIOError:
        pass  # a full backlog: somebody listens
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "a listener is already serving this socket", path)


@asynccontextmanager
async def listen(
    path: Path,
    *,
    mode: int = 0o600,
    handler: Handler | None = None,
    token: str | None = None,
    max_peers: int = DEFAULT_MAX_PEERS,
    backlog: int = 128,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[Listener]:
    """Listen on the socket file ``path`` for the duration of the block (see
    :func:`pipekit.adapters.tcp.listen` for ``handler`` and accepting)."""
    settings = listener_settings(options)
    where = os.fspath(path)
    _clear_stale(where)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(where)
        # Permissions are set before listen(): until then every connect is refused, so
        # there is no window in which the umask's looser mode lets anyone in.
        os.chmod(where, mode)
        sock.listen(backlog)
        inode = os.stat(where).st_ino
    except BaseException:
        sock.close()
        raise
    listener = Listener(
        [_Accepting(sock)],
        address=where,
        label=f"unix:{where}",
        settings=settings,
        token=token,
        ssl_context=None,
        max_peers=max_peers,
        handler=handler,
    )
    try:
        async with run_listener(listener):
            yield listener
    finally:
        with contextlib.suppress(OSError):
            if os.stat(where).st_ino == inode:
                os.unlink(where)


async def serve(
    handler: Handler,
    path: Path,
    *,
    mode: int = 0o600,
    token: str | None = None,
    max_peers: int = DEFAULT_MAX_PEERS,
    backlog: int = 128,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[PipeOptions],
) -> None:
    """Serve ``handler`` until cancelled; ``await nursery.start(serve, handler, path)``
    returns the :class:`Listener`."""
    listening = listen(
        path,
        mode=mode,
        handler=handler,
        token=token,
        max_peers=max_peers,
        backlog=backlog,
        **options,
    )
    await serve_forever(listening, task_status)


@asynccontextmanager
async def connect(
    path: Path,
    *,
    token: str | None = None,
    reconnect: Reconnect | bool | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[FramedPipe]:
    """Connect to the listener at ``path`` and yield the pipe once the handshake is done
    (errors and ``reconnect`` as in :func:`pipekit.adapters.tcp.connect`)."""
    where = os.fspath(path)

    @asynccontextmanager
    async def open_socket(settings: PipeSettings) -> AsyncIterator[trio.SocketStream]:
        stream = await trio.open_unix_socket(where)
        _enlarge(stream.socket)
        yield stream

    async with connect_pipe(
        open_socket, label=f"unix:{where}", token=token, reconnect=reconnect, options=options
    ) as pipe:
        yield pipe
