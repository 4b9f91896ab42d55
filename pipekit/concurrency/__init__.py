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
- :func:`defaults` / :func:`set_defaults`: the default concurrency and timeout.

The blocking forms are for scripts; inside trio use the ``a...`` forms and
``async with``. Channels and ``select`` are in :mod:`pipekit.channels`.

Example::

    import pipekit as pk

    results = pk.parallel_map(fetch, urls, max_workers=20, timeout="10s")
    ok = [r.value for r in results if r.ok]
"""

from ._atom import Atom
from ._defaults import Defaults, current_defaults, defaults, set_defaults
from ._map import Backend, aparallel_filter, aparallel_map, parallel_filter, parallel_map
from ._result import Result
from ._spawn import Scope, scope, spawn, spawn_link, timeout
from ._stream import StreamMap, stream_map

__all__ = [
    "Atom",
    "Backend",
    "Defaults",
    "Result",
    "Scope",
    "StreamMap",
    "aparallel_filter",
    "aparallel_map",
    "current_defaults",
    "defaults",
    "parallel_filter",
    "parallel_map",
    "scope",
    "set_defaults",
    "spawn",
    "spawn_link",
    "stream_map",
    "timeout",
]
