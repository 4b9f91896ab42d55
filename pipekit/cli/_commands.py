"""What each ``pipekit`` subcommand does, given its parsed arguments."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from ..kernel import ModuleError
from ..pipeline import Pipeline, ProgressDisplay, Stage
from .report import format_stats

__all__ = ["LOG_EVERY", "cmd_demo", "cmd_run", "cmd_serve", "cmd_worker"]

LOG_EVERY = 10.0
"""Seconds between two progress lines when stderr is not a terminal."""


def _terminal_width() -> int | None:
    """stderr's width if it is a terminal (the tables then fit it), else None."""
    if not sys.stderr.isatty():
        return None
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return shutil.get_terminal_size((80, 24)).columns


def _run_pipeline(
    pipeline: Pipeline, *, quiet: bool, every: float = LOG_EVERY, total: int | None = None
) -> Any:
    """Run with a live display on stderr (log lines off a terminal); the table that
    follows replaces the display at the end. On a failure, the statistics at that
    moment go to stderr before the error is raised on."""
    progress = None
    if not quiet:
        progress = ProgressDisplay(sys.stderr, every=every, transient=True, total=total)
    start = time.perf_counter()
    try:
        return pipeline.run(progress=progress)
    except ModuleError:
        if not quiet:
            elapsed = time.perf_counter() - start
            print(f"per-stage statistics at the failure ({elapsed:.2f} s):", file=sys.stderr)
            print(format_stats(pipeline.stats, _terminal_width()), file=sys.stderr)
            print(file=sys.stderr)
        raise


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import build_pipeline

    pipeline, stats = build_pipeline(lines=args.lines, seed=args.seed, workers=args.workers)
    print(f"pipekit demo: {args.lines:,} synthetic access-log lines (seed {args.seed})")
    print("pipeline: " + " | ".join(s.label for s in pipeline.stages))
    start = time.perf_counter()
    _run_pipeline(pipeline, quiet=args.quiet, every=args.log_every, total=args.lines)
    elapsed = time.perf_counter() - start
    print()
    print(stats.report())
    print()
    print(
        f"per-stage statistics ({elapsed:.2f} s, {args.lines / elapsed:,.0f} lines/s end to end):"
    )
    print(format_stats(pipeline.stats))
    return 0


def _load_pipeline(spec: str) -> Pipeline:
    path_text, _, name = spec.partition(":")
    name = name or "pipeline"
    path = Path(path_text)
    if not path.is_file():
        raise SystemExit(f"pipekit run: no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(f"pipekit_user_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise SystemExit(f"pipekit run: cannot load {path} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    obj = getattr(module, name, None)
    if obj is None:
        raise SystemExit(f"pipekit run: {path} defines no {name!r}")
    if isinstance(obj, Stage):
        obj = Pipeline([obj])
    if callable(obj) and not isinstance(obj, Pipeline):
        try:
            obj = obj()
        except TypeError as exc:
            raise SystemExit(f"pipekit run: calling {path}:{name}() failed: {exc}") from None
    if not isinstance(obj, Pipeline):
        raise SystemExit(
            f"pipekit run: {path}:{name} is a {type(obj).__name__}, not a pipekit Pipeline"
        )
    return obj


def cmd_run(args: argparse.Namespace) -> int:
    pipeline = _load_pipeline(args.target)
    start = time.perf_counter()
    result = _run_pipeline(pipeline, quiet=args.quiet, every=args.log_every)
    elapsed = time.perf_counter() - start
    if isinstance(result, list):
        print(f"collected {len(result):,} message(s)")
        for item in result[: args.show]:
            print(f"  {item!r}")
        if len(result) > args.show:
            print(f"  ... ({len(result) - args.show:,} more)")
    elif result is not None:
        print(repr(result))
    if not args.quiet:
        print(f"\nper-stage statistics ({elapsed:.2f} s):", file=sys.stderr)
        print(format_stats(pipeline.stats, _terminal_width()), file=sys.stderr)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ..child import run_worker

    return run_worker(args.target, mode=args.mode, init=args.init)


SERVE_CANNOT_LISTEN = 1
"""``pipekit serve``'s exit status when an endpoint cannot be opened (a port in use,
one that needs privileges, an unknown host): one line on stderr says which and why."""
SERVE_INTERRUPTED = 130
"""``pipekit serve``'s exit status after Ctrl-C (SIGINT), with one line on stderr."""


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` (itself, if it is not a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def cmd_serve(args: argparse.Namespace) -> int:
    from ..adapters import websocket
    from .serve import serve_demo

    serving = False

    async def main() -> None:
        nonlocal serving
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(
                partial(
                    serve_demo,
                    host=args.host,
                    port=args.port,
                    tcp_port=args.tcp_port,
                    token=args.token,
                    origins=args.origin or (websocket.SAME_ORIGIN,),
                    count=args.count,
                    rate=args.rate or None,
                )
            )
            serving = True
            query = f"?token={quote(args.token)}" if args.token else ""
            print(f"pipekit serve: demo page     {addresses['page']}{query}")
            print(f"               browser client {addresses['page']}pipekit.js")
            print(f"               WebSocket      {addresses['websocket']}")
            if "tcp" in addresses:
                host, port = addresses["tcp"]
                print(f"               pipekit/1 TCP  {host}:{port}")
            print("open the page in a browser; every peer joins its own pipeline (Ctrl-C stops)")
            sys.stdout.flush()
            if args.exit_after is not None:
                await trio.sleep(args.exit_after)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseException as exc:  # Ctrl-C and a busy port are one line, not a traceback
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print("pipekit serve: stopped (Ctrl-C)", file=sys.stderr)
            return SERVE_INTERRUPTED
        failures = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
        if not serving and failures and all(isinstance(f, OSError) for f in failures):
            failure = failures[0]
            assert isinstance(failure, OSError)
            print(f"pipekit serve: {failure.strerror or failure}", file=sys.stderr)
            return SERVE_CANNOT_LISTEN
        raise
    return 0
