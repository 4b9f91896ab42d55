"""pipekit/1 frames as WebSocket messages: a ``websockets.trio`` connection as a
:class:`~pipekit.kernel.MessageTransport`, the ``websockets`` settings both ends use, and
the connection classes that tell a peer ``oversize`` before closing with 1009."""

from __future__ import annotations

import os
from typing import Any

import trio
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode
from websockets.protocol import SEND_EOF, State
from websockets.trio.client import ClientConnection
from websockets.trio.connection import Connection as WebSocket

from ..kernel.errors import ErrorKind, RemoteProtocolError
from ..kernel.framed import MessageTransport
from ..kernel.options import PipeSettings
from ..kernel.protocol import HEADER_SIZE, FrameType, error_frame

__all__ = [
    "OversizeReporting",
    "PipekitClientConnection",
    "WebSocketTransport",
    "websocket_settings",
]

_CLOSE_TIMEOUT = 1.0
_ERROR = FrameType.ERROR.value
_END = FrameType.END.value


class OversizeReporting(WebSocket):
    """A ``websockets.trio`` connection that tells its peer why before it refuses a
    message larger than ``max_size`` (``max_frame`` + 8): websockets closes with 1009
    from the message's header, and just before that close frame this sends a pipekit
    ERROR of kind ``oversize``, as any transport would (unless this side's direction
    has already ended, after which an ERROR would be malformed: then 1009 says it
    alone). Installed as the connection is created, so it holds from the first
    message on; :class:`WebSocketTransport` records when this side sends END or
    ERROR."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipekit_direction_open = True
        protocol = self.protocol
        fail = protocol.fail

        def fail_telling_why(code: int, reason: str = "") -> None:
            if (
                code == CloseCode.MESSAGE_TOO_BIG
                and self.pipekit_direction_open
                and protocol.state is State.OPEN
                and not protocol.expect_continuation_frame
            ):
                self.pipekit_direction_open = False
                protocol.send_binary(
                    error_frame(ErrorKind.OVERSIZE, f"WebSocket message too big: {reason}")
                )
            fail(code, reason)

        # websockets offers no hook here; its sans-I/O protocol calls fail() for 1009.
        protocol.fail = fail_telling_why  # type: ignore[method-assign]

    async def send_data(self) -> None:
        """Write what the protocol has to send (websockets' ``send_data``, without its
        scheduler passes when none is needed): nothing to send returns at once
        (websockets calls this after every read), and on a plain socket that nobody
        else is writing to, what the socket takes now is written without waiting; only
        the rest, if any, is written by ``send_all`` under websockets' lock. Its lock and
        ``send_all`` are a scheduler pass each even when the socket takes all: two
        more per message sent and one per message received."""
        protocol = self.protocol
        if not protocol.writes:
            return
        stream = self.stream
        lock = self.send_lock
        if (
            type(stream) is not trio.SocketStream
            or lock.locked()
            or SEND_EOF in protocol.writes  # (websockets half-closes: its own path)
        ):
            await super().send_data()
            return
        lock.acquire_nowait()
        try:
            data = b"".join(protocol.data_to_send())
            try:
                written = os.write(stream.socket.fileno(), data)
            except BlockingIOError:
                written = 0
            except OSError:
                written = 0  # send_all meets the error again and raises it as trio does
            if written < len(data):
                await stream.send_all(memoryview(data)[written:])
        finally:
            lock.release()


class PipekitClientConnection(OversizeReporting, ClientConnection):
    """The client's WebSocket connection (``create_connection=`` of websockets' connect)."""


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
        self._reporting = ws if isinstance(ws, OversizeReporting) else None
        self._peer_refused = False

    async def send_message(self, frame: bytes) -> None:
        if self._reporting is not None and frame[5] in (_END, _ERROR) and not frame[4]:
            self._reporting.pipekit_direction_open = False  # no ERROR may follow now
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
                # The peer closed: our message was larger than its max_frame. Unless its
                # ERROR said so already, report it as the ERROR a byte-stream peer would
                # have sent (once; then the end).
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
        if len(message) > 5 and message[5] == _ERROR and not message[4]:
            self._peer_refused = True  # the peer's direction is over: a 1009 adds nothing
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
