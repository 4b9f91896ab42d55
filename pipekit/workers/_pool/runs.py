"""Runs: the consumers of a set of items (one ``map``, ``imap_unordered`` or ``submit``)
and how each collects its results."""

from __future__ import annotations

from collections import deque
from typing import Any

import trio


class Run:
    """The consumer of a set of items (one ``map``, ``imap_unordered`` or ``submit``)."""

    __slots__ = ("cancelled", "closed_error", "draining", "event", "outstanding", "wake_at")

    def __init__(self) -> None:
        self.outstanding = 0  # fed and not yet consumed
        self.draining = False  # every item is fed: chunks shrink towards the end
        self.wake_at = -1  # set the event when outstanding falls to this
        self.event = trio.Event()
        self.cancelled = False  # nobody wants the results any more
        self.closed_error: BaseException | None = None  # the pool closed under us

    def complete(self, index: int | None, value: Any) -> None:
        raise NotImplementedError

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        """Results for the items ``start``, ``start + 1``, ... (``None``: ``submit``)."""
        raise NotImplementedError

    def close(self, error: BaseException) -> None:
        self.closed_error = error
        self.event.set()

    async def wait(self) -> None:
        """Wait for :meth:`complete` (or the pool's closing) to set the event."""
        if self.closed_error is not None:
            raise self.closed_error
        self.event = trio.Event()
        await self.event.wait()
        if self.closed_error is not None:
            raise self.closed_error


class MapRun(Run):
    """``map``: results kept in parts, put in input order at the end."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[tuple[int, list[Any]]] = []  # (index of the first, results)

    def complete(self, index: int | None, value: Any) -> None:
        assert index is not None
        self.parts.append((index, [value]))
        self.outstanding -= 1
        if self.outstanding <= self.wake_at:
            self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        assert start is not None
        self.parts.append((start, values))
        self.outstanding -= len(values)
        if self.outstanding <= self.wake_at:
            self.event.set()

    def results(self) -> list[Any]:
        """Every result, in input order (call once all are in)."""
        parts = self.parts
        parts.sort(key=_first)
        results: list[Any] = []
        for _, values in parts:
            results.extend(values)
        parts.clear()
        return results


def _first(part: tuple[int, list[Any]]) -> int:
    return part[0]


class StreamRun(Run):
    """``imap_unordered``: ``(index, result)`` pairs ready to be handed out."""

    __slots__ = ("ready",)

    def __init__(self) -> None:
        super().__init__()
        self.ready: deque[tuple[int, Any]] = deque()

    def complete(self, index: int | None, value: Any) -> None:
        if self.cancelled:
            return
        self.ready.append((index, value))  # type: ignore[arg-type]
        self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        if self.cancelled:
            return
        assert start is not None
        self.ready.extend(zip(range(start, start + len(values)), values, strict=True))
        self.event.set()


class OneRun(Run):
    """``submit``: one result."""

    __slots__ = ("done", "value")

    def __init__(self) -> None:
        super().__init__()
        self.value: Any = None
        self.done = False

    def complete(self, index: int | None, value: Any) -> None:
        self.value = value
        self.done = True
        self.outstanding = 0
        self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        self.complete(None, values[0])
