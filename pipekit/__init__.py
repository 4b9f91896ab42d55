"""pipekit: stream pipelines with real backpressure.

A kernel wires *modules* together with duplex *pipes*; adapters carry those pipes
in-process, across threads, through subprocess stdio and over sockets, all speaking one
protocol (data / pause / resume / end / error). This package is the user-facing layer:
declarative pipelines (``pk.source(...) | pk.map(...) | pk.sink(...)``), worker
processes and pools, the concurrency helpers (``pk.parallel_map``, ``pk.stream_map``,
``pk.spawn_link``, ``pk.select``, ...), the CLI and re-exports of the kernel's errors.

Example::

    import pipekit as pk

    p = pk.read_lines("app.log") | pk.filter(lambda l: "ERROR" in l) | pk.map(str.upper)
    for line in p.take(5):         # the first five; then every stage stops
        print(line)

``pk.map`` and ``pk.filter`` are not in ``__all__``: ``from pipekit import *`` leaves
the builtins ``map`` and ``filter`` alone. Each name is imported on its first use
(``import pipekit`` alone imports neither trio nor any floor; see ``_lazy.py``).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .actors import actor, to_actor
    from .adapters.stdio import ProcessError
    from .channels import select
    from .concurrency import (
        Atom,
        Result,
        aparallel_filter,
        aparallel_map,
        parallel_filter,
        parallel_map,
        spawn,
        spawn_link,
        stream_map,
        timeout,
    )
    from .kernel import (
        CodecError,
        ErrorKind,
        FlowControlError,
        LocalProtocolError,
        ModuleError,
        PipekitError,
        ProtocolError,
        RemoteError,
        RemoteProtocolError,
        WiringError,
        open_kernel,
    )
    from .pipeline import (
        Pipeline,
        ProgressDisplay,
        Retry,
        Stage,
        batch,
        collect,
        flat_map,
        read_bytes,
        read_lines,
        reduce,
        remote,
        sink,
        skip,
        source,
        take,
        tee,
        thread,
        throttle,
        tumbling,
        unbatch,
        window,
        write_bytes,
        write_lines,
    )
    from .pipeline import filter as filter  # public, not starred (see __all__)
    from .pipeline import map as map  # public, not starred
    from .workers import ProcessChain, Worker, WorkerError, WorkerPool, cmd, run
else:
    from ._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            ".actors": ["actor", "to_actor"],
            ".adapters.stdio": ["ProcessError"],
            ".channels": ["select"],
            ".concurrency": [
                "Atom",
                "Result",
                "aparallel_filter",
                "aparallel_map",
                "parallel_filter",
                "parallel_map",
                "spawn",
                "spawn_link",
                "stream_map",
                "timeout",
            ],
            ".kernel": [
                "CodecError",
                "ErrorKind",
                "FlowControlError",
                "LocalProtocolError",
                "ModuleError",
                "PipekitError",
                "ProtocolError",
                "RemoteError",
                "RemoteProtocolError",
                "WiringError",
                "open_kernel",
            ],
            ".pipeline": [
                "Pipeline",
                "ProgressDisplay",
                "Retry",
                "Stage",
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
                "filter",
                "map",
            ],
            ".workers": ["ProcessChain", "Worker", "WorkerError", "WorkerPool", "cmd", "run"],
        },
    )

__version__ = "0.1.0"

# map and filter are public (pk.map, pk.filter) but not starred: they would shadow the
# builtins of whoever writes "from pipekit import *".
__all__ = [
    "Atom",
    "CodecError",
    "ErrorKind",
    "FlowControlError",
    "LocalProtocolError",
    "ModuleError",
    "PipekitError",
    "Pipeline",
    "ProcessChain",
    "ProcessError",
    "ProgressDisplay",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "Result",
    "Retry",
    "Stage",
    "WiringError",
    "Worker",
    "WorkerError",
    "WorkerPool",
    "__version__",
    "actor",
    "aparallel_filter",
    "aparallel_map",
    "batch",
    "cmd",
    "collect",
    "flat_map",
    "open_kernel",
    "parallel_filter",
    "parallel_map",
    "read_bytes",
    "read_lines",
    "reduce",
    "remote",
    "run",
    "select",
    "sink",
    "skip",
    "source",
    "spawn",
    "spawn_link",
    "stream_map",
    "take",
    "tee",
    "thread",
    "throttle",
    "timeout",
    "to_actor",
    "tumbling",
    "unbatch",
    "window",
    "write_bytes",
    "write_lines",
]
