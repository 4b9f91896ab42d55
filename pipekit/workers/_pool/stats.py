"""The pool's counters and :class:`PoolStats`, their public snapshot."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's counters."""

    size: int
    """Worker processes the pool keeps running."""
    live: int
    """Worker processes running and accepting items right now."""
    submitted: int
    """Items accepted (fed by ``map``/``imap_unordered`` or submitted)."""
    completed: int
    """Results delivered, error values included."""
    errors: int
    """Error values delivered (:class:`WorkerError`)."""
    crashes: int
    """Worker processes that died on their own (not counting timeouts)."""
    timeouts: int
    """Worker processes killed because an item ran past ``timeout``."""
    replacements: int
    """Worker processes started to replace dead ones."""
    retried: int
    """Items sent again (in isolation) after their worker died with them unanswered."""
    inflight: int
    """Items sent to workers and not answered yet."""
    pending: int
    """Items accepted and waiting for a worker."""
    chunksize: int
    """Items per chunk now (the ``chunksize`` option, or the adaptive size)."""
    max_inflight: int
    """Unanswered items a worker may hold now (the ``max_inflight`` option, or twice
    the adaptive chunk size)."""


@dataclass(slots=True)
class Counters:
    """The running counts behind :class:`PoolStats` (same meanings)."""

    submitted: int = 0
    completed: int = 0
    errors: int = 0
    crashes: int = 0
    timeouts: int = 0
    replacements: int = 0
    retried: int = 0
