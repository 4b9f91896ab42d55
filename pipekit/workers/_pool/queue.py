"""The units of queued and sent work: segments of a run's items waiting for a worker,
flights (chunks sent to a worker), and what is known of their items after a crash."""

from __future__ import annotations

import enum
from typing import Any

from .runs import Run


class SegmentState(enum.Enum):
    """What the pool knows of items that were on a worker that died."""

    FRESH = enum.auto()
    """Never ran (as far as the pool knows)."""
    RAN = enum.auto()
    """Ran once to the end on a worker that died before answering: run once more."""
    SUSPECT = enum.auto()
    """May have crashed (or hung) its worker: run alone."""


FRESH = SegmentState.FRESH


class Segment:
    """Queued items: ``items[pos:stop]``, consecutive items of one run; ``items[k]`` has
    the index ``base + k`` (``base`` None: one submitted item). ``items`` may be the
    caller's own list (``map`` over a list slices it as workers take items). ``state``:
    ``FRESH`` or ``RAN`` (such items are never chunked with fresh ones)."""

    __slots__ = ("base", "items", "pos", "run", "state", "stop")

    def __init__(
        self,
        run: Run,
        base: int | None,
        items: list[Any],
        pos: int = 0,
        stop: int = -1,
        state: SegmentState = FRESH,
    ) -> None:
        self.run = run
        self.base = base
        self.items = items
        self.pos = pos
        self.stop = len(items) if stop < 0 else stop
        self.state = state

    def __len__(self) -> int:
        return self.stop - self.pos

    def take(self, count: int) -> tuple[int | None, list[Any]]:
        """Remove the next ``count`` items (at most): ``(index of the first, items)``."""
        pos, items = self.pos, self.items
        start = None if self.base is None else self.base + pos
        self.pos = end = min(pos + count, self.stop)
        if pos == 0 and end == len(items):
            return start, items
        return start, items[pos:end]


Entry = tuple[Run, int | None, Any]
"""An item to isolate: ``(run, index, item)``."""


class Flight:
    """A chunk sent to a worker: ``items`` with message ids ``first``, ``first + 1``...
    and indices ``start``, ``start + 1``... (or None); ``done`` of them are answered.
    ``state``: what is known of its items."""

    __slots__ = ("done", "first", "items", "run", "start", "state")

    def __init__(
        self,
        first: int,
        run: Run,
        start: int | None,
        items: list[Any],
        state: SegmentState = FRESH,
    ) -> None:
        self.first = first
        self.run = run
        self.start = start
        self.items = items
        self.state = state
        self.done = 0

    def index(self, offset: int) -> int | None:
        return None if self.start is None else self.start + offset

    def entries(self, lo: int, hi: int) -> list[Entry]:
        run, items = self.run, self.items
        return [(run, self.index(k), items[k]) for k in range(lo, hi)]

    def unanswered(self) -> list[Entry]:
        return self.entries(self.done, len(self.items))

    def split(self) -> tuple[Flight, Flight]:
        """Two flights of half the items each (for a chunk that could not be sent)."""
        items = self.items
        half = len(items) // 2
        return (
            Flight(self.first, self.run, self.start, items[:half], self.state),
            Flight(self.first + half, self.run, self.index(half), items[half:], self.state),
        )
