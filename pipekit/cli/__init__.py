"""The ``pipekit`` command (also ``python -m pipekit``): its arguments and dispatch.

Exit status: 0 success; 1 a failure (a stage that failed, a file or name that is
missing, an endpoint that cannot be opened), with one line on stderr (``--traceback``
prints the full story); 2 bad arguments; 130 after Ctrl-C; 143 after SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from .. import __version__
from ..kernel import ModuleError, PipekitError
from ..workers import WorkerMode

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
"""A failure, said in one line on stderr (the whole traceback with ``--traceback``)."""
EXIT_USAGE = 2
"""Bad arguments (also values the command refuses, such as ``--workers 0``)."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C."""


def _port(text: str) -> int:
    """A TCP port number for argparse: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return port


def _seconds(text: str) -> float:
    """A number of seconds (0 or more) for argparse."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipekit",
        description="Stream pipelines with real backpressure.",
        epilog="Exit status: 0 success; 1 failure (one line on stderr); 2 bad arguments; "
        "130 Ctrl-C; 143 SIGTERM.",
    )
    parser.add_argument("--version", action="version", version=f"pipekit {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="on a failure, print the full traceback"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a real pipeline over generated access logs")
    demo.add_argument(
        "--lines", type=int, default=200_000, help="log lines to generate (default 200000)"
    )
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--workers", type=int, default=2, help="threads for the enrich stage")
    demo.add_argument("--quiet", action="store_true", help="no live progress display")
    demo.add_argument(
        "--log-every",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a terminal (default 10)",
    )
    demo.set_defaults(func="demo")

    run = sub.add_parser("run", help="run the pipeline declared in a Python file")
    run.add_argument(
        "target", metavar="FILE[:NAME]", help="file and variable (default NAME: pipeline)"
    )
    run.add_argument(
        "--show", type=int, default=10, help="collected messages to print (default 10)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress and no statistics")
    run.add_argument(
        "--log-every",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds between progress lines when stderr is not a terminal (default 10)",
    )
    run.set_defaults(func="run")

    worker = sub.add_parser(
        "worker",
        help="serve a Python function as a process worker (the child side of pk.run)",
        description="Serve TARGET to the parent process over pipekit/1: on the socket whose "
        "descriptor is in $PIPEKIT_FD, else on stdin/stdout. See pipekit.child.",
    )
    worker.add_argument(
        "target", metavar="TARGET", help="package.module:function, file.py or file.py:function"
    )
    worker.add_argument(
        "--mode",
        choices=[mode.value for mode in WorkerMode],
        default=WorkerMode.STREAM.value,
        help="stream: the target owns the stream (default); item: fn(item) -> result",
    )
    worker.add_argument(
        "--init", metavar="INIT", help="a zero-argument callable run once before any message"
    )
    worker.set_defaults(func="worker")

    serve = sub.add_parser(
        "serve",
        help="serve WebSocket/TCP endpoints, the browser client and the live demo page",
        description="Every peer that connects (the demo page at / over WebSocket, or a "
        "pipekit/1 program over TCP) joins a pipeline as a module: readings go to it, its "
        "transformed readings come back and are counted.",
        epilog="Exit status: 1 if an endpoint cannot be opened (a port in use, say) and 130 "
        "after Ctrl-C, each with one line on stderr; 2 for bad arguments.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8765, help="HTTP/WebSocket port (8765)")
    serve.add_argument("--tcp-port", type=_port, help="also serve pipekit/1 over TCP on this port")
    serve.add_argument("--token", help="require this token in every peer's HELLO")
    serve.add_argument(
        "--origin",
        action="append",
        help="allowed WebSocket Origin (repeatable; default: the demo's own pages only)",
    )
    serve.add_argument("--count", type=int, help="readings per peer (default: endless)")
    serve.add_argument(
        "--rate", type=float, default=2000.0, help="readings per second per peer (0: unpaced)"
    )
    serve.add_argument("--exit-after", type=float, help=argparse.SUPPRESS)
    serve.set_defaults(func="serve")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # The commands import trio and the pipeline on first use: --help and --version
        # need neither.
        from . import _commands

        command: Callable[[argparse.Namespace], int] = getattr(_commands, f"cmd_{args.func}")
        return int(command(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ValueError, TypeError) as exc:
        # A value the command refuses (``--workers 0``): a usage error, in one line.
        if args.traceback:
            traceback.print_exc()
        parser.exit(EXIT_USAGE, f"pipekit {args.command}: {exc}\n")
    except Exception as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"pipekit {args.command}: {_one_line(exc)}", file=sys.stderr)
        cause = exc.__cause__
        if isinstance(exc, ModuleError) and cause is not None and str(cause) not in str(exc):
            print(f"  caused by {type(cause).__name__}: {_one_line(cause)}", file=sys.stderr)
        if isinstance(exc, ModuleError) and exc.item_index is not None:
            item = f": {exc.item}" if exc.item is not None else ""
            print(f"  on item {exc.item_index} of the stage's input{item}", file=sys.stderr)
        if not args.traceback:
            print("  (--traceback for the full story)", file=sys.stderr)
        return EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    """``exc`` as one line: its first line, its type named unless it is a pipekit error
    (whose messages say what failed)."""
    text = (str(exc).strip().splitlines() or [""])[0]
    if isinstance(exc, PipekitError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
