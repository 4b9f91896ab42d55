"""Message codecs: msgpack, CBOR and JSON behind one interface.

A codec turns messages (plain Python values) into bytes and back. ``encode_many`` and
``decode_many`` work on a whole DATA payload (messages back to back; JSON messages are
separated by ``b"\\n"``). ``stream_decoder()`` decodes a byte stream cut at arbitrary
points, for transports without frames (JSON lines, a raw msgpack stream).

Codec instances keep per-connection state (a reusable packer): make one per pipe with
:func:`get_codec`, never share one across threads.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import cbor2
import msgpack

from ._lines import LineSplitter
from .errors import CodecError, ErrorKind, RemoteProtocolError

__all__ = [
    "CODEC_NAMES",
    "MAX_DEPTH",
    "Codec",
    "FrameDecoder",
    "LineSplitter",
    "StreamDecoder",
    "decode_json_lines",
    "get_codec",
    "json_decode",
]


class StreamDecoder(Protocol):
    """Incremental decoder: feed chunks, get every message completed so far."""

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the messages it completed (possibly none).

        Raises :class:`RemoteProtocolError` (kind ``"undecodable"``) on invalid input."""
        ...

    def close(self) -> list[Any]:
        """Declare the stream finished; return a last message that needed no terminator
        (a final JSON line without its newline) and raise :class:`RemoteProtocolError` if a
        message is left incomplete."""
        ...


class FrameDecoder(Protocol):
    """The messages of one DATA payload, taken a slice at a time, so that a payload of
    millions of small messages never has to be decoded (and held) at once. Made by
    :meth:`Codec.frame_decoder`; it keeps its own copy of what it has not decoded."""

    left: int
    """Payload bytes not decoded yet (0 once every message is taken)."""

    def take(self, limit: int) -> list[Any]:
        """The next messages, at most ``limit`` (>= 1) of them: fewer only once the
        payload is used up (``left`` is then 0). Raises :class:`RemoteProtocolError` (kind
        ``"undecodable"``) for invalid bytes or a payload that ends inside a message."""
        ...


class Codec(Protocol):
    """What every codec offers. ``name`` is its HELLO name."""

    name: str

    def encode(self, message: Any) -> bytes: ...

    def encode_many(self, messages: Iterable[Any]) -> bytes: ...

    def bytes_prefix(self, size: int) -> bytes | None:
        """The bytes that, followed by a ``bytes`` message of ``size`` bytes itself, make
        that message's encoding; None if this codec cannot send it that way. Lets a
        sender put large binary messages on the wire without copying them."""
        ...

    def decode_many(self, payload: bytes | memoryview) -> list[Any]:
        """Every message of a DATA payload. Raises :class:`RemoteProtocolError` (kind
        ``"undecodable"``) for anything that is not a whole number of valid messages of
        pipekit/1's data model: no other exception escapes, whatever the bytes."""
        ...

    def frame_decoder(self, payload: bytes | memoryview) -> FrameDecoder:
        """The messages of a DATA payload, to be taken a slice at a time (a copy is kept:
        ``payload`` may be reused once this returns)."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...


MAX_DEPTH = 1024
"""Arrays and maps nested deeper than this are undecodable (msgpack's own limit; CBOR is
held to it; JSON stops at Python's recursion limit, about 900 levels). pipekit/1 asks
every receiver to accept at least 256 levels."""


def _undecodable(codec: str, exc: BaseException | None = None) -> RemoteProtocolError:
    detail = f": {_describe(exc)}" if exc is not None else ""
    return RemoteProtocolError(f"undecodable {codec} payload{detail}", kind=ErrorKind.UNDECODABLE)


def _describe(exc: BaseException) -> str:
    """What went wrong, readably: a library's wrapper message with the cause it wraps."""
    text = str(exc) or type(exc).__name__
    if "max_ext_len" in text:  # how msgpack refuses an extension type (see _MSGPACK)
        return "an extension type (msgpack ext, timestamps included) is not a pipekit/1 value"
    if isinstance(exc, TypeError) and "unhashable" in text:
        return f"a map key must be a string, number, boolean, nil or binary ({text})"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def _unencodable(codec: str, exc: BaseException) -> CodecError:
    return CodecError(f"cannot encode message with {codec}: {exc}")


# --- msgpack ------------------------------------------------------------------------


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not a pipekit/1 value")


_MSGPACK: dict[str, Any] = {
    "raw": False,
    # Map keys may be any hashable value (an array or map key is undecodable: unhashable).
    "strict_map_key": False,
    # Extension types are not pipekit/1 values: an ext of 1+ data bytes is refused by
    # its length (timestamps too, which never reach ext_hook), an empty one by the hook.
    "max_ext_len": 0,
    "ext_hook": _refuse_ext,
}
_NOT_A_MESSAGE = object()


class _MsgpackStreamDecoder:
    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(**_MSGPACK)
        self._fed = 0
        self._used = 0  # end of the last complete message

    def feed(self, data: bytes) -> list[Any]:
        self._fed += len(data)
        self._unpacker.feed(data)
        out: list[Any] = []
        try:
            # tell() also counts the parsed part of an incomplete array or map, so only
            # its value right after a complete message marks a message boundary.
            for message in self._unpacker:
                out.append(message)
                self._used = self._unpacker.tell()
        except Exception as exc:  # whatever the bytes: undecodable, never another error
            raise _undecodable("msgpack", exc) from exc
        return out

    def close(self) -> list[Any]:
        if self._used != self._fed:
            raise _undecodable("msgpack", ValueError("stream ends inside a message"))
        return []


_BIN32 = struct.Struct(">BI")
_CBOR_BYTES32 = struct.Struct(">BI")
_LARGE_BYTES = 64 * 1024


class _MsgpackFrame:
    """A msgpack DATA payload, decoded a slice at a time (see :class:`FrameDecoder`)."""

    __slots__ = ("_first", "_size", "_start", "_unpacker", "left")

    def __init__(self, payload: bytes | memoryview) -> None:
        self._size = self.left = len(payload)
        self._first: list[Any] = []
        self._start = 0  # where the Unpacker's bytes start in the payload
        rest: bytes | memoryview = payload
        if self._size:
            # Decode the first message in place with unpackb: a lone or a large message
            # (the payload is exactly one) needs no Unpacker at all, which is most of the
            # cost of a small frame (measured: 2.6 -> 0.9 us for one 27-byte message);
            # a coalesced frame pays one ExtraData and a copy of its rest (+1% on 2400).
            try:
                self._first = [msgpack.unpackb(payload, **_MSGPACK)]
                self._unpacker = None
                return
            except msgpack.ExtraData as more:  # several messages after all
                self._first = [more.unpacked]
                rest = more.extra
                self._start = self._size - len(rest)
            except Exception as exc:
                raise _undecodable("msgpack", exc) from exc
        self._unpacker = unpacker = msgpack.Unpacker(max_buffer_size=0, **_MSGPACK)
        unpacker.feed(rest)

    def take(self, limit: int) -> list[Any]:
        messages = self._first
        if messages:
            self._first = []
            self.left = self._size - self._start
            if self._unpacker is None:
                self.left = 0
            if len(messages) >= limit or self._unpacker is None:
                return messages
            limit -= len(messages)
        unpacker = self._unpacker
        assert unpacker is not None
        try:
            more = list(itertools.islice(unpacker, limit))
            if len(more) < limit:
                # The payload is used up. Did it end at a message boundary? tell() cannot
                # say (it counts the parsed part of an unfinished array or map), but one
                # more byte can: a nil (0xc0) decodes as exactly None only on its own;
                # inside an unfinished message it becomes part of that message.
                unpacker.feed(b"\xc0")
                if next(unpacker, _NOT_A_MESSAGE) is not None:
                    raise ValueError("payload ends inside a message")
                self.left = 0
            else:  # right after a whole message, tell() is exact
                self.left = self._size - self._start - unpacker.tell()
        except Exception as exc:  # whatever the bytes: undecodable, never another error
            self.left = 0
            raise _undecodable("msgpack", exc) from exc
        if messages:
            messages.extend(more)
            return messages
        return more


class MsgpackCodec:
    """msgpack with binary and text kept apart (``bytes`` <-> bin, ``str`` <-> str)."""

    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)

    def encode(self, message: Any) -> bytes:
        if type(message) is bytes and _LARGE_BYTES <= len(message) <= 0xFFFFFFFF:
            # The same bytes msgpack writes (bin 32), with one copy where Packer makes two.
            return _BIN32.pack(0xC6, len(message)) + message
        try:
            return self._packer.pack(message)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise _unencodable(self.name, exc) from exc

    def bytes_prefix(self, size: int) -> bytes | None:
        return _BIN32.pack(0xC6, size) if _LARGE_BYTES <= size <= 0xFFFFFFFF else None

    def encode_many(self, messages: Iterable[Any]) -> bytes:
        pack = self._packer.pack
        try:
            return b"".join([pack(m) for m in messages])
        except (TypeError, ValueError, OverflowError) as exc:
            self._packer.reset()
            raise _unencodable(self.name, exc) from exc

    def decode_many(self, payload: bytes | memoryview) -> list[Any]:
        return _MsgpackFrame(payload).take(sys.maxsize)

    def frame_decoder(self, payload: bytes | memoryview) -> FrameDecoder:
        return _MsgpackFrame(payload)

    def stream_decoder(self) -> StreamDecoder:
        return _MsgpackStreamDecoder()


# --- CBOR ---------------------------------------------------------------------------

_CBOR_TAGS = frozenset({2, 3, 55799})
"""The CBOR tags pipekit/1 decodes: big integers (2, 3) and the self-describing marker
(55799). Every other tag is refused: dates, decimals, regular expressions, sets, MIME
messages, shared and string references (which build cyclic or exponentially shared
structures) are not pipekit/1 values."""


def _refuse_tag(tag: int) -> Callable[[Any], Any]:
    def refuse(decoder: Any) -> Any:
        raise ValueError(f"CBOR tag {tag} is not a pipekit/1 value (only tags 2 and 3)")

    return refuse


class _CborTagPolicy(dict[int, Callable[[Any], Any]]):
    """cbor2's ``semantic_decoders``: looked up for every tag; a KeyError lets cbor2
    decode a tag itself (big integers), anything else is refused."""

    def __getitem__(self, tag: int) -> Callable[[Any], Any]:
        if tag in _CBOR_TAGS:
            raise KeyError(tag)
        return _refuse_tag(tag)


def _refuse_unknown_tag(decoder: Any, tag: Any) -> Any:
    raise ValueError(f"CBOR tag {tag.tag} is not a pipekit/1 value (only tags 2 and 3)")


_CBOR: dict[str, Any] = {
    "semantic_decoders": _CborTagPolicy(),
    "tag_hook": _refuse_unknown_tag,
    "max_depth": MAX_DEPTH,
    # Map keys are text or byte strings: other keys (numbers, arrays, maps) could be
    # chosen to collide in a hash table and make a map cost quadratic time to build.
    "strict_hashable_types": True,
}


def _cbor_decode_all(buffer: bytes) -> tuple[list[Any], int]:
    """Decode every complete CBOR item at the start of ``buffer``.

    Returns the items and how many bytes they used; stops at an incomplete item."""
    fp = io.BytesIO(buffer)
    decoder = cbor2.CBORDecoder(fp, **_CBOR)
    out: list[Any] = []
    used = 0
    while used < len(buffer):
        try:
            out.append(decoder.decode())
        except cbor2.CBORDecodeEOF:
            break
        except Exception as exc:  # whatever the bytes: undecodable, never another error
            raise _undecodable("cbor", exc) from exc
        used = fp.tell()
    return out, used


class _CborStreamDecoder:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages, used = _cbor_decode_all(self._buffer)
        self._buffer = self._buffer[used:]
        return messages

    def close(self) -> list[Any]:
        if self._buffer:
            raise _undecodable("cbor", ValueError("stream ends inside a message"))
        return []


class _CborFrame:
    """A CBOR DATA payload (a CBOR sequence), decoded a slice at a time."""

    __slots__ = ("_decode", "_fp", "_size", "left")

    def __init__(self, payload: bytes | memoryview) -> None:
        data = bytes(payload)
        self._size = self.left = len(data)
        self._fp = io.BytesIO(data)
        self._decode = cbor2.CBORDecoder(self._fp, **_CBOR).decode

    def take(self, limit: int) -> list[Any]:
        out: list[Any] = []
        tell, size, decode = self._fp.tell, self._size, self._decode
        try:
            while len(out) < limit and tell() < size:
                out.append(decode())
        except cbor2.CBORDecodeEOF as exc:
            self.left = 0
            raise _undecodable("cbor", ValueError("payload ends inside a message")) from exc
        except Exception as exc:  # whatever the bytes: undecodable, never another error
            self.left = 0
            raise _undecodable("cbor", exc) from exc
        self.left = size - tell()
        return out


class CborCodec:
    """CBOR (RFC 8949) via cbor2."""

    name = "cbor"

    def bytes_prefix(self, size: int) -> bytes | None:
        # Major type 2 (byte string) with a 4-byte length, as cbor2 writes it.
        return _CBOR_BYTES32.pack(0x5A, size) if _LARGE_BYTES <= size <= 0xFFFFFFFF else None

    def encode(self, message: Any) -> bytes:
        try:
            return cbor2.dumps(message)
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise _unencodable(self.name, exc) from exc

    def encode_many(self, messages: Iterable[Any]) -> bytes:
        dumps = cbor2.dumps
        try:
            return b"".join([dumps(m) for m in messages])
        except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
            raise _unencodable(self.name, exc) from exc

    def decode_many(self, payload: bytes | memoryview) -> list[Any]:
        return _CborFrame(payload).take(sys.maxsize)

    def frame_decoder(self, payload: bytes | memoryview) -> FrameDecoder:
        return _CborFrame(payload)

    def stream_decoder(self) -> StreamDecoder:
        return _CborStreamDecoder()


# --- JSON ---------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or infinities)")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range for a double")
    return value


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
json_decode: Callable[[str], Any] = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float
).decode
"""Decode one JSON text the way pipekit/1 does (``docs/protocol.md`` section 4.5):
``NaN``, ``Infinity`` and numbers beyond a double's range are refused with
:class:`ValueError`; integers are exact; a duplicate key keeps its last value."""


def decode_json_lines(lines: Iterable[bytes]) -> list[Any]:
    """One JSON value per line (UTF-8, without its newline); blank lines are skipped.
    Raises :class:`RemoteProtocolError` (kind ``"undecodable"``) for a line that is not JSON."""
    out: list[Any] = []
    decode = json_decode
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(decode(line.decode("utf-8")))
        except Exception as exc:  # invalid, nested too deep, ...: never another error
            raise _undecodable("json", exc) from exc
    return out


class _JsonFrame:
    """A JSON DATA payload (values separated by newlines), decoded a slice at a time."""

    __slots__ = ("_data", "_pos", "left")

    def __init__(self, payload: bytes | memoryview) -> None:
        self._data = bytes(payload)
        self._pos = 0
        self.left = len(self._data)

    def take(self, limit: int) -> list[Any]:
        data, pos = self._data, self._pos
        end = len(data)
        if data.count(b"\n", pos) < limit:  # the rest holds at most `limit` values
            self._pos, self.left = end, 0
            return decode_json_lines(data[pos:].split(b"\n"))
        out: list[Any] = []
        try:
            while len(out) < limit and pos < end:
                newline = data.find(b"\n", pos)
                if newline < 0:
                    newline = end
                out.extend(decode_json_lines((data[pos:newline],)))
                pos = newline + 1
        except RemoteProtocolError:
            self.left = 0
            raise
        self._pos = min(pos, end)
        self.left = end - self._pos
        return out


class _JsonStreamDecoder:
    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, data: bytes) -> list[Any]:
        return decode_json_lines(self._lines.split(data))

    def close(self) -> list[Any]:
        # A last line without its newline is still a complete JSON value.
        return decode_json_lines([self._lines.rest()])


class JsonCodec:
    """UTF-8 JSON, one value per line (values never contain a raw newline)."""

    name = "json"

    def bytes_prefix(self, size: int) -> bytes | None:
        return None  # JSON has no binary type

    def encode(self, message: Any) -> bytes:
        try:
            return _json_encoder.encode(message).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _unencodable(self.name, exc) from exc

    def encode_many(self, messages: Iterable[Any]) -> bytes:
        encode = _json_encoder.encode
        try:
            return "\n".join([encode(m) for m in messages]).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _unencodable(self.name, exc) from exc

    def decode_many(self, payload: bytes | memoryview) -> list[Any]:
        return decode_json_lines(bytes(payload).split(b"\n"))

    def frame_decoder(self, payload: bytes | memoryview) -> FrameDecoder:
        return _JsonFrame(payload)

    def stream_decoder(self) -> StreamDecoder:
        return _JsonStreamDecoder()


_CODECS: dict[str, type[MsgpackCodec] | type[CborCodec] | type[JsonCodec]] = {
    "msgpack": MsgpackCodec,
    "cbor": CborCodec,
    "json": JsonCodec,
}

CODEC_NAMES: tuple[str, ...] = tuple(_CODECS)
"""Every codec name this build supports, in pipekit's default preference order."""


def get_codec(name: str) -> Codec:
    """Return a fresh codec instance for ``name`` (``msgpack``, ``cbor`` or ``json``)."""
    try:
        return _CODECS[name]()
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODEC_NAMES)}") from None
