"""The worker pool: :class:`WorkerPool` and the machinery behind it.

``pool`` is the public face (options, lifetime, ``map``/``imap_unordered``/``submit``);
``supervisor`` runs one slot per worker process and replaces dead ones; ``worker`` is one
worker process and ``WorkerHost``, the interface it reports to; ``dispatch`` queues work
and hands chunks to the least-loaded workers, sized by ``sizing``; ``crashes`` settles a
dead worker's items; ``queue`` (work units), ``runs`` (who waits for which results),
``results``, ``stats``, ``records`` (progress records in shared memory) and ``errors``
(:class:`WorkerError`) are the pieces they share.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .crashes import MAX_BARREN_DEATHS
    from .errors import WorkerError, WorkerErrorKind
    from .pool import WorkerPool
    from .results import UnorderedResults
    from .sizing import CHUNK_BYTES, CHUNK_SECONDS, MAX_CHUNK, TAIL_SECONDS
    from .stats import PoolStats
else:
    from ..._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            ".crashes": ["MAX_BARREN_DEATHS"],
            ".errors": ["WorkerError", "WorkerErrorKind"],
            ".pool": ["WorkerPool"],
            ".results": ["UnorderedResults"],
            ".sizing": ["CHUNK_BYTES", "CHUNK_SECONDS", "MAX_CHUNK", "TAIL_SECONDS"],
            ".stats": ["PoolStats"],
        },
    )

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
