"""``pk.run`` (Python workers) and ``pk.cmd`` (any executable): a :class:`Worker` from
the caller's arguments."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Unpack

from ..adapters.stdio import (
    DEFAULT_MAX_LINE,
    ProcessSpec,
    Redirect,
    RedirectName,
    StdioMode,
    StdioModeName,
)
from ..pipeline import ItemStageOptions, StageSettings
from ._handle import Worker
from ._launch import worker_spec
from ._targets import resolve_target
from ._wire import WorkerMode, WorkerModeName


def run(
    target: str | os.PathLike[str] | Callable[..., Any],
    *,
    mode: WorkerMode | WorkerModeName = WorkerMode.STREAM,
    init: str | Callable[[], Any] | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: Redirect | RedirectName = "null",
    stdout: Redirect | RedirectName = "inherit",
    stderr: Redirect | RedirectName = "pipe",
    kill_grace: float = 5.0,
    detach: bool = False,
    **options: Unpack[ItemStageOptions],
) -> Worker:
    """A Python worker process running ``target``: a module-level function,
    ``"package.module:function"`` or a ``.py`` path (its ``main``); a function goes by
    the name the worker imports it by (:func:`~pipekit.workers.target_spec` says which
    can, and refuses lambdas and closures). The worker reads its input stream and writes results
    (``mode="stream"``), or is called once per item (``mode="item"``); ``init`` names a
    function it calls once first. Its framed channel is a dedicated descriptor, so its
    stdout (inherited by default) is free for ``print``.

    As a pipeline stage, ``workers=N`` runs N processes. An item-mode worker gives one
    result per message, in order (it runs on a :class:`~pipekit.WorkerPool`); a
    stream-mode worker may emit any number of messages per input, so N of them cannot
    keep order: pass ``ordered=False``. The other keywords are the
    :class:`~pipekit.pipeline.ItemStageOptions`.

    ``timeout``: in ``mode="stream"``, the seconds the process may run before it is
    killed; in ``mode="item"``, the seconds one item may take (the worker running it is
    killed and replaced, the item fails with a ``timeout`` :class:`~pipekit.WorkerError`).
    ``on_error`` and ``retry`` need ``mode="item"``: a stream-mode worker's output is not
    tied to its input items (use ``restart=`` to restart it).

    Example::

        pk.source(texts) | pk.run("model.py:predict", mode="item", workers=4,
                                  timeout=30, retry=2, on_error="skip")
    """
    mode = WorkerMode(mode)
    settings = StageSettings.from_options("run", options, ItemStageOptions)
    if mode == WorkerMode.STREAM and (settings.on_error != "raise" or settings.retry):
        raise ValueError(
            "on_error= and retry= handle one failed call per item: they need mode='item'. "
            "A stream-mode worker's output is not tied to its input items; restart= "
            "restarts a failed worker"
        )
    if stdout == Redirect.PIPE:
        raise ValueError(
            "a Python worker's stdout carries its print() output, not messages: "
            "use stdout='inherit' (the default) or 'null'"
        )
    if settings.workers > 1 and settings.ordered and mode == WorkerMode.STREAM:
        raise ValueError(
            "a stream-mode worker may emit any number of messages per input, so the order "
            "of N processes' output cannot be kept: pass ordered=False"
        )
    where = resolve_target(target)
    init_spec: str | None = None
    env = where.env(env)
    if init is not None:
        init_where = resolve_target(init)
        init_spec = init_where.spec
        env = init_where.env(env)
    spec = worker_spec(
        where.spec,
        mode=mode,
        init=init_spec,
        timeout=timeout if mode == WorkerMode.STREAM else None,
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        kill_grace=kill_grace,
    )
    label = f"run({os.path.basename(where.spec)})"
    worker = Worker(spec, label=label, options=settings, detach=detach)
    if mode == WorkerMode.ITEM:
        worker.pool_args = {
            "target": where.spec,
            "init": init_spec,
            "timeout": timeout,
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
    **options: Unpack[ItemStageOptions],
) -> Worker:
    """Any executable as a worker. Messages travel as JSON lines by default
    (``mode="jsonl"``); ``"lines"`` sends and receives text lines (a message that ends
    with a newline gets no second one), ``"bytes"`` raw chunks, ``"frames"`` pipekit/1
    on stdin/stdout. ``workers=N`` (with ``ordered=False``) runs N copies in a pipeline,
    least-loaded first. ``timeout``: the seconds the process may run before it is killed.
    The other keywords are the :class:`~pipekit.pipeline.ItemStageOptions`.

    A command is one stream, not one call per item: its output is not tied to its
    input messages, and a failing process fails the stage (``restart=`` restarts it).
    So ``retry=`` is refused, and ``on_error=`` needs ``mode="jsonl"``, where it applies
    to what can fail on its own: a message that cannot be encoded as JSON (the item is
    the message) and an output line that is not JSON (the item is the line).

    Example::

        pk.source(records) | pk.cmd("jq", "-c", ".user") | pk.sink(print)
        pk.cmd("ls", "/", mode="lines") | pk.map(str.upper)
    """
    settings = StageSettings.from_options("cmd", options, ItemStageOptions)
    if settings.retry is not None:
        raise ValueError(
            "retry= retries one call per item, and a command is one stream: its output is "
            "not tied to its input messages. restart= restarts a failed process; for one "
            "call per item use pk.run(target, mode='item') or pk.thread(fn)"
        )
    if settings.on_error != "raise" and StdioMode(mode) != StdioMode.JSONL:
        raise ValueError(
            f"on_error= on a command applies to the JSON of each message and each output "
            f"line (mode='jsonl'): in mode {str(mode)!r} no single message can fail on its "
            "own, and a failing process fails the stage (restart= restarts it)"
        )
    if settings.workers > 1 and settings.ordered:
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
    return Worker(spec, label=label, options=settings, detach=detach)
