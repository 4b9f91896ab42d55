"""The receive buffer of a connection: bytes read in place, sliced into frames."""

from __future__ import annotations

from collections.abc import Callable

from ._events import Event
from ._frames import HEADER, HEADER_SIZE

__all__ = ["DEFAULT_READ_SIZE", "LARGE_FRAME", "ReceiveBuffer", "keep_heap"]

DEFAULT_READ_SIZE = 256 * 1024
"""Default room offered to a transport for one read."""
LARGE_FRAME = 128 * 1024
"""A frame with a payload at least this large is read up to its end and no further
(see :meth:`ReceiveBuffer.writable`), so that the next frame starts a read of its own
(which a transport may read straight into the message: see
:meth:`~pipekit.kernel.protocol.Connection.large_bytes_size`)."""
_KEEP = 4 * 1024 * 1024
"""An empty receive buffer larger than this is given back (after a huge frame)."""

_LARGE_NEED = HEADER_SIZE + LARGE_FRAME - 1
_HINT_MIN = 64 * 1024
"""A frame at least this large under way makes :func:`keep_heap` keep freed memory."""
_HEAP_KEEP_MIN = 4 * 1024 * 1024
_HEAP_KEEP_MAX = 16 * 1024 * 1024
_heap_kept = 0


def keep_heap(frame: int) -> None:
    """Have the C allocator keep (not give back to the system) the memory of received
    messages of about ``frame`` bytes once they are freed, for this whole process.

    A message of 64 KiB or more is a block of its own in glibc's malloc; freed, it goes
    back to the system (trimmed at 128 KiB of free heap, or unmapped), and the next one
    is allocated afresh: one page fault per 4 KiB as it is written (measured: 60-80
    faults and about half the receiver's CPU for each 1 MiB message). glibc raises both
    limits by itself once a program frees a block larger than the mmap threshold (up to
    32 MiB: see ``mallopt(3)``, "dynamic mmap threshold"); this frees one such block
    early, of twice ``frame`` (4 to 16 MiB), allocated with ``calloc`` (``bytes(n)``),
    which maps it without touching a page. The cost: up to twice that much freed heap
    stays with the process. Elsewhere than glibc it is one allocation, nothing more."""
    global _heap_kept
    want = min(max(2 * frame, _HEAP_KEEP_MIN), _HEAP_KEEP_MAX)
    if want > _heap_kept:
        _heap_kept = want
        bytes(want)


HeaderCheck = Callable[[int, int, int], None]
FrameHandler = Callable[[int, int, bytes | memoryview, list[Event]], None]


class ReceiveBuffer:
    """Bytes received and not yet parsed.

    A transport reads straight into the view :meth:`writable` returns (``recv_into``),
    or hands over bytes with :meth:`write`; then :meth:`parse` slices what arrived into
    frames and hands each to the connection's handler.
    """

    __slots__ = ("_buf", "_end", "_need", "_start", "after_large")

    def __init__(self) -> None:
        # Received and not yet parsed: _buf[_start:_end]. Parsing is worth trying once
        # _need of them are there (a header, or the whole frame under way).
        self._buf = bytearray()
        self._start = 0
        self._end = 0
        self._need = HEADER_SIZE
        self.after_large = False
        """The last frame parsed was a large one (payload of at least
        :data:`LARGE_FRAME` bytes) and ended where the bytes received end: the next
        read starts with a new frame's header."""

    @property
    def held(self) -> int:
        """Bytes received and not yet parsed: the start of a frame."""
        return self._end - self._start

    def writable(self, size: int = DEFAULT_READ_SIZE) -> memoryview:
        """A writable view to read into, valid until the next call of a method of this
        buffer; report what was read into it with :meth:`parse`.

        The view has room for ``size`` bytes, or for the rest of the frame under way if
        that is more, so a large frame is read in place. While a frame larger than
        ``size // 2`` or :data:`LARGE_FRAME` is under way, the view ends where that
        frame ends: the next frame then starts at the front of the buffer (or a read of
        its own), and the partial frame is never moved."""
        held = self._end - self._start
        rest = self._need - held
        if held and rest > 0 and self._need > min(size // 2, _LARGE_NEED):
            return self._room(rest)[:rest]
        return self._room(size)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` in; report it with :meth:`parse` (``count=len(data)``)."""
        count = len(data)
        self._room(count)[:count] = data

    def _room(self, size: int) -> memoryview:
        """The free end of the buffer, made at least ``size`` bytes long and long enough
        for the rest of the frame under way."""
        held = self._end - self._start
        want = max(size, self._need - held)
        if len(self._buf) - self._end < want:
            self._make_room(held, want)
        elif not held and len(self._buf) > _KEEP and want <= _KEEP:
            self._buf = bytearray(_KEEP)  # give back what a huge frame needed
            self._start = self._end = 0
        return memoryview(self._buf)[self._end :]

    def _make_room(self, held: int, want: int) -> None:
        buf = self._buf
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
            self._buf = bigger
        self._start, self._end = 0, held

    def parse(
        self,
        count: int,
        check_header: HeaderCheck,
        handle: FrameHandler,
        events: list[Event],
        views: bool,
    ) -> None:
        """Take ``count`` more bytes (read into the last :meth:`writable` view, or
        given to :meth:`write`) and slice every complete frame out of the buffer.

        Each header goes to ``check_header(length, type, flags)`` as soon as it is
        there, before its payload is waited for; each whole frame to
        ``handle(type, flags, payload, events)``. A payload is its own ``bytes``, or,
        with ``views``, a view of the buffer for a DATA frame without flags (valid during
        the call only). An exception from either leaves the buffer to :meth:`clear`."""
        self._end += count
        end_of_buf = self._end
        pos = self._start
        if end_of_buf - pos < self._need:
            return
        buf = self._buf
        view = memoryview(buf)
        unpack_from = HEADER.unpack_from
        while end_of_buf - pos >= HEADER_SIZE:
            length, ftype, flags = unpack_from(buf, pos)
            check_header(length, ftype, flags)
            frame_end = pos + HEADER_SIZE + length
            if frame_end > end_of_buf:
                self._need = HEADER_SIZE + length
                if length >= _HINT_MIN:
                    keep_heap(length)
                break
            if views and ftype == 1 and not flags:
                payload: bytes | memoryview = view[pos + HEADER_SIZE : frame_end]
            else:
                payload = bytes(view[pos + HEADER_SIZE : frame_end])
            pos = frame_end
            handle(ftype, flags, payload, events)
        else:
            self._need = HEADER_SIZE
            if length >= _HINT_MIN:  # (the last frame: one whole frame a read is enough)
                keep_heap(length)
            if pos == end_of_buf:
                self.after_large = length >= LARGE_FRAME
                self._start = self._end = 0
                return
        self.after_large = False
        if pos == end_of_buf:
            self._start = self._end = 0
        else:
            self._start = pos

    def clear(self) -> None:
        """Forget everything held (after a violation: nothing more is parsed)."""
        self._start = self._end = 0
        self.after_large = False
