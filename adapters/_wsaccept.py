"""Accepting WebSocket connections for a :class:`Listener`: each connection holds a
listener slot from the moment it is accepted, and the peers that fail TLS or the HTTP
upgrade (which ``websockets`` drops before any handler runs) are recorded as refusals."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import trio
from websockets.trio.connection import Connection as WebSocket
from websockets.trio.server import ServerConnection

from ._listener import Listener, Slot
from ._refusal import RefusalKind
from ._wstransport import OversizeReporting

__all__ = ["SlotListener", "SlotStream", "peer_of", "slot_stream", "upgrade_watcher"]


def peer_of(ws: WebSocket) -> str:
    """The remote address of a WebSocket connection, for refusals and logs."""
    try:
        address = ws.remote_address
    except Exception:
        return "peer"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


class SlotStream(trio.abc.Stream):
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


class _PlainSlotStream(SlotStream, trio.abc.HalfCloseableStream):
    """A :class:`SlotStream` without TLS: websockets half-closes it at the end."""

    stream: trio.SocketStream

    async def send_eof(self) -> None:
        await self.stream.send_eof()


class SlotListener(trio.abc.Listener[trio.abc.Stream]):
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
            slot = await self.listener.admit(stream)
            if slot is None:
                continue
            release = self.listener.release_slot
            if self.ssl_context is None:
                return _PlainSlotStream(stream, stream.socket, slot, release)
            tls = trio.SSLStream(stream, self.ssl_context, server_side=True, https_compatible=True)
            return SlotStream(tls, stream.socket, slot, release)

    async def aclose(self) -> None:
        await self.inner.aclose()


def slot_stream(ws: ServerConnection) -> SlotStream:
    """The :class:`SlotStream` under a connection of the websockets server."""
    stream = ws.stream
    assert isinstance(stream, SlotStream)
    return stream


def upgrade_watcher(listener: Listener, timeout: float | None) -> type[ServerConnection]:
    """A ``ServerConnection`` that records, in ``listener``, the peers whose TLS
    handshake failed (kind ``tls``), whose TLS handshake or HTTP upgrade did not finish
    in time (``handshake_timeout``), that closed before sending the upgrade
    (``handshake``, as on the other transports) or that did not speak HTTP at all
    (``malformed``): websockets drops those before any handler runs. It also tells a
    peer ``oversize`` before closing with 1009 (:class:`OversizeReporting`)."""

    class UpgradeWatcher(OversizeReporting, ServerConnection):
        # websockets only knows the addresses of a bare trio.SocketStream.
        @property
        def local_address(self) -> Any:
            return slot_stream(self).socket.getsockname()

        @property
        def remote_address(self) -> Any:
            return slot_stream(self).socket.getpeername()

        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            peer = peer_of(self)  # while the socket is still connected
            stage = "no WebSocket upgrade request"
            try:
                tls = slot_stream(self).stream
                if isinstance(tls, trio.SSLStream):
                    stage = "TLS handshake not completed"
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        reason = f"TLS handshake failed: {exc.__cause__ or exc}"
                        listener.record_refusal(peer, RefusalKind.TLS, reason)
                        raise
                    stage = "no WebSocket upgrade request"
                await super().handshake(*args, **kwargs)
            except trio.Cancelled as exc:
                if getattr(exc, "source", None) == "deadline":  # open_timeout
                    reason = stage + (
                        f" within {timeout:g} s" if timeout is not None else " in time"
                    )
                    listener.record_refusal(peer, RefusalKind.HANDSHAKE_TIMEOUT, reason)
                raise
            failure = self.protocol.handshake_exc
            if self.request is None and failure is not None:
                if isinstance(failure.__cause__, EOFError):
                    reason = "connection closed before the WebSocket upgrade"
                    listener.record_refusal(peer, RefusalKind.HANDSHAKE, reason)
                else:
                    listener.record_refusal(peer, RefusalKind.MALFORMED, str(failure))

    return UpgradeWatcher
