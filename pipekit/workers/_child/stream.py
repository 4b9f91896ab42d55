"""Stream mode: the target owns the stream. The blocking shapes run in the worker
thread (with the module-level functions of :mod:`pipekit.child` bound to its port); the
async shape runs on the trio loop with the framed pipe itself."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import trio

from ...adapters.thread import ThreadPort
from ...kernel.framed import FramedPipe
from .outcome import EXIT_OK, ChannelLost, Failure, is_channel_loss
from .targets import StreamShape

# -- the module-level API (blocking shapes) ---------------------------------------------

_port: ThreadPort | None = None


def _current_port() -> ThreadPort:
    port = _port
    if port is None:
        raise RuntimeError(
            "pipekit.child: no worker stream here (these functions work in code run by "
            "`pipekit worker` in stream mode, in a blocking shape)"
        )
    return port


def messages() -> Iterator[Any]:
    """Iterate over the incoming messages until the parent ENDs its stream (raises the
    parent's :class:`~pipekit.kernel.RemoteError` if it failed it)."""
    return iter(_current_port())


def receive() -> Any:
    """Block until the next incoming message; :class:`trio.EndOfChannel` at the end."""
    return _current_port().receive()


def receive_batch(max_items: int | None = None) -> list[Any]:
    """Block until at least one message is available; return up to ``max_items``."""
    return _current_port().receive_batch(max_items)


def send(value: Any) -> None:
    """Send one message to the parent (blocks while the parent applies backpressure)."""
    _current_port().send(value)


def send_batch(values: Sequence[Any]) -> None:
    """Send several messages in order, in one hand-off (much cheaper than :func:`send`
    per message)."""
    _current_port().send_batch(values)


# -- the shapes -------------------------------------------------------------------------


def stream_body(
    fn: Callable[..., Any],
    shape: StreamShape,
    init: Callable[[], Any] | None,
    failures: list[Failure],
) -> Callable[[ThreadPort], None]:
    """The worker thread's body for a blocking shape: ``init``, then ``fn`` with the
    port (the functions above are bound to it meanwhile). What it raises is captured in
    ``failures``; ``sys.exit(0)`` or ``sys.exit()`` is a normal return."""

    def body(port: ThreadPort) -> None:
        global _port
        _port = port
        try:
            if init is not None:
                init()
            if shape == StreamShape.PORT:
                fn(port)
            elif shape == StreamShape.GENERATOR:
                send_one = port.send
                for value in fn(iter(port)):
                    send_one(value)
            else:
                fn()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                failures.append(Failure(exc))
                raise
        except BaseException as exc:
            failures.append(Failure(exc))
            raise
        finally:
            _port = None

    return body


async def run_async(
    pipe: FramedPipe,
    fn: Callable[..., Awaitable[Any]],
    nargs: int,
    init: Callable[[], Any] | None,
) -> int:
    """Run the async shape (``init`` in a thread first) on ``pipe``; return the exit
    code. Raises :class:`ChannelLost` if what ``fn`` raised means the channel broke."""
    try:
        if init is not None:
            await trio.to_thread.run_sync(init, abandon_on_cancel=True)
        await (fn(pipe) if nargs == 1 else fn(pipe, pipe))
    except SystemExit as exc:
        if exc.code in (None, 0):
            return EXIT_OK
        return Failure(exc).report(pipe)
    except Exception as exc:
        if is_channel_loss(exc, pipe):
            raise ChannelLost(str(exc)) from None
        return Failure(exc).report(pipe)
    return EXIT_OK
