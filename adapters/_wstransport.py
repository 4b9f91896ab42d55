"""pipekit/1 frames as WebSocket messages: a ``websockets.trio`` connection as a
:class:`~pipekit.kernel.MessageTransport`, and the ``websockets`` settings both ends use."""

from __future__ import annotations

from typing import Any

import trio
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.trio.connection import Connection as WebSocket

from ..kernel.errors import ErrorKind, RemoteProtocolError
from ..kernel.framed import MessageTransport
from ..kernel.options import PipeSettings
from ..kernel.protocol import HEADER_SIZE, error_frame

__all__ = ["WebSocketTransport", "websocket_settings"]

_CLOSE_TIMEOUT = 1.0


def websocket_settings(settings: PipeSettings, compression: bool) -> dict[str, Any]:
    """The ``websockets`` keywords of a server or client connection: compression only
    if asked for, the upgrade within ``handshake_timeout``, no keepalive pings
    (``idle_timeout`` does that job), and messages of at most one frame."""
    return {
        "compression": "deflate" if compression else None,
        "open_timeout": settings.handshake_timeout,
        "ping_interval": None,
        "close_timeout": _CLOSE_TIMEOUT,
        "max_size": settings.max_frame + HEADER_SIZE,
    }


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
                raise RemoteProtocolError(
                    f"WebSocket message too big: {exc.sent.reason}", kind=ErrorKind.OVERSIZE
                ) from exc
            if exc.rcvd is not None and exc.rcvd.code == 1009 and exc.rcvd_then_sent is not False:
                # The peer closed: our message was larger than its max_frame. Report it as
                # the ERROR a byte-stream peer would have sent (once; then the end).
                if self._peer_refused:
                    return None
                self._peer_refused = True
                return error_frame(
                    ErrorKind.OVERSIZE, f"the peer refused a WebSocket message: {exc.rcvd.reason}"
                )
            raise trio.BrokenResourceError(f"WebSocket closed: {_describe(exc)}") from exc
        if isinstance(message, str):
            raise RemoteProtocolError(
                "text WebSocket message: pipekit/1 frames travel as binary messages",
                kind=ErrorKind.MALFORMED,
            )
        return message

    async def aclose(self) -> None:
        """Close with the WebSocket closing handshake, even when cancelled: it is
        shielded but bounded (websockets aborts the TCP connection after
        ``close_timeout``), since tearing the socket down under websockets' own tasks
        makes it log internal errors."""
        with trio.CancelScope(shield=True):
            await self.ws.aclose()


def _describe(exc: ConnectionClosed) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "connection lost without a closing handshake"
    return f"code {close.code}" + (f" ({close.reason})" if close.reason else "")
