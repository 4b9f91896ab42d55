"""The entry of a worker process, :func:`run_worker`: claim the channel, load the
target, serve it over pipekit/1 as the accepting side, and exit with the right code.

The channel is the socket whose descriptor number is in :data:`FD_ENV`, so that the
child's own stdout and stderr stay free; without it the channel is the child's
stdin/stdout, and then descriptor 1 and ``sys.stdout`` are redirected to stderr and
stdin to ``/dev/null``, so that nothing the worker prints or reads can corrupt the
frames.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Awaitable, Callable

import trio

from ...kernel.errors import PipekitError
from ...kernel.framed import FramedPipe, framed_pipe
from .._wire import WorkerMode, WorkerModeName
from .bridge import bridge
from .channel import claim_channel, flush_stdio, hold_freed_memory, say
from .items import item_body, no_mark, progress_marker, send_item_replies
from .outcome import EXIT_FAILED, EXIT_USAGE, ChannelLost, Failure, Stop
from .signals import install_signal_handlers, state
from .stream import run_async, stream_body
from .targets import StreamShape, TargetError, check_callable_with, load_target, stream_shape

Mode = WorkerModeName


def _open_channel() -> Callable[[], trio.abc.Stream]:
    """Claim the channel now (before user code runs, see :func:`claim_channel`); the
    returned factory wraps it in a trio stream inside the run."""
    channel = claim_channel()
    if isinstance(channel, tuple):
        rfd, wfd = channel
        return lambda: trio.StapledStream(trio.lowlevel.FdStream(wfd), trio.lowlevel.FdStream(rfd))
    return lambda: trio.SocketStream(trio.socket.from_stdlib_socket(channel))


async def _serve(
    make_stream: Callable[[], trio.abc.Stream],
    name: str,
    runner: Callable[[FramedPipe], Awaitable[int]],
) -> int:
    code = EXIT_FAILED
    with state.scope:
        state.token = trio.lowlevel.current_trio_token()
        if state.stopping:  # signalled while the run was starting
            state.scope.cancel()
        try:
            async with framed_pipe(make_stream(), initiator=False, name=name) as pipe:
                try:
                    code = await runner(pipe)
                except ChannelLost as exc:
                    state.lost = True
                    say(f"channel to the parent lost: {exc}")
                    code = EXIT_FAILED
                except Stop as stop:
                    code = stop.code
        except (PipekitError, trio.BrokenResourceError) as exc:
            state.lost = True
            say(f"channel failed: {exc}")
            code = EXIT_FAILED
        finally:
            state.token = None
    if state.stopping:
        return state.exit_code
    return code


def run_worker(
    target: str, *, mode: WorkerMode | Mode = WorkerMode.STREAM, init: str | None = None
) -> int:
    """Serve ``target`` to the parent over the channel (see :mod:`pipekit.child`) and
    return the exit code; after SIGTERM or a lost channel the process exits at once
    (``os._exit``, after flushing stdout/stderr) so that stray threads cannot hold it.

    Call it in a fresh process only: it claims the channel descriptors and installs
    signal handlers."""
    install_signal_handlers()
    loading = target
    try:
        make_stream = _open_channel()
        mark = progress_marker() if mode == WorkerMode.ITEM else no_mark
        fn = load_target(target)
        loading = init or target
        init_fn = load_target(init) if init is not None else None
        if init_fn is not None:
            check_callable_with(init_fn, 0, init or "", "INIT must take no arguments")
        runner: Callable[[FramedPipe], Awaitable[int]]
        failures: list[Failure] = []
        if mode == WorkerMode.ITEM:
            check_callable_with(fn, 1, target, "an item-mode target takes one argument")
            body = item_body(fn, init_fn, failures, mark, end=trio.EndOfChannel)

            def runner(pipe: FramedPipe) -> Awaitable[int]:
                return bridge(pipe, body, failures, unencodable=send_item_replies)

        elif mode == WorkerMode.STREAM:
            shape, nargs = stream_shape(fn, target)
            if shape == StreamShape.ASYNC:

                def runner(pipe: FramedPipe) -> Awaitable[int]:
                    return run_async(pipe, fn, nargs, init_fn)

            else:
                stream_thread_body = stream_body(fn, shape, init_fn, failures)

                def runner(pipe: FramedPipe) -> Awaitable[int]:
                    return bridge(pipe, stream_thread_body, failures)

        else:
            raise TargetError(f"unknown mode {mode!r} (stream or item)")
    except TargetError as exc:
        say(str(exc))
        return EXIT_USAGE
    except Exception as exc:
        traceback.print_exc()
        say(f"importing {loading} failed: {type(exc).__name__}: {exc}")
        return EXIT_USAGE

    hold_freed_memory()
    state.running = True
    try:
        code = trio.run(_serve, make_stream, target, runner)
    finally:
        state.running = False
    if state.stopping or state.lost:
        # Signalled, or the parent is gone: exit now, whatever threads user code left.
        flush_stdio()
        os._exit(code)
    return code
