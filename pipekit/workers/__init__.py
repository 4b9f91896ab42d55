"""Python worker processes: :class:`WorkerPool` (a function called once per item in
reused processes), the item protocol between parent and child, and the child runtime
behind ``pipekit worker`` (whose user-facing module is :mod:`pipekit.child`)."""

from ._crashes import MAX_BARREN_DEATHS
from ._errors import WorkerError, WorkerErrorKind
from ._pool import WorkerPool
from ._results import UnorderedResults
from ._sizing import CHUNK_BYTES, CHUNK_SECONDS, MAX_CHUNK, TAIL_SECONDS
from ._stats import PoolStats

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_SECONDS",
    "MAX_BARREN_DEATHS",
    "MAX_CHUNK",
    "TAIL_SECONDS",
    "PoolStats",
    "UnorderedResults",
    "WorkerError",
    "WorkerErrorKind",
    "WorkerPool",
]
