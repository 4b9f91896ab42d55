"""Inside a Python worker process (``python -m pipekit worker TARGET``): the calls a
target uses, and the runtime that serves it.

A stream-mode target without parameters (``def main()``) talks to the parent through
this module's functions: :func:`messages`, :func:`receive`, :func:`receive_batch`,
:func:`send` and :func:`send_batch` (they work only in code that ``pipekit worker`` runs
in a blocking stream shape; elsewhere they raise :class:`RuntimeError`).
:func:`run_worker` is the process's entry; :func:`load_target` and :func:`stream_shape`
say how it finds and calls ``TARGET``. The parent hands the child its channel in
:data:`FD_ENV` and, in item mode, its progress record in :data:`PROGRESS_ENV`; the
process exits with one of the ``EXIT_*`` codes (or ``n`` after ``sys.exit(n)``).
The worker's shapes, item protocol, failures and signals are described in
``docs/guide.md``, section 7.
"""

from __future__ import annotations

from .workers._child.outcome import EXIT_FAILED, EXIT_OK, EXIT_TERMINATED, EXIT_USAGE
from .workers._child.runtime import Mode as Mode
from .workers._child.runtime import run_worker
from .workers._child.stream import messages, receive, receive_batch, send, send_batch
from .workers._child.targets import StreamShape as StreamShape
from .workers._child.targets import TargetError, load_target, stream_shape
from .workers._wire import FD_ENV, PROGRESS_ENV

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "FD_ENV",
    "PROGRESS_ENV",
    "TargetError",
    "load_target",
    "messages",
    "receive",
    "receive_batch",
    "run_worker",
    "send",
    "send_batch",
    "stream_shape",
]
