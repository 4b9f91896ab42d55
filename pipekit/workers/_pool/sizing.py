"""Chunk sizing: how many items travel in one request, and how many a worker may hold
unanswered, from the pool's options or from the pace and size of the items."""

from __future__ import annotations

from ...kernel.protocol import DEFAULT_MAX_FRAME
from .queue import Segment

MAX_INFLIGHT = 1 << 20
"""The largest ``max_inflight`` and ``chunksize``."""

CHUNK_SECONDS = 0.05
"""Adaptive chunks hold about this much work (seconds, as the workers measure it)."""

MAX_CHUNK = 65536
"""Adaptive chunks hold at most this many items..."""

CHUNK_BYTES = 1 << 20
"""... and about this many bytes (encoded items or results, whichever are larger)."""

FIRST_CHUNK = 8
"""The chunk size before the workers have answered anything."""

TAIL_SECONDS = 0.005
"""The last chunks of a ``map`` shrink, but not below this much work."""


class ChunkSizer:
    """The chunk size (:attr:`chunk`) and the bound of unanswered items per worker
    (:attr:`limit`): fixed by ``chunksize``/``max_inflight``, else (:attr:`adaptive`)
    planned from the estimated seconds and bytes per item."""

    def __init__(self, chunksize: int | None, max_inflight: int | None) -> None:
        self.chunksize = chunksize
        self.max_inflight = max_inflight
        self.adaptive = chunksize is None
        self.item_seconds: float | None = None  # estimated time a worker spends per item
        self.item_bytes = 0.0  # estimated encoded size of an item or result (0: unknown)
        self.chunk = 1  # items per chunk now
        self.limit = 1  # unanswered items per worker now, at most
        self.plan()

    def plan(self) -> None:
        """Set the chunk size and the in-flight bound from the options and estimates."""
        if self.chunksize is not None:
            chunk = self.chunksize
        else:
            seconds = self.item_seconds
            chunk = FIRST_CHUNK if seconds is None else int(CHUNK_SECONDS / seconds)
            if self.item_bytes > 0:
                chunk = min(chunk, int(CHUNK_BYTES / self.item_bytes))
            chunk = max(1, min(chunk, MAX_CHUNK))
            if self.max_inflight is not None:
                chunk = min(chunk, max(1, self.max_inflight // 2))
        self.chunk = chunk
        self.limit = self.max_inflight if self.max_inflight is not None else 2 * chunk

    def bounds(self, head: Segment, draining: bool, queued: int, workers: int) -> tuple[int, int]:
        """The chunk size and in-flight bound for the ``queued`` items now waiting, of
        which ``head`` is the first segment (``draining``: the last one's run has fed
        every item), shared by ``workers`` live workers."""
        if self.adaptive:
            self.size_up(head)
        chunk = self.chunk
        limit = self.limit
        if draining and self.adaptive:
            # The last items: smaller chunks, so that the workers finish together (each
            # worker's share of what is left, halved) - but not below a few ms of work:
            # each round of smaller chunks costs a round trip.
            tail = -(-queued // (2 * workers))
            seconds = self.item_seconds
            if seconds is not None:
                tail = max(tail, int(TAIL_SECONDS / seconds))
            if tail < chunk:
                chunk = max(1, tail)
                if self.max_inflight is None:
                    limit = 2 * chunk
        return chunk, limit

    def size_up(self, segment: Segment) -> bool:
        """Before items are chunked: if the next one is a ``bytes``-like or ``str`` much
        larger than the bytes-per-item estimate (items of another kind than the last
        ones), raise the estimate to its size, so that a chunk of such items is not built
        by the old estimate (a chunk larger than a frame would only fail to encode).
        True if it did."""
        if segment.pos >= segment.stop:
            return False
        item = segment.items[segment.pos]
        if isinstance(item, str):
            size = len(item) if item.isascii() else 4 * len(item)  # UTF-8: at most 4
        elif isinstance(item, (bytes, bytearray)):
            size = len(item)
        elif isinstance(item, memoryview):
            size = item.nbytes
        else:
            return False
        if size > 2 * self.item_bytes and size * self.chunk > CHUNK_BYTES:
            self.item_bytes = float(size)
            self.plan()
            return True
        return False

    def learn(self, timed: int, spent: float, size: float) -> None:
        """Update the estimates from answers just received: ``timed`` items took
        ``spent`` seconds, and items or results took ``size`` bytes each (0: no sample).
        A geometric moving average (each sample moves the estimate halfway, in log
        scale), so that the chunk size follows a change of pace within a few answers."""
        if timed:
            sample = max(spent / timed, 1e-9)
            old = self.item_seconds
            self.item_seconds = sample if old is None else (old * sample) ** 0.5
        if size > 0:
            old_size = self.item_bytes
            self.item_bytes = size if not old_size else (old_size * size) ** 0.5
        self.plan()

    def frame_overflow(self, items: int) -> None:
        """A chunk of ``items`` items was larger than a frame: the items are larger than
        the estimate said."""
        if self.adaptive:
            self.item_bytes = max(self.item_bytes, DEFAULT_MAX_FRAME / items)
            self.plan()
