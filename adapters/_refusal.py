"""Turning a peer away: the refusal kinds and record, and the ERROR frame sent to a
peer before its connection is closed."""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass

import trio

from ..kernel.errors import ErrorKind, PipekitError
from ..kernel.framed import MessageTransport, Transport
from ..kernel.protocol import Connection

__all__ = ["LINGER_SECONDS", "Refusal", "RefusalKind", "describe_peer", "refusal_kind", "refuse"]

LINGER_SECONDS = 1.0
"""How long a refused peer's input is drained after our ERROR, so that closing does not
reset the connection before the peer has read the reason."""


class RefusalKind(enum.StrEnum):
    """The kinds of refusal a listener decides itself (a peer that fails the pipekit/1
    handshake is refused with the kind of that :class:`~pipekit.kernel.ProtocolError`).
    Some equal a protocol error kind, as the peer sees the same failure on every
    transport."""

    BUSY = ErrorKind.BUSY.value
    """Every peer slot is taken (also the kind of the ERROR frame such a peer gets)."""
    TLS = "tls"
    """The TLS handshake failed."""
    CLOSED = "closed"
    """The connection broke or closed during the handshake."""
    HANDSHAKE = ErrorKind.HANDSHAKE.value
    """The peer closed before its WebSocket upgrade."""
    HANDSHAKE_TIMEOUT = ErrorKind.HANDSHAKE_TIMEOUT.value
    """TLS or the WebSocket upgrade did not finish within ``handshake_timeout``."""
    MALFORMED = ErrorKind.MALFORMED.value
    """The peer did not speak HTTP where a WebSocket upgrade was due."""
    NOT_FOUND = "not_found"
    """A WebSocket upgrade to a path the listener does not serve."""
    ORIGIN = "origin"
    """A WebSocket upgrade from an origin that is not allowed."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A peer a listener turned away: who, why (``kind``: a :class:`RefusalKind`, or the
    kind of the peer's failed pipekit/1 handshake) and the readable reason."""

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


def refusal_kind(exc: BaseException) -> str:
    """The kind of refusal for a peer whose handshake failed with ``exc``."""
    if isinstance(exc, PipekitError):
        return getattr(exc, "kind", None) or type(exc).__name__
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        return RefusalKind.TLS
    return RefusalKind.CLOSED


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
