"""The stdio adapter: executables as modules.

Any executable becomes a :class:`~pipekit.kernel.Pipe` (:func:`open_process`) or a kernel
module (:class:`ProcessModule`). What the pipe sends is written to the process's stdin,
what the process writes to stdout is received, according to a :class:`StdioMode`:

* ``frames``: pipekit/1 (:func:`~pipekit.kernel.framed_pipe`), over stdin/stdout or, when
  the spec names a ``channel`` variable, over a dedicated socket whose descriptor number
  the process finds in that variable (so ``print()`` in the child goes to its stdout
  harmlessly);
* ``lines``: one ``str`` per line (UTF-8; undecodable bytes survive as surrogates);
* ``jsonl``: one JSON value per line;
* ``bytes``: ``bytes`` chunks as they come.

Several raw-mode processes can run as one *chain* (:func:`open_chain`): each one's stdout
is joined to the next one's stdin by an OS pipe, as a shell does, so the bytes between
them never pass through Python.

Processes start in their own process group. When the scope that owns them exits, or is
cancelled, every process of the group gets SIGTERM, then SIGKILL after ``kill_grace``
seconds, and is reaped: no orphans, no zombies. Failures are :class:`ProcessError` with a
``kind`` (``spawn_failed``, ``terminated``, ``timeout``, ``io_error``), the pid, exit code
or signal, and the tail of the process's stderr.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._chain import open_chain, open_process
    from ._errors import ProcessError, ProcessErrorKind
    from ._framedstdio import STDOUT_DRAIN
    from ._module import ProcessModule
    from ._pipe import ProcessPipe
    from ._raw import BYTES_READ_SIZE, READ_SIZE
    from ._spawn import PIPE_SIZE, STDERR_SETTLE, STDERR_TAIL
    from ._spec import (
        DEFAULT_MAX_LINE,
        ProcessSpec,
        Redirect,
        RedirectName,
        StdioMode,
        StdioModeName,
    )
else:
    from ..._lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "._chain": ["open_chain", "open_process"],
            "._errors": ["ProcessError", "ProcessErrorKind"],
            "._framedstdio": ["STDOUT_DRAIN"],
            "._module": ["ProcessModule"],
            "._pipe": ["ProcessPipe"],
            "._raw": ["BYTES_READ_SIZE", "READ_SIZE"],
            "._spawn": ["PIPE_SIZE", "STDERR_SETTLE", "STDERR_TAIL"],
            "._spec": [
                "DEFAULT_MAX_LINE",
                "ProcessSpec",
                "Redirect",
                "RedirectName",
                "StdioMode",
                "StdioModeName",
            ],
        },
    )

__all__ = [
    "BYTES_READ_SIZE",
    "DEFAULT_MAX_LINE",
    "PIPE_SIZE",
    "READ_SIZE",
    "STDERR_SETTLE",
    "STDERR_TAIL",
    "STDOUT_DRAIN",
    "ProcessError",
    "ProcessErrorKind",
    "ProcessModule",
    "ProcessPipe",
    "ProcessSpec",
    "Redirect",
    "RedirectName",
    "StdioMode",
    "StdioModeName",
    "open_chain",
    "open_process",
]
