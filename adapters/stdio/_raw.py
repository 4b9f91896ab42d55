"""The raw modes (``lines``, ``jsonl``, ``bytes``): messages encoded onto a process's
stdin, its stdout decoded into messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from ...kernel.codecs import LineSplitter, StreamDecoder, decode_json_lines, get_codec
from ...kernel.errors import ProtocolError
from ._spec import StdioMode

READ_SIZE = 1 << 20  # bytes asked for per read of a lines/jsonl stdout
BYTES_READ_SIZE = 256 * 1024
"""Bytes asked for per read of a ``bytes``-mode stdout (the largest chunk received).
Not 1 MiB: each read allocates a buffer of the size asked for, and glibc gives a freed
block of ~1 MiB straight back to the kernel (munmap, or a heap trim), so 1 MiB reads
page-faulted every buffer in afresh (~100 faults per MiB moved): 1 GiB through ``cat``
ran at 4.4 GB/s instead of 6.9 (``bench/processes.py``; same machine, interleaved)."""

Encoder = Callable[[Sequence[Any]], bytes]


def encoder(mode: StdioMode) -> Encoder:
    """What turns a batch of messages into the bytes a ``mode`` process reads."""
    if mode == StdioMode.BYTES:

        def encode_bytes(messages: Sequence[Any]) -> bytes:
            if len(messages) == 1 and type(messages[0]) is bytes:
                return messages[0]  # a bulk chunk: no copy
            return b"".join(
                m if isinstance(m, bytes | bytearray | memoryview) else bytes(m) for m in messages
            )

        return encode_bytes
    if mode == StdioMode.JSONL:
        codec = get_codec("json")

        def encode_json(messages: Sequence[Any]) -> bytes:
            return codec.encode_many(messages) + b"\n"

        return encode_json

    def encode_lines(messages: Sequence[Any]) -> bytes:
        # One message is one line. A message that already ends with one newline (a
        # line read with open(), say) carries its own terminator: it gets no second.
        parts = []
        for m in messages:
            if isinstance(m, str):
                if m.endswith("\n"):
                    m = m[:-1]
                parts.append(m.encode("utf-8", "surrogateescape"))
            elif isinstance(m, bytes | bytearray):
                parts.append(bytes(m[:-1]) if m.endswith(b"\n") else bytes(m))
            else:
                parts.append(str(m).encode("utf-8", "surrogateescape"))
        return b"\n".join(parts) + b"\n"

    return encode_lines


class RawDecoder(StreamDecoder, Protocol):
    """What a raw mode decodes stdout with. ``failure``: an error found after the
    messages before it were returned by :meth:`feed`, raised by the next call."""

    @property
    def failure(self) -> ProtocolError | None: ...


class _Lines:
    """What the line decoders share: stdout split into lines of at most ``max_line``
    bytes."""

    def __init__(self, max_line: int) -> None:
        self._lines = LineSplitter(max_line)

    @property
    def failure(self) -> ProtocolError | None:
        return self._lines.failure


class _LineDecoder(_Lines):
    """bytes -> str lines (without the newline)."""

    def feed(self, data: bytes) -> list[Any]:
        return [line.decode("utf-8", "surrogateescape") for line in self._lines.split(data)]

    def close(self) -> list[Any]:
        rest = self._lines.rest()
        return [rest.decode("utf-8", "surrogateescape")] if rest else []


class _JsonLinesDecoder(_Lines):
    """bytes -> one JSON value per line (blank lines skipped)."""

    def feed(self, data: bytes) -> list[Any]:
        return decode_json_lines(self._lines.split(data))

    def close(self) -> list[Any]:
        # A last line without its newline is still a complete JSON value.
        return decode_json_lines([self._lines.rest()])


class _ChunkDecoder:
    failure: ProtocolError | None = None

    def feed(self, data: bytes) -> list[Any]:
        return [data]

    def close(self) -> list[Any]:
        return []


def decoder(mode: StdioMode, max_line: int) -> RawDecoder:
    """What turns a ``mode`` process's stdout into messages."""
    if mode == StdioMode.BYTES:
        return _ChunkDecoder()
    if mode == StdioMode.JSONL:
        return _JsonLinesDecoder(max_line)
    return _LineDecoder(max_line)


class RawStdio:
    """Our ends of a raw-mode process's stdin and stdout (either may be absent: not
    piped): batches encoded and written, bytes read and decoded, with byte counts."""

    def __init__(
        self,
        stdin: trio.lowlevel.FdStream | None,
        stdout: trio.lowlevel.FdStream | None,
        *,
        encode: StdioMode,
        decode: StdioMode,
        max_line: int,
        name: str,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.name = name
        self._encode = encoder(encode)
        self._decoder = decoder(decode, max_line)
        self.read_size = BYTES_READ_SIZE if decode == StdioMode.BYTES else READ_SIZE
        self.ended = False
        """True once :meth:`end` closed stdin."""
        self.eof = False
        """True once a read found the end of stdout."""
        self.bytes_sent = 0
        self.bytes_received = 0
        self.paused = 0.0
        """Seconds spent blocked writing to stdin (the process was not reading)."""

    @property
    def input_open(self) -> bool:
        return not self.ended and self.stdin is not None

    @property
    def failure(self) -> ProtocolError | None:
        """A decoding error found after the messages before it were returned."""
        return self._decoder.failure

    async def send_batch(self, values: Sequence[Any]) -> None:
        if not self.input_open:
            await trio.lowlevel.checkpoint()
            raise trio.ClosedResourceError(f"{self.name}: stdin is not open")
        assert self.stdin is not None
        data = self._encode(values)
        start = trio.current_time()
        try:
            await self.stdin.send_all(data)
        except trio.BrokenResourceError as exc:
            # The process closed its stdin: it stopped reading (or died).
            raise trio.BrokenResourceError(
                f"{self.name}: the process stopped reading its stdin"
            ) from exc
        finally:
            self.paused += trio.current_time() - start
        self.bytes_sent += len(data)

    async def end(self) -> None:
        """Close stdin (raw modes have no other way to say the input ended)."""
        await trio.lowlevel.checkpoint()
        if not self.ended:
            self.ended = True
            if self.stdin is not None:
                await trio.aclose_forcefully(self.stdin)

    async def receive_some(self) -> bytes:
        """The next bytes of stdout; ``b""`` at its end."""
        assert self.stdout is not None
        data = await self.stdout.receive_some(self.read_size)
        if data:
            self.bytes_received += len(data)
        else:
            self.eof = True
        return data

    def decode(self, data: bytes) -> list[Any]:
        """The messages completed by ``data``; at the end (``b""``), the last ones."""
        return self._decoder.feed(data) if data else self._decoder.close()

    async def discard_output(self) -> None:
        """Read stdout to its end (or until it breaks) and throw the bytes away."""
        assert self.stdout is not None
        try:
            while await self.stdout.receive_some(self.read_size):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def close_stdout(self) -> None:
        """Stop reading stdout: the process's next write to it meets a closed pipe."""
        if self.stdout is not None:
            await trio.aclose_forcefully(self.stdout)
            self.stdout = None

    async def aclose(self) -> None:
        for stream in (self.stdin, self.stdout):
            if stream is not None:
                await trio.aclose_forcefully(stream)
