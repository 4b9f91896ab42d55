"""Declarative pipelines: stages composed with ``|`` and run on a kernel.

::

    import pipekit as pk
    result = (pk.source(lines) | pk.map(parse) | pk.filter(is_error)
              | pk.thread(lookup, workers=4) | pk.collect()).run()
    for record in pk.read_lines("app.log") | pk.map(parse) | pk.take(10):
        print(record)

Every stage becomes one kernel module joined to the next by a bounded in-process pipe,
so backpressure, END and errors behave as everywhere in pipekit. Stages take the
keywords of :class:`StageOptions`: ``name=`` (their label), ``buffer=`` (the bound of
their input buffer, in messages), ``buffer_bytes=`` (a bound in bytes of ``bytes``/``str``
messages) and restart options (``restart=``, ``max_restarts=``, ``backoff=``); where it
makes sense also those of :class:`ParallelStageOptions` (``workers=`` and ``ordered=``)
and of :class:`ItemStageOptions` (``on_error=``, ``retry=``). Order is preserved unless
a stage says ``ordered=False``.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._errors import ItemErrors, OutputWrapper
    from ._files import READ_CHUNK, read_bytes, read_lines, write_bytes, write_lines
    from ._iterate import ITER_BUFFER, PipelineIterator
    from ._operators import (
        batch,
        skip,
        take,
        tee,
        throttle,
        tumbling,
        unbatch,
        window,
    )
    from ._pipeline import BULK_BUFFER_BYTES, Pipeline
    from ._progress import ProgressDisplay
    from ._remote import remote
    from ._settings import (
        ItemStageOptions,
        OnError,
        ParallelStageOptions,
        Retry,
        StageOptions,
        StageSettings,
    )
    from ._sinks import collect, reduce, sink
    from ._sources import SOURCE_BATCH, source
    from ._stage import Stage
    from ._transforms import filter as filter  # public, not starred (see __all__)
    from ._transforms import flat_map, thread
    from ._transforms import map as map  # public, not starred
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "._errors": ["ItemErrors", "OutputWrapper"],
            "._files": ["READ_CHUNK", "read_bytes", "read_lines", "write_bytes", "write_lines"],
            "._iterate": ["ITER_BUFFER", "PipelineIterator"],
            "._operators": [
                "batch",
                "skip",
                "take",
                "tee",
                "throttle",
                "tumbling",
                "unbatch",
                "window",
            ],
            "._pipeline": ["BULK_BUFFER_BYTES", "Pipeline"],
            "._progress": ["ProgressDisplay"],
            "._remote": ["remote"],
            "._settings": [
                "ItemStageOptions",
                "OnError",
                "ParallelStageOptions",
                "Retry",
                "StageOptions",
                "StageSettings",
            ],
            "._sinks": ["collect", "reduce", "sink"],
            "._sources": ["SOURCE_BATCH", "source"],
            "._stage": ["Stage"],
            "._transforms": ["filter", "flat_map", "thread", "map"],
        },
    )

# map and filter are public but not starred: they would shadow the builtins.
__all__ = [
    "BULK_BUFFER_BYTES",
    "ITER_BUFFER",
    "READ_CHUNK",
    "SOURCE_BATCH",
    "ItemErrors",
    "ItemStageOptions",
    "OnError",
    "OutputWrapper",
    "ParallelStageOptions",
    "Pipeline",
    "PipelineIterator",
    "ProgressDisplay",
    "Retry",
    "Stage",
    "StageOptions",
    "StageSettings",
    "batch",
    "collect",
    "flat_map",
    "read_bytes",
    "read_lines",
    "reduce",
    "remote",
    "sink",
    "skip",
    "source",
    "take",
    "tee",
    "thread",
    "throttle",
    "tumbling",
    "unbatch",
    "window",
    "write_bytes",
    "write_lines",
]
