"""The spec of a Python worker process: how ``python -m pipekit worker`` is started."""

from __future__ import annotations

import sys
from typing import Any

from ..adapters.stdio import ProcessSpec, Redirect, StdioMode
from ._child.boot import boot_argv
from ._wire import FD_ENV, WorkerMode, WorkerModeName


def worker_spec(
    target: str,
    *,
    mode: WorkerMode | WorkerModeName = WorkerMode.STREAM,
    init: str | None = None,
    python: str | None = None,
    **options: Any,
) -> ProcessSpec:
    """The spec of a Python worker process: what ``python -m pipekit worker TARGET`` does
    (started through a bootstrap that imports only the child runtime, see
    :mod:`pipekit.workers._child.boot`), with its framed channel on a dedicated socket
    (stdout stays free for ``print``), whose descriptor number the worker finds in
    ``$PIPEKIT_FD``.

    ``target`` is ``"package.module:function"`` or a ``.py`` path (its ``main``);
    ``mode`` ``stream`` hands the function the whole stream, ``item`` calls it once per
    item. ``init`` names a function the worker calls once before any message.
    ``options`` are more :class:`~pipekit.adapters.stdio.ProcessSpec` fields."""
    mode = WorkerMode(mode)
    args = [target, "--mode", mode.value]
    if init is not None:
        args += ["--init", init]
    argv = boot_argv(python or sys.executable, args)
    options.setdefault("stdout", Redirect.INHERIT)
    options.setdefault("stdin", Redirect.NULL)
    options.setdefault("codecs", ("msgpack",))
    options.setdefault("name", target)
    return ProcessSpec(tuple(argv), mode=StdioMode.FRAMES, channel=FD_ENV, **options)
