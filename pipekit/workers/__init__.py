"""Processes for people: ``pk.run`` (Python workers), ``pk.cmd`` (any executable) and
:class:`WorkerPool` (a function called once per item in reused processes).

``pk.run``/``pk.cmd`` return a :class:`Worker`, which is two things: a handle you drive
from trio (``async with pk.run("app.enrich:main") as w: await w.call(record)``; leaving
the block ENDs the worker's input and waits for it, or kills it if the block raised),
and a pipeline stage (``pk.source(items) | pk.run(a) | pk.cmd("jq", "-c", ".x") |
pk.sink(f)``; adjacent raw-mode commands are joined by an OS pipe, as a shell does).
``a.then(b)``, ``a.otherwise(b)`` and ``a.background()`` compose workers as a shell's
``&&``, ``||`` and ``&`` do. :func:`worker_spec` is the process spec of a Python worker,
for the stdio adapter. This floor also holds the item protocol between parent and
child and the child runtime behind ``pipekit worker`` (whose user-facing module is
:mod:`pipekit.child`).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._handle import OUTPUT_BYTES, OUTPUT_MESSAGES, ProcessChain, Worker
    from ._launch import worker_spec
    from ._pool import (
        CHUNK_BYTES,
        CHUNK_SECONDS,
        MAX_BARREN_DEATHS,
        MAX_CHUNK,
        TAIL_SECONDS,
        PoolStats,
        UnorderedResults,
        WorkerError,
        WorkerErrorKind,
        WorkerPool,
    )
    from ._process import cmd, run
    from ._targets import target_spec
    from ._wire import WorkerMode
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "._handle": ["OUTPUT_BYTES", "OUTPUT_MESSAGES", "ProcessChain", "Worker"],
            "._launch": ["worker_spec"],
            "._pool": [
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
            ],
            "._process": ["cmd", "run"],
            "._targets": ["target_spec"],
            "._wire": ["WorkerMode"],
        },
    )

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_SECONDS",
    "MAX_BARREN_DEATHS",
    "MAX_CHUNK",
    "OUTPUT_BYTES",
    "OUTPUT_MESSAGES",
    "TAIL_SECONDS",
    "PoolStats",
    "ProcessChain",
    "UnorderedResults",
    "Worker",
    "WorkerError",
    "WorkerErrorKind",
    "WorkerMode",
    "WorkerPool",
    "cmd",
    "run",
    "target_spec",
    "worker_spec",
]
