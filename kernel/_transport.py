"""Moving bytes between a transport and a :class:`~pipekit.kernel.protocol.Connection`.

A transport is a trio byte stream or a :class:`MessageTransport` (one frame per
message). :func:`read_into` feeds what a transport brings to the connection,
:func:`writes_for` says how what the connection queued goes out, each in the way that
suits the transport (a socket is read in place and written vectored), with the errors
:class:`trio.SocketStream` raises.
"""

from __future__ import annotations

import abc
import errno
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

try:
    import fcntl
    import termios
except ImportError:  # (no socket reader there: it needs os.readv)
    pass

from ._events import Event
from .errors import ProtocolError
from .protocol import LARGE_HEAD, Connection

__all__ = [
    "IOV_MAX",
    "MessageTransport",
    "SocketReader",
    "Transport",
    "Writes",
    "direct_socket",
    "read_into",
    "socket_reader",
    "write_some",
    "writes_for",
]


class MessageTransport(trio.abc.AsyncResource):
    """A transport that carries whole messages, one pipekit/1 frame each (WebSocket).

    ``receive_message`` returns the next message, ``None`` once the peer closed cleanly,
    and raises :class:`~pipekit.kernel.ProtocolError` for a message it cannot carry (the
    pipe then refuses the connection with that reason) or :class:`trio.BrokenResourceError`
    when the connection broke. ``send_message`` sends one frame."""

    @abc.abstractmethod
    async def send_message(self, frame: bytes) -> None: ...

    @abc.abstractmethod
    async def receive_message(self) -> bytes | None: ...


Transport = trio.abc.Stream | MessageTransport

Pieces = Sequence[bytes | memoryview]
Writes = tuple[Callable[[], Pieces], Callable[[Pieces], Awaitable[None]]]
"""How a writer takes what is ready (a call) and puts it on the transport (awaited)."""

_VECTORED_MIN = 64 * 1024
"""A write holding a piece at least this large goes out with sendmsg, uncopied."""
_INT = bytes(4)
IOV_MAX = 512
"""Pieces handed to one ``sendmsg``/``writev`` call."""


def _stream_error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    """What :class:`trio.SocketStream` raises for ``exc``."""
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


# -- reading --------------------------------------------------------------------------


async def read_into(
    transport: Transport,
    conn: Connection,
    read_size: int,
    deliver: Callable[[list[Event]], None],
    at_eof: Callable[[], None],
) -> None:
    """Feed everything ``transport`` brings to ``conn``, ``read_size`` bytes at most per
    read, handing the events of each read to ``deliver``, until EOF (then ``at_eof()``)
    or a violation. Raises :class:`trio.BrokenResourceError` or
    :class:`trio.ClosedResourceError` when the transport fails. (A socket that
    :func:`socket_reader` takes is read by :meth:`SocketReader.run` instead.)"""
    if isinstance(transport, MessageTransport):
        await _read_messages(transport, conn, deliver, at_eof)
    elif isinstance(transport, trio.SocketStream):
        await _recv_socket(transport.socket, conn, read_size, deliver, at_eof)
    else:
        await _read_stream(transport, conn, read_size, deliver, at_eof)


class SocketReader:
    """The reader task of a socket: reads into a connection with plain non-blocking
    ``readv`` calls, yielding once per read: it waits for readability after a read that
    left room in the buffer (the socket is then most likely empty) and passes a
    checkpoint after one that filled it. trio's ``recv_into`` yields after every read
    *and* tries a read before waiting: in a round trip that is one scheduler pass and
    one failed ``recvfrom`` more per message on each side (measured on a socketpair
    echo: 4 trio passes per round trip in the parent before, 2 after).

    After a large frame (:attr:`Connection.large_next`) it reads the next frame's head
    alone and, for a large ``bytes`` message, the message straight into its own
    ``bytes`` (see :meth:`_read_large`), passing a checkpoint once ``size`` bytes came in
    that way (measured, receiving process against a C-speed sender: CPU per 128 KiB
    message 36-41 -> 22-26 us, per 256 KiB 46-55 -> 32-34 us)."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        conn: Connection,
        size: int,
        deliver: Callable[[list[Event]], None],
        at_eof: Callable[[], None],
    ) -> None:
        self._sock = sock
        self._conn = conn
        self._size = size
        self._deliver = deliver
        self._at_eof = at_eof
        self._eof = False

    async def run(self) -> None:
        """Read until EOF or a violation. Raises :class:`trio.BrokenResourceError` or
        :class:`trio.ClosedResourceError` when the socket fails."""
        conn = self._conn
        deliver = self._deliver
        sock = self._sock
        size = self._size
        readv = os.readv
        wait_readable = trio.lowlevel.wait_readable
        unyielded = 0
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if conn.large_next:
                # Maybe another large message: its head alone, then the message itself
                # straight into its own bytes. A checkpoint once a read's worth came in.
                count = self._read_large(sock)
                if count > 0:
                    unyielded += count
                    if unyielded >= size:
                        unyielded = 0
                        await trio.lowlevel.checkpoint()
                elif count < 0:
                    unyielded = 0
                    await wait_readable(sock)
                elif self._eof or conn.failure is not None:
                    return
                continue
            with conn.receive_buffer(size) as target:
                room = len(target)
                try:
                    # fileno() each time: -1 once the socket is closed (a stale number
                    # could meanwhile name another descriptor).
                    count = readv(sock.fileno(), (target,))
                except BlockingIOError:
                    count = -1
                except OSError as exc:
                    raise _stream_error(exc) from exc
            if count < 0:
                await wait_readable(sock)
                continue
            if not count:
                deliver(conn.receive_eof())
                self._at_eof()
                return
            events = conn.receive_filled(count)
            if events:
                deliver(events)
                if conn.failure is not None:
                    return
            if count < room:
                await wait_readable(sock)
            else:
                await trio.lowlevel.checkpoint()

    def _read_large(self, sock: trio.socket.SocketType) -> int:
        """One read of a frame's head and, if it is a large ``bytes`` message that
        :meth:`Connection.large_bytes_size` accepts, of that message, into a ``bytes``
        of its own (``os.read``: the only copy). Returns the bytes of the message read
        whole that way, or 0 when the head and whatever arrived were reported as usual
        (then also at EOF, with ``_eof`` set, and after a violation), or -1 when nothing
        could be read (wait for readability)."""
        conn = self._conn
        with conn.receive_buffer(LARGE_HEAD) as target:
            try:
                count = os.readv(sock.fileno(), (target[:LARGE_HEAD],))
            except BlockingIOError:
                return -1
            except OSError as exc:
                raise _stream_error(exc) from exc
            size = conn.large_bytes_size(target) if count == LARGE_HEAD else 0
        if not count:
            self._end()
            return 0
        data = b""
        if size and _queued(sock) >= size:
            try:
                data = os.read(sock.fileno(), size)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _stream_error(exc) from exc
            if len(data) == size:
                self._deliver(conn.receive_large_bytes(data))
                return size
        events = conn.receive_filled(count)
        if data and conn.failure is None:
            events += conn.receive_data(data)  # a part: copied, as any read
        if events:
            self._deliver(events)
        return 0

    def _end(self) -> None:
        self._eof = True
        self._deliver(self._conn.receive_eof())
        self._at_eof()


def _queued(sock: trio.socket.SocketType) -> int:
    """Bytes ready to be read from ``sock`` (``FIONREAD``; 0 if that cannot be told).
    A large message is read straight only when all of it is there: a part would be
    copied into the receive buffer once more (measured on a Unix socket, 1 MiB
    messages: half of them arrived in parts)."""
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, _INT), sys.byteorder)
    except (OSError, NameError):
        return 0


def socket_reader(
    transport: Transport,
    conn: Connection,
    read_size: int,
    deliver: Callable[[list[Event]], None],
    at_eof: Callable[[], None],
) -> SocketReader | None:
    """The :class:`SocketReader` for ``transport``, if it is a socket this platform can
    read with ``readv``."""
    if isinstance(transport, trio.SocketStream) and hasattr(os, "readv"):
        return SocketReader(transport.socket, conn, read_size, deliver, at_eof)
    return None


async def _read_stream(
    stream: trio.abc.Stream,
    conn: Connection,
    size: int,
    deliver: Callable[[list[Event]], None],
    at_eof: Callable[[], None],
) -> None:
    receive_some = stream.receive_some
    while True:
        data = await receive_some(size)
        if not data:
            deliver(conn.receive_eof())
            at_eof()
            return
        events = conn.receive_data(data)
        if events:
            deliver(events)
            if conn.failure is not None:
                return


async def _recv_socket(
    sock: trio.socket.SocketType,
    conn: Connection,
    size: int,
    deliver: Callable[[list[Event]], None],
    at_eof: Callable[[], None],
) -> None:
    """Like :func:`_read_stream`, reading straight into the connection's buffer with
    trio's ``recv_into`` (where :class:`SocketReader` cannot: no ``readv``)."""
    while True:
        with conn.receive_buffer(size) as target:
            try:
                count = await sock.recv_into(target)
            except OSError as exc:
                raise _stream_error(exc) from exc
        if not count:
            deliver(conn.receive_eof())
            at_eof()
            return
        events = conn.receive_filled(count)
        if events:
            deliver(events)
            if conn.failure is not None:
                return


async def _read_messages(
    transport: MessageTransport,
    conn: Connection,
    deliver: Callable[[list[Event]], None],
    at_eof: Callable[[], None],
) -> None:
    while True:
        try:
            frame = await transport.receive_message()
        except ProtocolError as exc:
            deliver(conn.reject(str(exc), exc.kind))
            return
        if frame is None:
            at_eof()
            return
        events = conn.receive_frame(frame)
        if events:
            deliver(events)
            if conn.failure is not None:
                return


# -- writing --------------------------------------------------------------------------


def writes_for(transport: Transport, conn: Connection) -> Writes:
    """How a writer takes what ``conn`` has ready and puts it on ``transport``: one
    message per frame on a :class:`MessageTransport`; otherwise one write, vectored on a
    socket when a large message travels by reference (no copy), else joined."""
    if isinstance(transport, MessageTransport):
        send_message = transport.send_message

        async def send_frames(frames: Pieces) -> None:
            for frame in frames:  # bytes: a MessageTransport never gets a tail back
                await send_message(bytes(frame))

        return conn.frames_to_send, send_frames
    send_all = transport.send_all
    sock = transport.socket if isinstance(transport, trio.SocketStream) else None

    async def send_pieces(pieces: Pieces) -> None:
        if len(pieces) == 1:
            await send_all(pieces[0])
        elif sock is not None and max(map(len, pieces)) >= _VECTORED_MIN:
            await _send_vectored(sock, pieces)
        else:
            await send_all(b"".join(pieces))

    return conn.data_to_send_pieces, send_pieces


async def _send_vectored(sock: trio.socket.SocketType, pieces: Pieces) -> None:
    """Write all of ``pieces`` to ``sock`` with ``sendmsg`` (scatter-gather), with the
    errors :meth:`trio.SocketStream.send_all` would raise."""
    views = [memoryview(p) for p in pieces]
    i = 0
    try:
        while i < len(views):
            sent = await sock.sendmsg(views[i : i + IOV_MAX])
            while sent:
                size = len(views[i])
                if sent < size:
                    views[i] = views[i][sent:]
                    break
                sent -= size
                i += 1
    except OSError as exc:
        raise _stream_error(exc) from exc


def direct_socket(transport: Transport) -> trio.socket.SocketType | None:
    """The socket under ``transport`` that :func:`write_some` can write to, if any."""
    if isinstance(transport, trio.SocketStream) and hasattr(os, "writev"):
        return transport.socket
    return None


def write_some(sock: trio.socket.SocketType, pieces: Pieces) -> int:
    """Write what ``sock`` takes of ``pieces`` right now, without waiting; the number of
    bytes written (0 on an error, which the next waiting write meets again)."""
    try:
        return os.writev(sock.fileno(), pieces[:IOV_MAX])
    except OSError:
        return 0
