"""Process worker pools (:class:`WorkerPool`); the implementation lives in
:mod:`pipekit.workers`, which is where to import these names from."""

from .workers import (
    CHUNK_SECONDS,
    MAX_BARREN_DEATHS,
    PoolStats,
    UnorderedResults,
    WorkerError,
    WorkerPool,
)

__all__ = [
    "CHUNK_SECONDS",
    "MAX_BARREN_DEATHS",
    "PoolStats",
    "UnorderedResults",
    "WorkerError",
    "WorkerPool",
]
