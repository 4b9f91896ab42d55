"""An in-memory byte transport with fault injection, for testing pipekit peers.

:class:`MockTransport` is a connected pair of trio
:class:`~trio.abc.HalfCloseableStream` objects (``left`` and ``right``), like
:func:`trio.testing.memory_stream_pair`, plus the faults a peer must survive. Each
direction is a :class:`MockWire` with its own knobs:

* ``chunks([1])``: deliver at most these many bytes per ``receive_some`` (cycled), to
  test reassembly of frames split anywhere;
* ``pause()`` / ``resume()``: a stalled peer - nothing is delivered (not even EOF) and,
  once ``capacity`` bytes are in transit, the writer's ``send_all`` blocks, as on a real
  socket whose reader stopped reading;
* ``inject(data)``: raw bytes (garbage, a forged frame) delivered after what is already
  in transit, as if the writer had written them;
* ``cut("eof")`` / ``cut("broken")``: the connection ends - the reader gets what is in
  transit and then EOF, or at once :class:`trio.BrokenResourceError`; the writer's
  further ``send_all`` raises :class:`trio.BrokenResourceError` either way;
* ``written`` / ``delivered``: every byte the writing stream wrote, and every byte the
  reading stream was handed (``written`` plus injections, minus what a cut discarded);
  decode them with :func:`parse_frames`.

Without faults the streams pass :func:`trio.testing.check_half_closeable_stream`.
Everything is single-threaded trio: use the streams and the knobs from one trio run.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from ..kernel.protocol import HEADER, HEADER_SIZE, FrameType

__all__ = [
    "DEFAULT_MOCK_CAPACITY",
    "Frame",
    "MockStream",
    "MockTransport",
    "MockWire",
    "parse_frames",
]

DEFAULT_MOCK_CAPACITY = 64 * 1024
"""Bytes in transit per direction before ``send_all`` waits for the reader."""

CutMode = Literal["eof", "broken"]


class _Busy:
    """Raises :class:`trio.BusyResourceError` when two tasks use one side at once."""

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class MockWire:
    """One direction of a :class:`MockTransport`: the bytes one stream writes and the
    other reads, with the fault knobs described in the module docstring."""

    def __init__(self, name: str, capacity: int | None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError("capacity must be at least 1 (or None for unbounded)")
        self.name = name
        self.capacity = capacity
        self._written = bytearray()
        self._delivered = bytearray()
        self._queue = bytearray()
        self._chunk_sizes: tuple[int, ...] = ()
        self._chunk_index = 0
        self._paused = False
        self._eof = False
        self._broken: str | None = None
        self._cut = False
        self._reader_closed = False
        self._event = trio.Event()

    # -- observation ----------------------------------------------------------------

    @property
    def written(self) -> bytes:
        """Every byte the writing stream's ``send_all`` accepted, in order."""
        return bytes(self._written)

    @property
    def delivered(self) -> bytes:
        """Every byte the reading stream's ``receive_some`` returned, in order."""
        return bytes(self._delivered)

    @property
    def in_transit(self) -> int:
        """Bytes accepted (or injected) and not yet delivered."""
        return len(self._queue)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def chunk_sizes(self) -> tuple[int, ...]:
        return self._chunk_sizes

    # -- faults ---------------------------------------------------------------------

    def chunks(self, sizes: Sequence[int] | None) -> None:
        """Deliver at most ``sizes[k]`` bytes per read, cycling through ``sizes``;
        ``None`` or empty: as much as the reader asks for."""
        sizes = tuple(sizes or ())
        if any(s < 1 for s in sizes):
            raise ValueError("chunk sizes must be at least 1")
        self._chunk_sizes = sizes
        self._chunk_index = 0

    def pause(self) -> None:
        """Stop delivering (a stalled peer). The writer blocks once ``capacity`` bytes
        are in transit."""
        self._paused = True

    def resume(self) -> None:
        """Deliver again what is in transit (and the EOF, if one is pending)."""
        self._paused = False
        self._notify()

    def inject(self, data: bytes | bytearray | memoryview) -> None:
        """Deliver ``data`` after what is in transit, as if the writer had written it
        (ignores ``capacity``; not recorded in :attr:`written`)."""
        if self._broken is not None or self._reader_closed:
            return
        self._queue += data
        self._notify()

    def cut(self, how: CutMode = "broken") -> None:
        """End this direction abruptly. ``"eof"``: the reader gets what is in transit,
        then EOF. ``"broken"``: what is in transit is lost and the reader's
        ``receive_some`` raises :class:`trio.BrokenResourceError`. In both cases the
        writer's further ``send_all`` raises :class:`trio.BrokenResourceError`."""
        if how not in ("eof", "broken"):
            raise ValueError(f"how must be 'eof' or 'broken', not {how!r}")
        if how == "eof":
            self._eof = True
        else:
            self._broken = f"{self.name}: connection cut"
            self._queue.clear()
        self._cut = True
        self._notify()

    # -- the streams' side ----------------------------------------------------------

    def write_some(self, data: bytes) -> int:
        """Accept as much of ``data`` as fits now (all of it if unbounded) and return
        how many bytes; raises :class:`trio.BrokenResourceError` once this direction
        can no longer be written (cut, or the reading side closed)."""
        self._check_writable()
        room = self._room()
        size = len(data) if room is None else min(len(data), room)
        if size:
            piece = data[:size]
            self._queue += piece
            self._written += piece
            self._notify()
        return size

    def may_write(self) -> bool:
        """True if a write would accept bytes now, or would raise (so need not wait)."""
        if self._writer_error() is not None:
            return True
        room = self._room()
        return room is None or room > 0

    def write_eof(self) -> None:
        """The writing stream is done: the reader gets what is in transit, then EOF."""
        self._eof = True
        self._notify()

    def read_some(self, max_bytes: int | None) -> bytes | None:
        """What the reading stream may take now: up to ``max_bytes`` bytes, ``b""`` at
        EOF, or None if it must wait; raises :class:`trio.BrokenResourceError` if cut."""
        if self._broken is not None:
            raise trio.BrokenResourceError(self._broken)
        if self._paused:
            return None
        if self._queue:
            return self._take(max_bytes)
        return b"" if self._eof else None

    def close_reading(self) -> None:
        """The reading stream is closed: what is in transit is dropped and the writer's
        further writes fail."""
        self._reader_closed = True
        self._queue.clear()
        self._notify()

    async def wait_for_change(self) -> None:
        """Wait until something happens on this direction (bytes, room, EOF, a fault)."""
        await self._event.wait()

    # -- internals --------------------------------------------------------------------

    def _notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    def _take(self, max_bytes: int | None) -> bytes:
        n = len(self._queue)
        if max_bytes is not None:
            n = min(n, max_bytes)
        if self._chunk_sizes:
            n = min(n, self._chunk_sizes[self._chunk_index % len(self._chunk_sizes)])
            self._chunk_index += 1
        data = bytes(self._queue[:n])
        del self._queue[:n]
        self._delivered += data
        self._notify()  # room for a waiting writer
        return data

    def _writer_error(self) -> trio.BrokenResourceError | None:
        if self._broken is not None:
            return trio.BrokenResourceError(self._broken)
        if self._reader_closed:
            return trio.BrokenResourceError(f"{self.name}: the reading side is closed")
        if self._cut:
            return trio.BrokenResourceError(f"{self.name}: connection cut")
        return None

    def _check_writable(self) -> None:
        error = self._writer_error()
        if error is not None:
            raise error

    def _room(self) -> int | None:
        """Bytes the writer may add now (None: unbounded)."""
        if self.capacity is None:
            return None
        return max(0, self.capacity - len(self._queue))


class MockStream(trio.abc.HalfCloseableStream):
    """One end of a :class:`MockTransport`. ``outgoing`` carries what it writes,
    ``incoming`` what it reads."""

    def __init__(self, name: str, outgoing: MockWire, incoming: MockWire) -> None:
        self.name = name
        self.outgoing = outgoing
        self.incoming = incoming
        self._closed = False
        self._eof_sent = False
        self._send_busy = _Busy(f"{name}: another task is sending on this stream")
        self._receive_busy = _Busy(f"{name}: another task is receiving on this stream")

    def _check_send_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError(f"{self.name}: stream is closed")
        if self._eof_sent:
            raise trio.ClosedResourceError(f"{self.name}: send_eof() was called")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint()
            self._check_send_open()
            wire = self.outgoing
            payload = bytes(data)
            pos = 0
            while True:
                self._check_send_open()
                accepted = wire.write_some(payload[pos:])
                pos += accepted
                if pos >= len(payload):
                    return
                if not accepted:
                    await wire.wait_for_change()

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint()
            wire = self.outgoing
            while True:
                self._check_send_open()
                if wire.may_write():
                    return
                await wire.wait_for_change()

    async def send_eof(self) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint()
            if self._closed:
                raise trio.ClosedResourceError(f"{self.name}: stream is closed")
            self._eof_sent = True
            self.outgoing.write_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        with self._receive_busy:
            await trio.lowlevel.checkpoint()
            wire = self.incoming
            while True:
                if self._closed:
                    raise trio.ClosedResourceError(f"{self.name}: stream is closed")
                data = wire.read_some(max_bytes)
                if data is not None:
                    return data
                await wire.wait_for_change()

    async def aclose(self) -> None:
        """Close both directions: the peer reads what is in transit, then EOF; the
        peer's further writes raise :class:`trio.BrokenResourceError`."""
        if not self._closed:
            self._closed = True
            self.outgoing.write_eof()
            self.incoming.close_reading()
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"<MockStream {self.name!r}>"


class MockTransport:
    """A connected pair of in-memory streams with fault injection.

    ``left`` writes into ``to_right`` and reads ``to_left``; ``right`` the other way
    round. ``capacity`` bounds the bytes in transit per direction (None: unbounded);
    ``chunk_sizes`` applies :meth:`MockWire.chunks` to both directions.
    """

    def __init__(
        self,
        *,
        capacity: int | None = DEFAULT_MOCK_CAPACITY,
        chunk_sizes: Sequence[int] | None = None,
        names: tuple[str, str] = ("left", "right"),
    ) -> None:
        self.to_right = MockWire(f"{names[0]}->{names[1]}", capacity)
        self.to_left = MockWire(f"{names[1]}->{names[0]}", capacity)
        self.left = MockStream(names[0], self.to_right, self.to_left)
        self.right = MockStream(names[1], self.to_left, self.to_right)
        if chunk_sizes:
            self.chunks(chunk_sizes)

    @property
    def streams(self) -> tuple[MockStream, MockStream]:
        """``(left, right)``."""
        return self.left, self.right

    @property
    def wires(self) -> tuple[MockWire, MockWire]:
        """``(to_right, to_left)``."""
        return self.to_right, self.to_left

    def chunks(self, sizes: Sequence[int] | None) -> None:
        for wire in self.wires:
            wire.chunks(sizes)

    def pause(self) -> None:
        for wire in self.wires:
            wire.pause()

    def resume(self) -> None:
        for wire in self.wires:
            wire.resume()

    def cut(self, how: CutMode = "broken") -> None:
        """Cut both directions (see :meth:`MockWire.cut`)."""
        for wire in self.wires:
            wire.cut(how)


@dataclass(frozen=True, slots=True)
class Frame:
    """One pipekit/1 frame decoded from recorded bytes."""

    type: int
    flags: int
    payload: bytes

    @property
    def kind(self) -> str:
        """The frame type's name (``"DATA"``, ``"END"``, ...) or ``"UNKNOWN(n)"``."""
        try:
            return FrameType(self.type).name
        except ValueError:
            return f"UNKNOWN({self.type})"


def parse_frames(data: bytes | bytearray | memoryview, *, partial: bool = False) -> list[Frame]:
    """Split recorded bytes into frames (headers are not validated beyond their length).

    Raises :class:`ValueError` if ``data`` ends inside a frame, unless ``partial`` is
    true (then the incomplete tail is ignored)."""
    buf = bytes(data)
    frames: list[Frame] = []
    pos = 0
    while len(buf) - pos >= HEADER_SIZE:
        length, ftype, flags = HEADER.unpack_from(buf, pos)
        end = pos + HEADER_SIZE + length
        if end > len(buf):
            break
        frames.append(Frame(ftype, flags, buf[pos + HEADER_SIZE : end]))
        pos = end
    if pos != len(buf) and not partial:
        raise ValueError(f"{len(buf) - pos} trailing bytes do not make a whole frame")
    return frames
