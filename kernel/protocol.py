"""pipekit/1: the wire protocol as one I/O-free state machine.

Feed received bytes to :meth:`Connection.receive_data` and get :class:`Event` objects
back; call :meth:`~Connection.send`, :meth:`~Connection.end`, :meth:`~Connection.fail`,
:meth:`~Connection.ping` and :meth:`~Connection.consumed`, then write whatever
:meth:`~Connection.data_to_send` returns. Nothing here does I/O, imports trio or keeps a
clock; every adapter drives this same machine, so framing, the handshake and flow
control live in exactly one place. ``docs/protocol.md`` is the normative description.

Frame = 8-byte big-endian header (u32 payload length, u16 type, u16 flags) + payload.
"""

from __future__ import annotations

import hmac
import json
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .codecs import CODEC_NAMES, Codec, get_codec
from .errors import FlowControlError, ProtocolError

__all__ = [
    "DEFAULT_COALESCE_BYTES",
    "DEFAULT_HIGH_WATER",
    "DEFAULT_HIGH_WATER_BYTES",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_PAUSE_SLACK",
    "FLAG_JSON",
    "HEADER",
    "HEADER_SIZE",
    "HELLO_MAX_FRAME",
    "PROTOCOL",
    "Connection",
    "EndReceived",
    "ErrorReceived",
    "Event",
    "FrameType",
    "HandshakeComplete",
    "MessagesReceived",
    "PauseReceived",
    "PingReceived",
    "PongReceived",
    "ProtocolViolation",
    "ResumeReceived",
    "encode_frame",
]

PROTOCOL = "pipekit/1"
HEADER = struct.Struct(">IHH")
HEADER_SIZE = HEADER.size
FLAG_JSON = 0x0001
DEFAULT_MAX_FRAME = 8 * 1024 * 1024
"""Largest payload accepted by default (8 MiB); one message must fit in one frame."""
HELLO_MAX_FRAME = 64 * 1024
"""Largest frame accepted before the handshake completes."""
DEFAULT_HIGH_WATER = 8192
"""Buffered incoming messages at which PAUSE is sent (RESUME at half of it)."""
DEFAULT_HIGH_WATER_BYTES = 16 * 1024 * 1024
"""Buffered incoming DATA payload bytes at which PAUSE is sent (RESUME at half of it)."""
DEFAULT_PAUSE_SLACK = 16 * 1024 * 1024
"""DATA bytes a peer may still deliver after our PAUSE (what was in flight) before it
is disconnected for violating flow control."""
DEFAULT_COALESCE_BYTES = 64 * 1024
"""Queued messages are coalesced into DATA frames of about this size."""
_MAX_U32 = 0xFFFFFFFF
_READ_SIZE = 256 * 1024
"""Default room offered by :meth:`Connection.receive_buffer`."""
_INBUF_KEEP = 4 * 1024 * 1024
"""An empty receive buffer larger than this is given back (after a huge frame)."""


class FrameType(IntEnum):
    DATA = 1
    END = 2
    ERROR = 3
    PING = 4
    PONG = 5
    PAUSE = 6
    RESUME = 7
    HELLO = 8


_TYPES = frozenset(int(t) for t in FrameType)


def encode_frame(ftype: FrameType | int, payload: bytes = b"", *, json_flag: bool = False) -> bytes:
    """Return one complete frame: header + ``payload``."""
    if len(payload) > _MAX_U32:
        raise ProtocolError(f"payload of {len(payload)} bytes cannot be framed", kind="oversize")
    return HEADER.pack(len(payload), int(ftype), FLAG_JSON if json_flag else 0) + payload


def _json_frame(ftype: FrameType, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return encode_frame(ftype, payload, json_flag=True)


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything :meth:`Connection.receive_data` reports."""


@dataclass(frozen=True, slots=True)
class HandshakeComplete(Event):
    """Both HELLOs are exchanged; DATA may flow. ``peer`` is the peer's HELLO."""

    peer: dict[str, Any]
    codec: str


@dataclass(frozen=True, slots=True)
class MessagesReceived(Event):
    """One or more messages, in order, from one or more DATA frames."""

    messages: list[Any]


@dataclass(frozen=True, slots=True)
class EndReceived(Event):
    """The peer sent END: no more DATA will arrive."""


@dataclass(frozen=True, slots=True)
class ErrorReceived(Event):
    """The peer sent ERROR: its direction ended with a failure."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer sent PING; the PONG echo is already queued."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class PongReceived(Event):
    payload: bytes


@dataclass(frozen=True, slots=True)
class PauseReceived(Event):
    """The peer asked us to stop sending DATA until it sends RESUME."""


@dataclass(frozen=True, slots=True)
class ResumeReceived(Event):
    """The peer lifted its PAUSE."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation(Event):
    """The received bytes broke the protocol. Always the last event: an ERROR frame with
    the reason is queued, both directions are failed, and the transport should be closed
    once :meth:`Connection.data_to_send` is written."""

    error: ProtocolError


# --- the machine --------------------------------------------------------------------


class _Direction:
    OPEN = "open"
    ENDED = "ended"
    FAILED = "failed"


class Connection:
    """One end of a pipekit/1 connection.

    ``initiator`` is the side that connects or spawns: it sends the first HELLO (queued
    on construction) offering ``codecs`` in preference order; the accepting side answers
    with the first of those it also supports. ``max_frame`` is the largest payload this
    side accepts; ``high_water``/``low_water`` are its receive watermarks in messages and
    ``high_water_bytes``/``low_water_bytes`` in DATA payload bytes (PAUSE once either
    high mark is reached, RESUME once both low marks are; the byte marks are local and
    not announced).
    ``token`` is sent in HELLO by an initiator; an acceptor with ``expected_token``
    refuses a HELLO whose token differs (constant-time comparison).
    """

    def __init__(
        self,
        *,
        initiator: bool,
        codecs: Sequence[str] = CODEC_NAMES,
        name: str | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int | None = None,
        high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
        low_water_bytes: int | None = None,
        pause_slack: int = DEFAULT_PAUSE_SLACK,
        coalesce_bytes: int = DEFAULT_COALESCE_BYTES,
        token: str | None = None,
        expected_token: str | None = None,
    ) -> None:
        unknown = [c for c in codecs if c not in CODEC_NAMES]
        if not codecs or unknown:
            raise ValueError(f"codecs must be a non-empty subset of {CODEC_NAMES}, got {codecs!r}")
        if not 1024 <= max_frame <= _MAX_U32:
            raise ValueError("max_frame must be between 1024 and 2**32-1")
        if high_water < 1:
            raise ValueError("high_water must be at least 1")
        low = high_water // 2 if low_water is None else low_water
        if not 0 <= low < high_water:
            raise ValueError("low_water must be in [0, high_water)")
        if high_water_bytes < 1:
            raise ValueError("high_water_bytes must be at least 1")
        low_bytes = high_water_bytes // 2 if low_water_bytes is None else low_water_bytes
        if not 0 <= low_bytes < high_water_bytes:
            raise ValueError("low_water_bytes must be in [0, high_water_bytes)")
        self.initiator = initiator
        self.codecs = tuple(codecs)
        self.name = name or ("initiator" if initiator else "acceptor")
        self.max_frame = max_frame
        self.high_water = high_water
        self.low_water = low
        self.high_water_bytes = high_water_bytes
        self.low_water_bytes = low_bytes
        self.pause_slack = pause_slack
        self.coalesce_bytes = max(1, coalesce_bytes)
        self.expected_token = expected_token

        self.codec: Codec | None = None
        self.peer: dict[str, Any] | None = None
        self.peer_max_frame = HELLO_MAX_FRAME
        self.send_state = _Direction.OPEN
        self.receive_state = _Direction.OPEN
        self.failure: ProtocolError | None = None

        # Flow control, receive side: messages handed to the application and not yet
        # consumed (and their DATA payload bytes: [messages, bytes] per DATA frame, oldest
        # first, a frame's bytes released in proportion as its messages are consumed),
        # whether we have paused the peer, DATA bytes seen since that PAUSE.
        self.unconsumed = 0
        self.unconsumed_bytes = 0
        self._unconsumed_frames: deque[list[int]] = deque()
        self.paused_peer = False
        self._bytes_since_pause = 0
        # Flow control, send side: the peer has paused us.
        self.peer_paused = False

        # Outgoing: control frames jump the queue; the ordered stream (DATA, END,
        # ERROR) waits while the peer has paused us. Messages are framed lazily so that
        # everything queued between two writes is coalesced.
        self._control: list[bytes] = []
        # Each ordered frame is a tuple of pieces that make it up when joined: one piece,
        # or a head and a large bytes message that is never copied (see send()).
        self._stream: list[tuple[bytes, ...]] = []
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._stream_size = 0
        # What a byte-stream transport left of its last write (see unwritten()): it goes
        # out before anything else, PAUSE or not, since it may end a frame under way.
        self._unwritten: list[bytes | memoryview] = []
        self._unwritten_size = 0

        # Incoming: chunks not yet parsed, and bytes needed before parsing is useful.
        # Incoming: bytes received and not yet parsed are _inbuf[_start:_end]. Parsing is
        # worth trying once _need of them are there (a header, or the whole frame under
        # way). Transports read straight into the buffer (receive_buffer/receive_filled).
        self._inbuf = bytearray()
        self._start = 0
        self._end = 0
        self._need = HEADER_SIZE

        # Statistics.
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0

        if initiator:
            hello: dict[str, Any] = {
                "protocol": PROTOCOL,
                "codecs": list(self.codecs),
                "name": self.name,
                "max_frame": max_frame,
                "high_water": high_water,
            }
            if token is not None:
                hello["token"] = token
            self._control.append(_json_frame(FrameType.HELLO, hello))

    # -- state ------------------------------------------------------------------------

    @property
    def handshake_complete(self) -> bool:
        return self.codec is not None

    @property
    def codec_name(self) -> str | None:
        return self.codec.name if self.codec is not None else None

    @property
    def buffered_bytes(self) -> int:
        """Outgoing bytes queued and not yet taken by :meth:`data_to_send`."""
        return (
            self._unwritten_size
            + self._pending_size
            + self._stream_size
            + sum(len(f) for f in self._control)
        )

    @property
    def has_data_to_send(self) -> bool:
        """True when :meth:`data_to_send` may return something (control frames, or
        DATA/END/ERROR queued, possibly held back by the peer's PAUSE)."""
        return bool(self._unwritten or self._control or self._stream or self._pending)

    @property
    def can_send(self) -> bool:
        """True when :meth:`send` would put DATA on the wire without waiting."""
        return (
            self.handshake_complete and self.send_state == _Direction.OPEN and not self.peer_paused
        )

    # -- outgoing ---------------------------------------------------------------------

    def _check_sendable(self) -> None:
        if self.codec is None:
            raise ProtocolError("cannot send DATA before the handshake completes", kind="state")
        if self.send_state != _Direction.OPEN:
            raise ProtocolError(
                f"cannot send DATA: this direction is {self.send_state}", kind="state"
            )

    def _check_size(self, size: int) -> None:
        if size > self.peer_max_frame:
            raise ProtocolError(
                f"message of {size} bytes exceeds the peer's max frame "
                f"of {self.peer_max_frame} bytes",
                kind="oversize",
            )

    def send(self, message: Any) -> None:
        """Queue one message. Raises :class:`ProtocolError` (kind ``oversize``) if its
        encoding exceeds the peer's max frame; nothing is queued then.

        A large ``bytes`` message goes in a DATA frame of its own, by reference: the
        object is handed to the transport as it is (see :meth:`data_to_send_pieces`)."""
        self._check_sendable()
        assert self.codec is not None
        if type(message) is bytes and len(message) >= self.coalesce_bytes:
            prefix = self.codec.bytes_prefix(len(message))
            if prefix is not None:
                self._send_by_reference(prefix, message)
                return
        encoded = self.codec.encode(message)
        self._check_size(len(encoded))
        self._pending.append(encoded)
        self._pending_size += len(encoded)
        self.messages_sent += 1

    def _send_by_reference(self, prefix: bytes, message: bytes) -> None:
        size = len(prefix) + len(message)
        self._check_size(size)
        self._frame_pending()  # what was queued before goes first
        self._stream.append((HEADER.pack(size, 1, 0) + prefix, message))
        self._stream_size += HEADER_SIZE + size
        self.messages_sent += 1

    def send_many(self, messages: Iterable[Any]) -> None:
        """Queue several messages; all or none are queued."""
        self._check_sendable()
        assert self.codec is not None
        encode = self.codec.encode
        encoded = [encode(m) for m in messages]
        limit = self.peer_max_frame
        total = 0
        for e in encoded:
            if len(e) > limit:
                self._check_size(len(e))
            total += len(e)
        self._pending.extend(encoded)
        self._pending_size += total
        self.messages_sent += len(encoded)

    def _frame_pending(self) -> None:
        """Move queued messages into DATA frames of about ``coalesce_bytes`` each."""
        if not self._pending:
            return
        target = min(self.coalesce_bytes, self.peer_max_frame)
        pending = self._pending
        frames = self._stream
        # msgpack and CBOR are self-delimiting; JSON messages are separated by b"\n".
        sep = b"\n" if self.codec is not None and self.codec.name == "json" else b""
        start = 0
        size = 0
        pack = HEADER.pack
        for i, enc in enumerate(pending):
            if i > start and size + len(sep) + len(enc) > target:
                frames.append((pack(size, 1, 0) + sep.join(pending[start:i]),))
                self._stream_size += size + HEADER_SIZE
                start, size = i, 0
            size += len(enc) + (len(sep) if i > start else 0)
        frames.append((pack(size, 1, 0) + sep.join(pending[start:]),))
        self._stream_size += size + HEADER_SIZE
        self._pending = []
        self._pending_size = 0

    def end(self) -> None:
        """Queue END after everything already sent: no more DATA from this side."""
        if self.send_state != _Direction.OPEN:
            raise ProtocolError(f"cannot END: this direction is {self.send_state}", kind="state")
        self._frame_pending()
        self._stream.append((encode_frame(FrameType.END),))
        self._stream_size += HEADER_SIZE
        self.send_state = _Direction.ENDED

    def fail(self, kind: str, message: str, **details: Any) -> None:
        """Queue ERROR ``{kind, message, **details}`` after everything already sent.

        Ends this direction with a failure. A no-op if the direction is already closed."""
        if self.send_state != _Direction.OPEN:
            return
        self._frame_pending()
        frame = _json_frame(FrameType.ERROR, {"kind": kind, "message": message, **details})
        self._stream.append((frame,))
        self._stream_size += len(frame)
        self.send_state = _Direction.FAILED

    def ping(self, payload: bytes = b"") -> None:
        self._control.append(encode_frame(FrameType.PING, payload))

    def consumed(self, count: int = 1) -> bool:
        """Tell the machine the application took ``count`` received messages (the oldest
        ones); queues RESUME once the backlog falls to both low-water marks. Returns True
        if it did."""
        self.unconsumed -= count
        frames = self._unconsumed_frames
        while count > 0 and frames:
            frame = frames[0]
            if frame[0] <= count:
                count -= frame[0]
                self.unconsumed_bytes -= frame[1]
                frames.popleft()
            else:
                share = frame[1] * count // frame[0]
                frame[0] -= count
                frame[1] -= share
                self.unconsumed_bytes -= share
                count = 0
        if (
            self.paused_peer
            and self.unconsumed <= self.low_water
            and self.unconsumed_bytes <= self.low_water_bytes
        ):
            self.paused_peer = False
            if self.receive_state == _Direction.OPEN:
                self._control.append(encode_frame(FrameType.RESUME))
                return True
        return False

    def data_to_send(self) -> bytes:
        """Return (and forget) every byte ready for the wire.

        While the peer has paused us only control frames are returned; DATA and what is
        queued behind it (END, ERROR) wait for RESUME."""
        pieces = self.data_to_send_pieces()
        if not pieces:
            return b""
        if len(pieces) == 1 and type(pieces[0]) is bytes:
            return pieces[0]
        return b"".join(pieces)

    def data_to_send_pieces(self) -> list[bytes | memoryview]:
        """Like :meth:`data_to_send`, without joining: the bytes ready for the wire are
        these pieces in order (a large ``bytes`` message is one of them, uncopied), for
        transports with vectored writes."""
        pieces = self._unwritten
        self._unwritten = []
        self._unwritten_size = 0
        for frame in self._take_frames():
            pieces.extend(frame)
        self.bytes_sent += sum(map(len, pieces))
        return pieces

    def unwritten(self, pieces: Sequence[bytes | memoryview], written: int) -> None:
        """Tell the machine that the transport wrote only the first ``written`` bytes of
        ``pieces`` (what :meth:`data_to_send_pieces` last returned). The rest is returned
        first by the next call, before control frames and whether or not the peer has
        paused us: the bytes on the wire must not stop in the middle of a frame."""
        rest: list[bytes | memoryview] = []
        skip = written
        for piece in pieces:
            size = len(piece)
            if skip >= size:
                skip -= size
                continue
            rest.append(memoryview(piece)[skip:] if skip else piece)
            skip = 0
        if skip:
            raise ValueError(f"written={written} exceeds the {written - skip} bytes given")
        size = sum(map(len, rest))
        self._unwritten[:0] = rest
        self._unwritten_size += size
        self.bytes_sent -= size

    def frames_to_send(self) -> list[bytes]:
        """Like :meth:`data_to_send`, but one ``bytes`` per frame, for transports that
        carry one frame per message (WebSocket)."""
        assert not self._unwritten, "unwritten() is for byte-stream transports"
        frames = [f[0] if len(f) == 1 else b"".join(f) for f in self._take_frames()]
        self.bytes_sent += sum(map(len, frames))
        return frames

    def _take_frames(self) -> list[tuple[bytes, ...]]:
        if self.codec is None and not self.initiator:
            # An acceptor's first frame is its HELLO answer (or the ERROR refusing the
            # handshake): nothing queued before the handshake may precede it.
            if self.failure is None and self.send_state != _Direction.FAILED:
                return []
            self._control = []
        frames: list[tuple[bytes, ...]] = [(frame,) for frame in self._control]
        self._control = []
        if not self.peer_paused or self.failure is not None:
            self._frame_pending()
            if self._stream:
                frames.extend(self._stream)
                self._stream = []
                self._stream_size = 0
        return frames

    # -- incoming ---------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes read from the transport; return the events they complete.

        Never raises for bad input: a violation is reported as a final
        :class:`ProtocolViolation` event (with an ERROR frame queued for the peer)."""
        if self.failure is not None:
            return [ProtocolViolation(self.failure)]
        count = len(data)
        if not count:
            return []
        self._room(count)[:count] = data
        return self.receive_filled(count)

    def receive_buffer(self, size: int = _READ_SIZE) -> memoryview:
        """A writable view for the transport to read into (``recv_into``); then report
        how many bytes it read with :meth:`receive_filled`. Valid until the next call of
        either method.

        The view has room for ``size`` bytes, or for the rest of the frame under way if
        that is more, so a large frame is read in place. While a frame larger than
        ``size // 2`` is under way, the view ends where that frame ends: the next frame
        then starts at the front of the buffer, and the partial frame is never moved."""
        held = self._end - self._start
        rest = self._need - held
        if held and rest > 0 and self._need > size // 2:
            return self._room(rest)[:rest]
        return self._room(size)

    def _room(self, size: int) -> memoryview:
        """The free end of the receive buffer, made at least ``size`` bytes long and long
        enough for the rest of the frame under way."""
        held = self._end - self._start
        want = max(size, self._need - held)
        if len(self._inbuf) - self._end < want:
            self._make_room(held, want)
        elif not held and len(self._inbuf) > _INBUF_KEEP and want <= _INBUF_KEEP:
            self._inbuf = bytearray(_INBUF_KEEP)  # give back what a huge frame needed
            self._start = self._end = 0
        return memoryview(self._inbuf)[self._end :]

    def _make_room(self, held: int, want: int) -> None:
        buf = self._inbuf
        if held <= self._start and len(buf) - held >= want:
            # Move the unparsed tail to the front (the two regions do not overlap).
            view = memoryview(buf)
            view[:held] = view[self._start : self._end]
        else:
            size = held + want
            if size > len(buf):
                size = max(size, 2 * len(buf))  # grow geometrically
            bigger = bytearray(size)
            bigger[:held] = memoryview(buf)[self._start : self._end]
            self._inbuf = bigger
        self._start, self._end = 0, held

    def receive_filled(self, count: int) -> list[Event]:
        """``count`` bytes were read into the view :meth:`receive_buffer` returned;
        return the events they complete (as :meth:`receive_data`)."""
        if self.failure is not None:
            return [ProtocolViolation(self.failure)]
        if count <= 0:
            return []
        self.bytes_received += count
        self._end += count
        if self._end - self._start < self._need:
            return []
        buf = self._inbuf
        # msgpack DATA payloads are decoded straight from a view of the buffer (msgpack
        # copies what it keeps); every other payload is its own bytes object.
        views = self.codec is not None and self.codec.name == "msgpack"
        view = memoryview(buf)
        events: list[Event] = []
        pos = self._start
        end_of_buf = self._end
        unpack_from = HEADER.unpack_from
        try:
            while end_of_buf - pos >= HEADER_SIZE:
                length, ftype, flags = unpack_from(buf, pos)
                self._check_header(length, ftype, flags)
                frame_end = pos + HEADER_SIZE + length
                if frame_end > end_of_buf:
                    self._need = HEADER_SIZE + length
                    break
                if views and ftype == 1 and not flags:
                    payload: bytes | memoryview = view[pos + HEADER_SIZE : frame_end]
                else:
                    payload = bytes(view[pos + HEADER_SIZE : frame_end])
                pos = frame_end
                self._handle(ftype, flags, payload, events)
            else:
                self._need = HEADER_SIZE
        except ProtocolError as exc:
            self._violate(exc)
            events.append(ProtocolViolation(exc))
            self._start = self._end = 0
            return events
        if pos == end_of_buf:
            self._start = self._end = 0
        else:
            self._start = pos
        return events

    def receive_frame(self, frame: bytes | bytearray | memoryview) -> list[Event]:
        """Feed one whole frame, for transports that carry one frame per message
        (WebSocket). A message that is not exactly one frame is malformed."""
        if self.failure is None and self._end == self._start:
            size = len(frame)
            length = HEADER.unpack_from(frame)[0] if size >= HEADER_SIZE else -1
            # An oversize length is left to receive_data, which reports it as such.
            if size != HEADER_SIZE + length and length <= self.max_frame:
                return self.reject(
                    f"a transport message must hold exactly one frame (got {size} bytes)"
                )
        return self.receive_data(frame)

    def reject(self, message: str, kind: str = "malformed") -> list[Event]:
        """Report input the transport found invalid (for example a text WebSocket
        message): queues ERROR ``{kind, message}`` for the peer, fails the connection and
        returns the :class:`ProtocolViolation` event."""
        if self.failure is not None:
            return [ProtocolViolation(self.failure)]
        exc = ProtocolError(message, kind=kind)
        self._violate(exc)
        return [ProtocolViolation(exc)]

    def receive_eof(self) -> list[Event]:
        """The transport closed. Returns a :class:`ProtocolViolation` if that cut a
        frame in half, otherwise nothing: an EOF without END (or before the handshake)
        is a broken connection, which the adapter reports as such."""
        if self.failure is not None:
            return []
        held = self._end - self._start
        if held:
            exc = ProtocolError(
                f"connection closed inside a frame ({held} bytes of an incomplete frame)",
                kind="malformed",
            )
            self._violate(exc)
            return [ProtocolViolation(exc)]
        return []

    def _check_header(self, length: int, ftype: int, flags: int) -> None:
        if flags & ~FLAG_JSON:
            raise ProtocolError(f"reserved flag bits set (flags=0x{flags:04x})", kind="malformed")
        if ftype not in _TYPES:
            raise ProtocolError(f"unknown frame type {ftype}", kind="malformed")
        limit = self.max_frame if self.codec is not None else min(self.max_frame, HELLO_MAX_FRAME)
        if length > limit:
            raise ProtocolError(
                f"frame of {length} bytes exceeds the max frame of {limit} bytes", kind="oversize"
            )

    def _handle(
        self, ftype: int, flags: int, payload: bytes | memoryview, events: list[Event]
    ) -> None:
        if ftype == 1:  # DATA: the hot path
            if self.codec is None:
                raise ProtocolError("DATA before the handshake completed", kind="malformed")
            if self.receive_state != _Direction.OPEN:
                raise ProtocolError(f"DATA after {self.receive_state.upper()}", kind="malformed")
            if self.paused_peer:
                self._bytes_since_pause += len(payload)
                if self._bytes_since_pause > self.pause_slack:
                    raise FlowControlError(
                        "flow control violated: peer sent "
                        f"{self._bytes_since_pause} bytes of DATA after PAUSE "
                        f"(allowed {self.pause_slack})"
                    )
            codec = get_codec("json") if flags & FLAG_JSON else self.codec
            messages = codec.decode_many(payload)
            if not messages:
                return
            count = len(messages)
            size = len(payload)
            self.messages_received += count
            self.unconsumed += count
            self.unconsumed_bytes += size
            self._unconsumed_frames.append([count, size])
            if events and type(events[-1]) is MessagesReceived:
                events[-1].messages.extend(messages)
            else:
                events.append(MessagesReceived(messages))
            if not self.paused_peer and (
                self.unconsumed >= self.high_water or self.unconsumed_bytes >= self.high_water_bytes
            ):
                self.paused_peer = True
                self._bytes_since_pause = 0
                self._control.append(encode_frame(FrameType.PAUSE))
            return
        ftype = FrameType(ftype)
        payload = bytes(payload)  # already bytes: only large DATA payloads are views
        if ftype == FrameType.HELLO:
            self._handle_hello(flags, payload, events)
            return
        if ftype == FrameType.ERROR:
            body = self._json_payload(ftype, flags, payload)
            if self.receive_state != _Direction.OPEN:
                raise ProtocolError(f"ERROR after {self.receive_state.upper()}", kind="malformed")
            kind = body.pop("kind", None)
            message = body.pop("message", None)
            if not isinstance(kind, str) or not isinstance(message, str):
                raise ProtocolError(
                    "ERROR payload needs string fields kind and message", kind="malformed"
                )
            self.receive_state = _Direction.FAILED
            events.append(ErrorReceived(kind, message, body))
            return
        if self.codec is None:
            raise ProtocolError(f"{ftype.name} before the handshake completed", kind="malformed")
        if ftype == FrameType.PING:
            self._control.append(encode_frame(FrameType.PONG, payload))
            events.append(PingReceived(payload))
        elif ftype == FrameType.PONG:
            events.append(PongReceived(payload))
        else:
            if payload:
                raise ProtocolError(
                    f"{ftype.name} frame must have an empty payload", kind="malformed"
                )
            if ftype == FrameType.END:
                if self.receive_state != _Direction.OPEN:
                    raise ProtocolError(f"END after {self.receive_state.upper()}", kind="malformed")
                self.receive_state = _Direction.ENDED
                events.append(EndReceived())
            elif ftype == FrameType.PAUSE:
                self.peer_paused = True
                events.append(PauseReceived())
            else:  # RESUME
                self.peer_paused = False
                events.append(ResumeReceived())

    def _json_payload(self, ftype: FrameType, flags: int, payload: bytes) -> dict[str, Any]:
        if not flags & FLAG_JSON:
            raise ProtocolError(f"{ftype.name} payload must carry the JSON flag", kind="malformed")
        try:
            body = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
            raise ProtocolError(
                f"{ftype.name} payload is not valid JSON: {exc}", kind="malformed"
            ) from exc
        if not isinstance(body, dict):
            raise ProtocolError(f"{ftype.name} payload must be a JSON object", kind="malformed")
        return body

    def _handle_hello(self, flags: int, payload: bytes, events: list[Event]) -> None:
        if self.codec is not None:
            raise ProtocolError("HELLO received twice", kind="malformed")
        hello = self._json_payload(FrameType.HELLO, flags, payload)
        protocol = hello.get("protocol")
        if protocol != PROTOCOL:
            raise ProtocolError(
                f"unsupported protocol {protocol!r}; this peer speaks {PROTOCOL}",
                kind="version_mismatch",
            )
        max_frame = hello.get("max_frame")
        high_water = hello.get("high_water")
        if (
            not isinstance(max_frame, int)
            or isinstance(max_frame, bool)
            or not 1024 <= max_frame <= _MAX_U32
        ):
            raise ProtocolError(
                f"HELLO max_frame must be an integer >= 1024, got {max_frame!r}", kind="malformed"
            )
        if not isinstance(high_water, int) or isinstance(high_water, bool) or high_water < 1:
            raise ProtocolError(
                f"HELLO high_water must be a positive integer, got {high_water!r}", kind="malformed"
            )
        if not isinstance(hello.get("name"), str):
            raise ProtocolError("HELLO name must be a string", kind="malformed")
        if self.initiator:
            chosen = hello.get("codec")
            if chosen not in self.codecs:
                raise ProtocolError(
                    f"peer chose codec {chosen!r}, "
                    f"which was not offered ({', '.join(self.codecs)})",
                    kind="codec_mismatch",
                )
        else:
            offered = hello.get("codecs")
            if not isinstance(offered, list) or not all(isinstance(c, str) for c in offered):
                raise ProtocolError("HELLO codecs must be a list of strings", kind="malformed")
            if self.expected_token is not None:
                token = hello.get("token")
                if not isinstance(token, str):
                    raise ProtocolError(
                        "authentication required: HELLO carries no token", kind="auth_failed"
                    )
                # surrogatepass: JSON can carry lone surrogates, which strict UTF-8 refuses.
                if not hmac.compare_digest(
                    token.encode("utf-8", "surrogatepass"),
                    self.expected_token.encode("utf-8", "surrogatepass"),
                ):
                    raise ProtocolError("authentication failed: invalid token", kind="auth_failed")
            chosen = next((c for c in offered if c in self.codecs), None)
            if chosen is None:
                raise ProtocolError(
                    f"no common codec: peer offers {offered!r}, "
                    f"this side supports {list(self.codecs)!r}",
                    kind="codec_mismatch",
                )
            answer = {
                "protocol": PROTOCOL,
                "codec": chosen,
                "name": self.name,
                "max_frame": self.max_frame,
                "high_water": self.high_water,
            }
            self._control.insert(0, _json_frame(FrameType.HELLO, answer))
        hello.pop("token", None)
        self.peer = hello
        self.peer_max_frame = max_frame
        self.codec = get_codec(chosen)
        events.append(HandshakeComplete(hello, chosen))

    def _violate(self, exc: ProtocolError) -> None:
        """Record a violation: queue ERROR for the peer, fail both directions."""
        self.failure = exc
        if self.send_state == _Direction.OPEN:
            # Queued data is dropped: the connection is unusable, and the local sender
            # learns of it from the failure.
            self._pending = []
            self._pending_size = 0
            self._stream = [
                f for f in self._stream if HEADER.unpack_from(f[0])[1] != FrameType.DATA
            ]
            self._stream_size = sum(len(p) for f in self._stream for p in f)
            self.fail(exc.kind, exc.message)
        self.receive_state = _Direction.FAILED
        self.peer_paused = False
