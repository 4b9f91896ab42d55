"""The framed pipe: pipekit/1 over any trio byte :class:`~trio.abc.Stream`.

:func:`framed_pipe` runs a :class:`FramedPipe` over a transport for the length of an
``async with`` block. Every adapter that carries bytes reuses it: stdio, unix and tcp
over a byte stream, websocket over a :class:`MessageTransport` that carries one frame
per message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

import trio

from ._framedpipe import FramedPipe
from ._transport import MessageTransport
from ._transport import Transport as Transport
from .options import DEFAULT_CLOSE_TIMEOUT as DEFAULT_CLOSE_TIMEOUT
from .options import DEFAULT_READ_SIZE as DEFAULT_READ_SIZE
from .options import DEFAULT_SEND_BUFFER, PipeOptions, PipeSettings
from .protocol import Connection
from .scopes import unwrap_group

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_SEND_BUFFER",
    "FramedPipe",
    "MessageTransport",
    "framed_pipe",
]


@asynccontextmanager
async def framed_pipe(
    stream: Transport,
    *,
    initiator: bool,
    token: str | None = None,
    expected_token: str | None = None,
    handshake_started: float | None = None,
    settings: PipeSettings | None = None,
    **options: Unpack[PipeOptions],
) -> AsyncIterator[FramedPipe]:
    """Run pipekit/1 over ``stream`` and yield a :class:`FramedPipe` once the handshake
    is done.

    ``initiator`` is True on the side that connected or spawned (it offers ``codecs``);
    the other side accepts and chooses. The handshake fails with
    :class:`~pipekit.kernel.ProtocolError` (kind ``handshake_timeout`` after
    ``handshake_timeout`` seconds, counted from ``handshake_started`` - a
    :func:`trio.current_time` - if given, so that a listener can count from the accept,
    TLS included - else from now) or :class:`~pipekit.kernel.RemoteError` if the peer
    refused. The receiving side PAUSEs the peer once ``high_water`` messages or
    ``high_water_bytes`` bytes of DATA payload are waiting to be received, and RESUMEs it
    once they are down to ``low_water`` and ``low_water_bytes`` (half by default); it
    tolerates ``pause_slack`` more bytes after a PAUSE. With ``idle_timeout``, a peer from
    which nothing arrives for that long (it
    is PINGed half way, so a live but quiet peer answers) fails the pipe with kind
    ``idle_timeout``. ``stream`` is a byte stream or a :class:`MessageTransport`.

    On a normal exit the pipe is closed as by :meth:`FramedPipe.aclose`: ended, flushed,
    and the peer given ``close_timeout`` seconds (None: no limit) to close its own
    direction; the block then raises the peer's ERROR (:class:`RemoteError`), or
    :class:`trio.BrokenResourceError` for a connection that broke first or a peer that
    neither ended nor answered a PING in time, unless the body was told already. If the
    body raised, the pipe is failed with that exception, the peer is given the same time
    to close its direction (so that the ERROR is not lost to a reset), and the body's
    exception propagates. The stream is closed in every case. ``options`` are those
    of :class:`~pipekit.kernel.PipeOptions`, checked by
    :class:`~pipekit.kernel.PipeSettings` (which has their defaults); a caller that
    already holds checked settings passes them as ``settings`` instead.
    """
    if settings is None:
        settings = PipeSettings(**options)
    elif options:
        raise TypeError("framed_pipe() takes settings or option keywords, not both")
    conn = Connection(
        initiator=initiator, token=token, expected_token=expected_token, settings=settings
    )
    pipe = FramedPipe(
        stream,
        conn,
        name=conn.name,
        send_buffer=settings.send_buffer,
        read_size=settings.read_size,
        close_timeout=settings.close_timeout,
    )
    body_error: BaseException | None = None
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            pipe.start(nursery, idle_timeout=settings.idle_timeout)
            try:
                await pipe.complete_handshake(
                    handshake_timeout=settings.handshake_timeout, started=handshake_started
                )
                try:
                    yield pipe
                except BaseException as exc:
                    body_error = exc
                    await pipe.abandon(exc)
                    raise
                await pipe.aclose()
            finally:
                # Close the transport *before* cancelling the nursery, and shielded: in a
                # cancelled scope (this nursery's, or the caller's when it is cancelled
                # from outside), the Cancelled raised within aclose_forcefully would
                # escape this finally and replace - and so silently swallow - the
                # exception in flight (the body's or the handshake's). A forceful close
                # does not wait, so the shield cannot hold anything up.
                try:
                    with trio.CancelScope(shield=True):
                        await pipe.close_transport()
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Raise the body's exception, or the handshake's error, as itself rather than
        # wrapped in the nursery's ExceptionGroup (a group the body raised stays intact).
        unwrapped = unwrap_group(group, keep=body_error)
        if unwrapped is group:
            raise
    if unwrapped is not None:
        raise unwrapped  # outside the except block: keeps its own __context__
