"""Concurrency one-liners: the helpers people reach for instead of hand-rolling
``asyncio.gather``, ``concurrent.futures`` or ``xargs -P``.

- :func:`parallel_map` / :func:`aparallel_map` and :func:`parallel_filter` /
  :func:`aparallel_filter`: a function over a list, many at once (trio tasks, threads
  or worker processes), results in input order as :class:`Result` values;
- :func:`stream_map`: the same over an endless stream, lazily, at most ``buffer`` items
  pulled ahead;
- :func:`scope`, :func:`spawn` (fire and forget, failures reported) and
  :func:`spawn_link` (a channel that delivers a :class:`Result`); :func:`timeout`;
- :class:`Atom`: a value shared by tasks and threads, updated by compare-and-set;
- :func:`defaults` / :func:`set_defaults`: the default concurrency and timeout;
- :func:`shutdown_pools` and :func:`process_pools`: the process backend's warm worker
  pools (kept for the program, or for one ``async with`` block).

The blocking forms are for scripts; inside trio use the ``a...`` forms and
``async with``. Channels and ``select`` are in :mod:`pipekit.channels`.

Example::

    import pipekit as pk

    results = pk.parallel_map(fetch, urls, max_workers=20, timeout="10s")
    ok = [r.value for r in results if r.ok]
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._atom import Atom
    from ._defaults import Defaults, current_defaults, defaults, set_defaults
    from ._map import Backend, aparallel_filter, aparallel_map, parallel_filter, parallel_map
    from ._pools import ProcessPools, process_pools
    from ._result import Result
    from ._service import shutdown_pools
    from ._spawn import Scope, scope, spawn, spawn_link, timeout
    from ._stream import StreamMap, stream_map
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "._atom": ["Atom"],
            "._defaults": ["Defaults", "current_defaults", "defaults", "set_defaults"],
            "._map": [
                "Backend",
                "aparallel_filter",
                "aparallel_map",
                "parallel_filter",
                "parallel_map",
            ],
            "._pools": ["ProcessPools", "process_pools"],
            "._result": ["Result"],
            "._service": ["shutdown_pools"],
            "._spawn": ["Scope", "scope", "spawn", "spawn_link", "timeout"],
            "._stream": ["StreamMap", "stream_map"],
        },
    )

__all__ = [
    "Atom",
    "Backend",
    "Defaults",
    "ProcessPools",
    "Result",
    "Scope",
    "StreamMap",
    "aparallel_filter",
    "aparallel_map",
    "current_defaults",
    "defaults",
    "parallel_filter",
    "parallel_map",
    "process_pools",
    "scope",
    "set_defaults",
    "shutdown_pools",
    "spawn",
    "spawn_link",
    "stream_map",
    "timeout",
]
