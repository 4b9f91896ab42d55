"""``pk.run`` (Python workers) and ``pk.cmd`` (any executable): a :class:`Worker` from
the caller's arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from ..adapters.stdio import (
    DEFAULT_MAX_LINE,
    ProcessSpec,
    Redirect,
    RedirectName,
    StdioMode,
    StdioModeName,
)
from ..kernel import RestartPolicy
from ..pipeline import _options
from ._handle import Worker
from ._launch import worker_spec


def run(
    target: str | os.PathLike[str],
    *,
    mode: Literal["stream", "item"] = "stream",
    init: str | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Redirect | RedirectName = "null",
    stdout: Redirect | RedirectName = "inherit",
    stderr: Redirect | RedirectName = "pipe",
    kill_grace: float = 5.0,
    detach: bool = False,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Worker:
    """A Python worker process running ``target``: ``"package.module:function"`` or a
    ``.py`` path (its ``main``). The worker reads its input stream and writes results
    (``mode="stream"``), or is called once per item (``mode="item"``); ``init`` names a
    function it calls once first. Its framed channel is a dedicated descriptor, so its
    stdout (inherited by default) is free for ``print``.

    As a pipeline stage, ``workers=N`` runs N processes. An item-mode worker gives one
    result per message, in order (it runs on a :class:`~pipekit.WorkerPool`); a
    stream-mode worker may emit any number of messages per input, so N of them cannot
    keep order: pass ``ordered=False``."""
    if stdout == Redirect.PIPE:
        raise ValueError(
            "a Python worker's stdout carries its print() output, not messages: "
            "use stdout='inherit' (the default) or 'null'"
        )
    if workers > 1 and ordered and mode == "stream":
        raise ValueError(
            "a stream-mode worker may emit any number of messages per input, so the order "
            "of N processes' output cannot be kept: pass ordered=False"
        )
    spec = worker_spec(
        os.fspath(target),
        mode=mode,
        init=init,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        kill_grace=kill_grace,
    )
    label = f"run({os.path.basename(os.fspath(target))})"
    worker = Worker(
        spec,
        label=label,
        options=_options(buffer, restart, max_restarts, backoff, buffer_bytes),
        detach=detach,
        workers=workers,
        ordered=ordered,
    )
    if mode == "item":
        worker.pool_args = {
            "target": os.fspath(target),
            "init": init,
            "env": env,
            "cwd": cwd,
            "stdout": stdout,
            "stderr": stderr,
            "kill_grace": kill_grace,
        }
    return worker


def cmd(
    program: str | os.PathLike[str],
    *args: str | os.PathLike[str],
    mode: StdioMode | StdioModeName = "jsonl",
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Redirect | RedirectName = "pipe",
    stdout: Redirect | RedirectName = "pipe",
    stderr: Redirect | RedirectName = "pipe",
    kill_grace: float = 5.0,
    max_line: int = DEFAULT_MAX_LINE,
    detach: bool = False,
    workers: int = 1,
    ordered: bool = True,
    buffer: int | None = None,
    buffer_bytes: int | None = None,
    restart: str | RestartPolicy = "never",
    max_restarts: int = 3,
    backoff: float = 0.1,
) -> Worker:
    """Any executable as a worker. Messages travel as JSON lines by default
    (``mode="jsonl"``); ``"lines"`` sends and receives text lines, ``"bytes"`` raw
    chunks, ``"frames"`` pipekit/1 on stdin/stdout. ``workers=N`` (with
    ``ordered=False``) runs N copies in a pipeline, least-loaded first."""
    if workers > 1 and ordered:
        raise ValueError(
            "a command may emit any number of messages per input, so the order of N "
            "copies' output cannot be kept: pass ordered=False"
        )
    argv = (os.fspath(program), *(os.fspath(a) for a in args))
    spec = ProcessSpec(
        argv,
        mode=mode,
        timeout=timeout,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        kill_grace=kill_grace,
        max_line=max_line,
    )
    label = f"cmd({os.path.basename(argv[0])})"
    return Worker(
        spec,
        label=label,
        options=_options(buffer, restart, max_restarts, backoff, buffer_bytes),
        detach=detach,
        workers=workers,
        ordered=ordered,
    )
