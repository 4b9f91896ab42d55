"""pipekit.kernel: the wire protocol, codecs, pipes and the kernel.

The kernel knows no transport: adapters (``pipekit.adapters``) turn threads, processes
and sockets into :class:`Pipe` objects and modules; this package gives them the one
protocol state machine (:mod:`pipekit.kernel.protocol`), the codecs, in-process pipes,
the framed pipe over any trio stream, and :func:`open_kernel`.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import codecs, protocol
    from .errors import (
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
    )
    from .framed import FramedPipe, MessageTransport, framed_pipe
    from .kernel import (
        Kernel,
        ModuleHandle,
        ModuleState,
        ModuleStats,
        PortRef,
        RestartPolicy,
        Topology,
        open_kernel,
    )
    from .lane import DEFAULT_CAPACITY, Lane
    from .modules import (
        FunctionModule,
        MapModule,
        Module,
        PipeOpener,
        RemoteModule,
        as_module,
        batch_failure,
        process_batch,
    )
    from .options import PipeOptions, PipeSettings
    from .pipe import LocalPipe, Pipe, PipeStats, open_pipe_pair
else:
    from .._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            ".": ["codecs", "protocol"],
            ".errors": [
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
            ],
            ".framed": ["FramedPipe", "MessageTransport", "framed_pipe"],
            ".kernel": [
                "Kernel",
                "ModuleHandle",
                "ModuleState",
                "ModuleStats",
                "PortRef",
                "RestartPolicy",
                "Topology",
                "open_kernel",
            ],
            ".lane": ["DEFAULT_CAPACITY", "Lane"],
            ".modules": [
                "FunctionModule",
                "MapModule",
                "Module",
                "PipeOpener",
                "RemoteModule",
                "as_module",
                "batch_failure",
                "process_batch",
            ],
            ".options": ["PipeOptions", "PipeSettings"],
            ".pipe": ["LocalPipe", "Pipe", "PipeStats", "open_pipe_pair"],
        },
    )

__all__ = [
    "DEFAULT_CAPACITY",
    "CodecError",
    "ErrorKind",
    "FlowControlError",
    "FramedPipe",
    "FunctionModule",
    "Kernel",
    "Lane",
    "LocalPipe",
    "LocalProtocolError",
    "MapModule",
    "MessageTransport",
    "Module",
    "ModuleError",
    "ModuleHandle",
    "ModuleState",
    "ModuleStats",
    "Pipe",
    "PipeOpener",
    "PipeOptions",
    "PipeSettings",
    "PipeStats",
    "PipekitError",
    "PortRef",
    "ProtocolError",
    "RemoteError",
    "RemoteModule",
    "RemoteProtocolError",
    "RestartPolicy",
    "Topology",
    "WiringError",
    "as_module",
    "batch_failure",
    "codecs",
    "framed_pipe",
    "open_kernel",
    "open_pipe_pair",
    "process_batch",
    "protocol",
]
