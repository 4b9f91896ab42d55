"""Declarative pipelines: stages composed with ``|`` and run on a kernel.

::

    import pipekit as pk
    result = (pk.source(lines) | pk.map(parse) | pk.filter(is_error)
              | pk.thread(lookup, workers=4) | pk.collect()).run()

Every stage becomes one kernel module joined to the next by a bounded in-process pipe,
so backpressure, END and errors behave as everywhere in pipekit. Stages take the
keywords of :class:`StageOptions`: ``buffer=`` (the bound of their input buffer, in
messages), ``buffer_bytes=`` and restart options (``restart=``, ``max_restarts=``,
``backoff=``); where it makes sense also those of :class:`ParallelStageOptions`
(``workers=`` and ``ordered=``). Order is preserved unless a stage says
``ordered=False``.
"""

from ._pipeline import BULK_BUFFER_BYTES, Pipeline
from ._remote import remote
from ._settings import ParallelStageOptions, StageOptions, StageSettings
from ._sinks import collect, sink
from ._sources import SOURCE_BATCH, source
from ._stage import Stage
from ._transforms import filter, map, thread

__all__ = [
    "BULK_BUFFER_BYTES",
    "SOURCE_BATCH",
    "ParallelStageOptions",
    "Pipeline",
    "Stage",
    "StageOptions",
    "StageSettings",
    "collect",
    "filter",
    "map",
    "remote",
    "sink",
    "source",
    "thread",
]

