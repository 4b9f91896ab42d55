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
import struct
import sys
from collections.abc import Iterable
from typing import Any, Protocol

import cbor2
import msgpack

from .errors import CodecError, ErrorKind, RemoteProtocolError

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "LineSplitter",
    "StreamDecoder",
    "decode_json_lines",
    "get_codec",
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

    def decode_many(self, payload: bytes | memoryview) -> list[Any]: ...

    def stream_decoder(self) -> StreamDecoder: ...


def _undecodable(codec: str, exc: BaseException | None = None) -> RemoteProtocolError:
    detail = f": {exc}" if exc is not None else ""
    return RemoteProtocolError(f"undecodable {codec} payload{detail}", kind=ErrorKind.UNDECODABLE)


def _unencodable(codec: str, exc: BaseException) -> CodecError:
    return CodecError(f"cannot encode message with {codec}: {exc}")


# --- msgpack ------------------------------------------------------------------------


class _MsgpackStreamDecoder:
    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
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
        except (ValueError, msgpack.UnpackException) as exc:
            raise _undecodable("msgpack", exc) from exc
        return out

    def close(self) -> list[Any]:
        if self._used != self._fed:
            raise _undecodable("msgpack", ValueError("stream ends inside a message"))
        return []


_BIN32 = struct.Struct(">BI")
_CBOR_BYTES32 = struct.Struct(">BI")
_LARGE_BYTES = 64 * 1024
_LARGE_PAYLOAD = 64 * 1024 + 64


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
        if len(payload) > _LARGE_PAYLOAD:
            # Bigger than a coalesced frame: most likely one large message. Decode it in
            # place rather than copying the payload into an Unpacker first.
            try:
                return [msgpack.unpackb(payload, raw=False, strict_map_key=False)]
            except msgpack.ExtraData:
                pass  # several messages after all
            except (ValueError, msgpack.UnpackException) as exc:
                raise _undecodable(self.name, exc) from exc
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
        unpacker.feed(payload)
        messages: list[Any] = []
        used = 0  # see _MsgpackStreamDecoder.feed: tell() after a complete message only
        try:
            for message in unpacker:
                messages.append(message)
                used = unpacker.tell()
        except (ValueError, msgpack.UnpackException) as exc:
            raise _undecodable(self.name, exc) from exc
        if used != len(payload):
            raise _undecodable(self.name, ValueError("payload ends inside a message"))
        return messages

    def stream_decoder(self) -> StreamDecoder:
        return _MsgpackStreamDecoder()


# --- CBOR ---------------------------------------------------------------------------


def _cbor_decode_all(buffer: bytes) -> tuple[list[Any], int]:
    """Decode every complete CBOR item at the start of ``buffer``.

    Returns the items and how many bytes they used; stops at an incomplete item."""
    fp = io.BytesIO(buffer)
    decoder = cbor2.CBORDecoder(fp)
    out: list[Any] = []
    used = 0
    while used < len(buffer):
        try:
            out.append(decoder.decode())
        except cbor2.CBORDecodeEOF:
            break
        except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
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
        messages, used = _cbor_decode_all(bytes(payload))
        if used != len(payload):
            raise _undecodable(self.name, ValueError("payload ends inside a message"))
        return messages

    def stream_decoder(self) -> StreamDecoder:
        return _CborStreamDecoder()


# --- JSON ---------------------------------------------------------------------------


class LineSplitter:
    """bytes -> complete lines (``bytes``, without the newline). With ``max_line``, none
    longer than that: a longer one is a :class:`RemoteProtocolError` (kind ``oversize``), found
    as soon as that many bytes of it are in, so a writer that never writes a newline
    cannot fill memory. The lines before it are still returned; the error is then raised
    by the next call, and by every call after (see :attr:`failure`). A partial line is
    kept as pieces and joined once, when it completes."""

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line if max_line is not None else sys.maxsize
        self.failure: RemoteProtocolError | None = None
        """The oversize error once one was found (raised by every later call)."""
        self._pieces: list[bytes] = []
        self._size = 0

    def _fail(self) -> RemoteProtocolError:
        self._pieces = []
        self._size = 0
        self.failure = RemoteProtocolError(
            f"a line longer than {self.max_line} bytes (max_line) arrived",
            kind=ErrorKind.OVERSIZE,
        )
        return self.failure

    def split(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self.failure is not None:
            raise self.failure
        if type(data) is not bytes:
            data = bytes(data)  # kept as a piece: never a buffer its owner may reuse
        limit = self.max_line
        if b"\n" not in data:
            if data:
                self._size += len(data)
                if self._size > limit:
                    raise self._fail()
                self._pieces.append(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces = []
        if max(map(len, lines)) > limit:
            good = list(itertools.takewhile(lambda line: len(line) <= limit, lines))
            error = self._fail()
            if not good:
                raise error
            return good
        if len(tail) > limit:
            self._fail()
            return lines
        self._size = len(tail)
        if tail:
            self._pieces.append(tail)
        return lines

    def rest(self) -> bytes:
        """The last line, which had no newline (``b""`` if none)."""
        if self.failure is not None:
            raise self.failure
        rest = b"".join(self._pieces)
        self._pieces = []
        self._size = 0
        return rest


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_json_decode = json.JSONDecoder().decode


def decode_json_lines(lines: Iterable[bytes]) -> list[Any]:
    """One JSON value per line (UTF-8, without its newline); blank lines are skipped.
    Raises :class:`RemoteProtocolError` (kind ``"undecodable"``) for a line that is not JSON."""
    out: list[Any] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            out.append(_json_decode(line.decode("utf-8")))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested too deep
            raise _undecodable("json", exc) from exc
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
