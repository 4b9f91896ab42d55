"""pipekit: stream pipelines with real backpressure.

A kernel wires *modules* together with duplex *pipes*; adapters carry those pipes
in-process, across threads, through subprocess stdio and over sockets, all speaking one
protocol (data / pause / resume / end / error). This package is the user-facing layer:
declarative pipelines (``pk.source(...) | pk.map(...) | pk.sink(...)``), the CLI and
re-exports of the kernel's errors.
"""

from .adapters.stdio import ProcessError
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
from .pipeline import Pipeline, Stage, collect, filter, map, remote, sink, source, thread
from .workers import ProcessChain, Worker, WorkerError, WorkerPool, cmd, run

__version__ = "0.1.0"

__all__ = [
    "CodecError",
    "ErrorKind",
    "FlowControlError",
    "LocalProtocolError",
    "ModuleError",
    "PipekitError",
    "Pipeline",
    "ProcessChain",
    "ProcessError",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "Stage",
    "WiringError",
    "Worker",
    "WorkerError",
    "WorkerPool",
    "__version__",
    "cmd",
    "collect",
    "filter",
    "map",
    "open_kernel",
    "remote",
    "run",
    "sink",
    "source",
    "thread",
]
