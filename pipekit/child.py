"""The child side of Python process workers: what runs inside ``pipekit worker TARGET``.

The parent starts ``python -m pipekit worker TARGET [--mode stream|item] [--init INIT]``
with one end of a ``socket.socketpair()`` inherited by the child and its descriptor
number in the environment variable ``PIPEKIT_FD``. The child speaks pipekit/1 on that
socket as the accepting side (the parent offers the codecs), so its own stdout and
stderr stay free: ``print()`` in a worker never touches the channel (stdout keeps
Python's buffering: block-buffered into a pipe unless ``PYTHONUNBUFFERED`` is set). Without
``PIPEKIT_FD`` the channel is the child's stdin/stdout; then descriptor 1 and
``sys.stdout`` are redirected to stderr and stdin to ``/dev/null``, so that nothing the
worker prints or reads can corrupt the frames.

``TARGET`` (and ``INIT``) is ``package.module:function``, ``path/to/file.py`` (its
``main``) or ``path/to/file.py:function`` (``package.module`` alone means its ``main``).
A file is imported under a private module name with its directory first on
``sys.path``, where it stays (as for ``python file.py``).

**Stream mode** (the default): the target owns the stream. Its shape decides how:

* ``def main(port)``: a :class:`~pipekit.adapters.thread.ThreadPort` in a worker thread;
  iterate it (or ``port.receive()`` / ``port.receive_batch()``) for incoming messages,
  ``port.send(x)`` / ``port.send_batch(xs)`` to emit (the batch call is much cheaper);
* a generator function ``def main(messages)``: gets an iterator over the incoming
  messages; each value it yields is sent;
* ``def main()``: uses this module's functions :func:`messages`, :func:`receive`,
  :func:`receive_batch`, :func:`send` and :func:`send_batch`;
* ``async def main(pipe)`` or ``async def main(inp, out)``: runs on the child's trio
  loop with the framed :class:`~pipekit.kernel.Pipe` itself (both parameters get the
  same duplex pipe).

Returning ends the worker's output (END) and the process (exit code 0), also while the
parent is still sending (a worker that calls ``port.end()`` early keeps its input until
it returns). The blocking shapes run in one worker thread joined to the
framed pipe by batch pumps, so the channel is always read (PAUSE, RESUME, END and ERROR
are never stuck) however long user code blocks; the input ENDs when the parent ENDs,
and fails with :class:`~pipekit.kernel.RemoteError` if the parent failed it.

**Item mode**: the target is ``fn(item) -> result``. Two request forms:

* a chunk ``["items", first_id, [item, ...]]`` (``first_id`` an int; item ``k`` has the
  id ``first_id + k``), optionally with a fourth element ``flags`` (an int), is answered
  by one or more replies ``["items", id, [result, ...], [offset, ...]]``, each covering
  the next consecutive items of that chunk from ``id`` on, in order; ``offset`` lists
  the (reply-relative) positions whose entry is an error ``{"kind": <exception class
  name>, "message": str(exc), "traceback": ...}`` instead of a result. With ``flags &
  1`` each reply has a fifth element: the seconds the worker spent running its items
  (``pk.WorkerPool`` sizes its chunks from it). A chunk is answered as soon as its last
  item finishes; while it runs, the results finished so far go out whenever ~0.1 s
  passed (checked between slices, below);
* a single ``[id, item]`` (any ``id``) is answered by ``[id, True, result]`` or
  ``[id, False, {kind, message, traceback}]``; such replies go out in batches, at the
  latest about 10 ms after the item finished (checked between items) and whenever the
  worker has no further request in hand.

A chunk's items run in *slices*: the function is mapped over up to 1024 items at a
time (``map`` in C: no Python code of the runtime per item), sized to about 1 ms of
work (a single item when items are slower). If the parent named 16 bytes of shared
memory in :data:`PROGRESS_ENV`, the worker writes there the ids ``[start, end)`` of each
slice before running it, so that after a crash the parent knows which items ran to the
end, which never started, and among which the culprit is. Between two chunks in hand the
item thread pauses 0.1 ms, so that the event loop sends the first one's answer at once
rather than after the second.

An error entry is also given when a result cannot be encoded (kind ``CodecError``, or
``ProtocolError`` if it is too large for one frame), and for an item whose function
raised ``StopIteration`` (kind ``StopIteration``, without a traceback: ``map`` swallows
the exception itself). Replies keep request order; the worker goes on after a failed
item. A result held back is released only between items (between slices in a chunk):
while one item runs, the finished items *of the same request batch or chunk* before it
wait for it (``pk.WorkerPool`` copes: a crash or timeout isolates them).

``--init INIT`` names a zero-argument callable called once, in the worker thread, after
the handshake and before any message is processed (load a model there: the import of
``TARGET`` itself happens before the handshake, so it must finish within the parent's
handshake timeout).

**Failure**: if the target (or ``INIT``) raises, the messages it sent before are
delivered, then an ERROR ``{kind, message, traceback}`` (``kind`` is the exception's
string ``kind`` attribute if it has one, else its class name - as
:meth:`~pipekit.kernel.Pipe.fail`), and the traceback also goes to stderr.
``sys.exit(n)`` in the target exits with ``n`` (0 and ``None`` are a normal return).

Exit codes: 0 clean END; 1 failure, a broken channel (the parent died or closed it
without END; one line on stderr, no traceback) or a failed handshake; 2 a bad
``TARGET``/``INIT``/``PIPEKIT_FD`` (one line on stderr, before the handshake; a
traceback first if the target's own import raised); 143 after SIGTERM. SIGTERM
interrupts running work at once: port calls in threads raise
:class:`trio.ClosedResourceError`, a thread that does not stop within about a second
is abandoned, the process exits after at most about 3 s even if async code blocks the
event loop, and a second SIGTERM exits immediately.

On Linux the child also stops (exit code 1) when its parent *process* dies. It uses
``PR_SET_PDEATHSIG``, which fires when the *thread* that forked the child ends - and
``trio.lowlevel.open_process`` forks from a cached worker thread that ends after 10 s
idle. So the signal is a dedicated real-time one (``SIGRTMIN + 2``), not SIGTERM, and it
stops the child only if ``os.getppid()`` has changed (the parent process is gone).
"""

from __future__ import annotations

import _thread
import contextlib
import importlib
import importlib.util
import inspect
import itertools
import mmap
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, Literal

import trio

from .adapters.thread import ThreadPort, open_thread_port
from .kernel import (
    CodecError,
    FramedPipe,
    Pipe,
    PipekitError,
    ProtocolError,
    RemoteError,
    framed_pipe,
)

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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM

FD_ENV = "PIPEKIT_FD"
"""Environment variable holding the channel's descriptor number (removed once read)."""

PROGRESS_ENV = "PIPEKIT_PROGRESS"
"""Item mode: ``path:offset`` of 16 bytes of shared memory where the worker records
which items it is running (see :class:`pipekit.WorkerPool`; removed once read)."""

Mode = Literal["stream", "item"]
StreamShape = Literal["port", "generator", "plain", "async"]

_PUMP_BATCH = 512  # messages per hand-off from the framed pipe to the worker thread
_ITEM_BATCH = 256  # requests taken, and replies sent, at once in item mode
_ITEM_FLUSH = 0.01  # seconds a finished item's reply may wait for company
_CHUNK_FLUSH = 0.1  # seconds a running chunk's finished items may wait for the rest
_HANDOVER = 0.0001  # seconds the item thread leaves the GIL to the loop between chunks
_CHUNK = "items"  # tags a chunked request and its replies in item mode
_TIMED = 1  # a chunk request's flag: replies carry the seconds spent on their items
_SLICE_TIME = 0.001  # seconds of items run between two looks at the clock
_SLICE_MAX = 1024  # items run between two looks at the clock, at most
_GRACE = 1.0  # seconds an interrupted worker thread gets to stop
_WATCHDOG = 3.0  # seconds after SIGTERM before the process exits whatever it is doing


class TargetError(Exception):
    """``TARGET`` or ``INIT`` cannot be loaded or has no usable shape (exit code 2)."""


# -- the module-level API (stream mode, blocking shapes) --------------------------------

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


# -- targets ----------------------------------------------------------------------------

_file_modules: dict[Path, ModuleType] = {}


def _split_target(spec: str, default: str) -> tuple[str, str]:
    if spec.endswith(".py"):
        return spec, default
    where, colon, name = spec.rpartition(":")
    if not colon:
        return spec, default
    if not where or not name:
        raise TargetError(f"bad target {spec!r} (expected module:function or file.py[:function])")
    return where, name


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    resolved = path.resolve()
    module = _file_modules.get(resolved)
    if module is not None:  # TARGET and INIT in the same file share one module
        return module
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    name = f"pipekit_worker_{stem}_{len(_file_modules)}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    directory = str(resolved.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module
    _file_modules[resolved] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name], _file_modules[resolved]
        raise
    return module


def _import_module(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise TargetError(f"bad target {name!r} (expected module:function or file.py[:function])")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise TargetError(f"no module named {missing!r}") from None
        raise  # the target itself imports something missing: a real import failure


def load_target(spec: str, *, default: str = "main") -> Callable[..., Any]:
    """The callable named by ``spec`` (``package.module:function``, ``file.py`` meaning
    its ``default``, or ``file.py:function``; the name may be dotted).

    Raises :class:`TargetError` for a missing file, module or attribute, or a value that
    is not callable; an exception raised while importing the target's code propagates.
    """
    where, name = _split_target(spec, default)
    module = _load_file(Path(where)) if where.endswith(".py") else _import_module(where)
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{where} has no attribute {name!r}") from None
    if not callable(obj):
        raise TargetError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _required_positional(fn: Callable[..., Any], spec: str) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError) as exc:
        raise TargetError(f"cannot inspect the signature of {spec}: {exc}") from None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def stream_shape(fn: Callable[..., Any], spec: str = "target") -> tuple[StreamShape, int]:
    """How stream mode calls ``fn``: ``(shape, number of positional arguments)``.

    ``async def f(pipe)`` / ``async def f(inp, out)`` -> ``("async", 1 | 2)``; a
    generator function of one parameter -> ``("generator", 1)``; a function of one
    required positional parameter -> ``("port", 1)``, of none -> ``("plain", 0)``.
    Anything else raises :class:`TargetError`."""
    if inspect.isasyncgenfunction(fn):
        raise TargetError(f"{spec} is an async generator; use async def main(pipe) instead")
    n = _required_positional(fn, spec)
    if inspect.iscoroutinefunction(fn):
        if n in (1, 2):
            return "async", n
        raise TargetError(
            f"{spec}: an async worker takes (pipe) or (inp, out), not {n} argument(s)"
        )
    if inspect.isgeneratorfunction(fn):
        if n == 1:
            return "generator", 1
        raise TargetError(f"{spec}: a generator worker takes one argument (the messages)")
    if n == 1:
        return "port", 1
    if n == 0:
        return "plain", 0
    raise TargetError(f"{spec}: a stream worker takes (port), (messages) or no argument, not {n}")


def _check_callable_with(fn: Callable[..., Any], nargs: int, spec: str, what: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: find out when calling
    try:
        signature.bind(*([None] * nargs))
    except TypeError:
        raise TargetError(f"{spec}: {what}") from None


# -- errors -----------------------------------------------------------------------------


def _format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` without its first frame (the runtime's own call)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class _Failure:
    """What a worker raised, captured where it was raised."""

    def __init__(self, exc: BaseException) -> None:
        kind = getattr(exc, "kind", None)
        self.kind = kind if isinstance(kind, str) else type(exc).__name__
        self.message = str(exc) or type(exc).__name__
        self.traceback = _format_traceback(exc)
        self.exit_code = EXIT_FAILED
        if isinstance(exc, SystemExit):
            self.message = str(exc.code)
            if isinstance(exc.code, int):
                self.exit_code = exc.code

    def report(self, pipe: FramedPipe) -> int:
        """Print the traceback to stderr and queue the ERROR frame (it goes out, after
        everything sent before, when the framed pipe is closed)."""
        sys.stderr.write(self.traceback)
        sys.stderr.flush()
        pipe.conn.fail(self.kind, self.message, traceback=self.traceback)
        return self.exit_code


def _item_error(exc: BaseException) -> dict[str, str]:
    return {"kind": type(exc).__name__, "message": str(exc), "traceback": _format_traceback(exc)}


class _ChannelLost(Exception):
    """The channel to the parent broke (closed without END, transport or protocol error)."""


def _is_channel_loss(exc: BaseException, pipe: FramedPipe) -> bool:
    """True if ``exc`` (raised by user code) means the channel itself broke: EOF or a
    transport failure, or a protocol violation (not a message too large to send)."""
    if isinstance(exc, RemoteError):
        return False
    if isinstance(exc, ProtocolError):
        return pipe.conn.failure is not None
    return isinstance(exc, trio.BrokenResourceError)


# -- worker bodies (run in the worker thread) -------------------------------------------


def _stream_body(
    fn: Callable[..., Any],
    shape: StreamShape,
    init: Callable[[], Any] | None,
    failures: list[_Failure],
) -> Callable[[ThreadPort], None]:
    def body(port: ThreadPort) -> None:
        global _port
        _port = port
        try:
            if init is not None:
                init()
            if shape == "port":
                fn(port)
            elif shape == "generator":
                send_one = port.send
                for value in fn(iter(port)):
                    send_one(value)
            else:
                fn()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                failures.append(_Failure(exc))
                raise
        except BaseException as exc:
            failures.append(_Failure(exc))
            raise
        finally:
            _port = None

    return body


class _Replies:
    """Item-mode replies held for company, sent at the latest :data:`_ITEM_FLUSH`
    seconds after the oldest of them was ready (or when a chunk is complete); also the
    item loop's state that outlives a chunk (the slice length, the progress marker)."""

    __slots__ = ("clock", "flush_at", "held", "mark", "send_many", "slice")

    def __init__(self, port: ThreadPort, mark: Callable[[int, int], None]) -> None:
        self.send_many = port.send_batch
        self.clock = time.monotonic
        self.held: list[list[Any]] = []
        self.flush_at = float("inf")
        self.slice = 1  # items run between two looks at the clock
        self.mark = mark

    def add(self, reply: list[Any]) -> None:
        if not self.held:
            self.flush_at = self.clock() + _ITEM_FLUSH
        self.held.append(reply)

    def due(self) -> bool:
        return self.clock() >= self.flush_at

    def flush(self) -> None:
        if self.held:
            held, self.held = self.held, []
            self.flush_at = float("inf")
            self.send_many(held)


def _no_mark(start: int, end: int) -> None:
    return None


def _progress_marker() -> Callable[[int, int], None]:
    """The function that records, before a slice of a chunk runs, the ids it covers
    (``[start, end)``) in the shared memory the parent named in :data:`PROGRESS_ENV`
    (``path:offset``; removed once read), so that after a crash the parent knows which
    items ran. A no-op without it."""
    spec = os.environ.pop(PROGRESS_ENV, None)
    if not spec:
        return _no_mark
    path, _, where = spec.rpartition(":")
    try:
        offset = int(where)
        if offset < 0 or offset % 16:
            return _no_mark
        fd = os.open(path, os.O_RDWR)
        try:
            memory = mmap.mmap(fd, offset + 16)
        finally:
            os.close(fd)
        view = memoryview(memory)[offset : offset + 16].cast("q")
    except (OSError, ValueError):
        return _no_mark

    def mark(start: int, end: int) -> None:
        # end first: a process killed between the two stores leaves a wider range.
        view[1] = end
        view[0] = start

    return mark


def _stop_iteration_error() -> dict[str, str]:
    return {
        "kind": "StopIteration",
        "message": "the function raised StopIteration (no traceback available)",
        "traceback": "",
    }


def _run_chunk(
    fn: Callable[[Any], Any], first: int, items: list[Any], out: _Replies, timed: bool
) -> None:
    """Run a chunk's items in slices (``map`` in C, no Python per item); between slices,
    look at the clock and reply with the results so far if the flush deadline passed;
    reply with the rest (and everything held) at the end. ``timed``: each reply carries
    the seconds spent running its items."""
    clock = out.clock
    mark = out.mark
    n = len(items)
    results: list[Any] = []
    extend = results.extend
    failed: list[int] = []
    done = 0  # items of this chunk already replied to
    busy = 0.0  # seconds spent on the items not yet replied to
    size = out.slice
    source = iter(items)
    pos = 0
    now = clock()
    flush_at = min(out.flush_at, now + _CHUNK_FLUSH)
    while pos < n:
        end = pos + size if pos + size < n else n
        mark(first + pos, first + end)
        part = itertools.islice(source, end - pos)
        while True:
            try:
                extend(map(fn, part))  # what was appended before a raise stays
            except Exception as exc:
                failed.append(len(results) - done)
                results.append(_item_error(exc))
                continue
            if len(results) >= end:
                break
            # ``map`` ends quietly when fn raises StopIteration: that item failed.
            failed.append(len(results) - done)
            results.append(_stop_iteration_error())
        start, now = now, clock()
        spent = now - start
        busy += spent
        if spent < _SLICE_TIME / 4:
            if size < _SLICE_MAX:
                size *= 2
        elif spent > _SLICE_TIME:
            size = max(1, int(size * _SLICE_TIME / spent))
        pos = end
        if now >= flush_at and pos < n:
            reply = [_CHUNK, first + done, results[done:], failed]
            if timed:
                reply.append(busy)
            out.held.append(reply)
            done, failed, busy = pos, [], 0.0
            out.flush()
            flush_at = now + _CHUNK_FLUSH
    out.slice = size
    if len(results) > done or not items:
        reply = [_CHUNK, first + done, results[done:] if done else results, failed]
        if timed:
            reply.append(busy)
        out.held.append(reply)
    out.flush()


def _serve_items(
    port: ThreadPort, fn: Callable[[Any], Any], mark: Callable[[int, int], None]
) -> None:
    receive_many = port.receive_batch
    out = _Replies(port, mark)
    while True:
        out.flush()  # about to wait for input: nothing may be held over
        try:
            batch = receive_many(_ITEM_BATCH)
        except trio.EndOfChannel:
            return
        for request in batch:
            if out.held and out.due():
                out.flush()
            if type(request) is list and 3 <= len(request) <= 4 and request[0] == _CHUNK:
                first, items = request[1], request[2]
                flags = request[3] if len(request) == 4 else 0
                if type(first) is not int or type(items) is not list or type(flags) is not int:
                    raise ValueError(
                        f"item mode expects [{_CHUNK!r}, first_id, items(, flags)] chunks, "
                        f"got {request!r:.200}"
                    )
                _run_chunk(fn, first, items, out, bool(flags & _TIMED))
                if request is not batch[-1]:
                    # Another chunk is in hand: let the event loop thread take the GIL
                    # and send this chunk's answer now, not once the next one is done
                    # (its turn would come only after sys.getswitchinterval()).
                    time.sleep(_HANDOVER)
                continue
            try:
                rid, item = request
            except (TypeError, ValueError):
                raise ValueError(
                    f"item mode expects [id, item] or [{_CHUNK!r}, first_id, items] "
                    f"requests, got {request!r:.200}"
                ) from None
            try:
                out.add([rid, True, fn(item)])
            except Exception as exc:
                out.add([rid, False, _item_error(exc)])
            if len(out.held) >= _ITEM_BATCH:
                out.flush()


def _item_body(
    fn: Callable[[Any], Any],
    init: Callable[[], Any] | None,
    failures: list[_Failure],
    mark: Callable[[int, int], None] = _no_mark,
) -> Callable[[ThreadPort], None]:
    def body(port: ThreadPort) -> None:
        try:
            if init is not None:
                init()
            _serve_items(port, fn, mark)
        except BaseException as exc:
            failures.append(_Failure(exc))
            raise

    return body


# -- the bridge: framed pipe <-> worker thread ------------------------------------------


async def _send_item_replies(pipe: FramedPipe, replies: list[Any]) -> None:
    """Send replies one by one, turning each result that cannot be encoded into an error
    reply (a chunk's reply is split in halves until the culprits are alone)."""
    for reply in replies:
        await _send_item_reply(pipe, reply)


async def _send_item_reply(pipe: FramedPipe, reply: Any) -> None:
    try:
        await pipe.send(reply)
        return
    except (CodecError, ProtocolError) as exc:
        if isinstance(exc, ProtocolError) and exc.kind != "oversize":
            raise
        error = exc
    chunk = isinstance(reply, list) and len(reply) == 4 and reply[0] == _CHUNK
    if not chunk:
        rid = reply[0] if isinstance(reply, list) and reply else None
        await pipe.send([rid, False, _item_error(error)])
        return
    _, first, results, failed = reply
    if len(results) <= 1:
        await pipe.send([_CHUNK, first, [_item_error(error)], [0]])
        return
    half = len(results) // 2
    await _send_item_reply(pipe, [_CHUNK, first, results[:half], [i for i in failed if i < half]])
    await _send_item_reply(
        pipe, [_CHUNK, first + half, results[half:], [i - half for i in failed if i >= half]]
    )


async def _bridge(
    pipe: FramedPipe, body: Callable[[ThreadPort], None], failures: list[_Failure], *, item: bool
) -> int:
    """Run ``body`` in a worker thread joined to ``pipe`` by two batch pumps; return the
    exit code. Raises :class:`_ChannelLost` or :class:`_Stop` to interrupt the thread."""
    lost: list[BaseException] = []
    thread_done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def run(port: ThreadPort) -> None:
        try:
            body(port)
        finally:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(thread_done.set)

    async def pump_in(tpipe: Pipe, scope: trio.CancelScope) -> None:
        # framed -> thread until the parent ENDs (or fails) its direction.
        while True:
            try:
                batch = await pipe.receive_batch(_PUMP_BATCH)
            except trio.EndOfChannel:
                await tpipe.end()
                return
            except RemoteError as exc:  # the parent failed its stream: the worker sees it
                await tpipe.fail(exc)
                return
            except (trio.BrokenResourceError, ProtocolError) as exc:
                lost.append(exc)
                scope.cancel()
                return
            await tpipe.send_batch(batch)

    async def pump_out(tpipe: Pipe) -> int:
        # thread -> framed until the thread ENDs (returns) or fails.
        while True:
            try:
                batch = await tpipe.receive_batch()
            except trio.EndOfChannel:
                await pipe.end()
                return EXIT_OK
            except Exception as exc:
                return (failures[0] if failures else _Failure(exc)).report(pipe)
            try:
                await pipe.send_batch(batch)
            except (CodecError, ProtocolError) as exc:  # unencodable, or larger than a frame
                if not item:
                    return _Failure(exc).report(pipe)
                await _send_item_replies(pipe, batch)

    code = EXIT_FAILED
    async with open_thread_port(run, name=pipe.name, grace=_GRACE) as tpipe:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_in, tpipe, nursery.cancel_scope)
            try:
                code = await pump_out(tpipe)
                if code == EXIT_OK:
                    # The output has ended; the thread may still consume its input.
                    await thread_done.wait()
            except trio.BrokenResourceError as exc:
                lost.append(exc)
            nursery.cancel_scope.cancel()
        if lost:
            raise _ChannelLost(str(lost[0]))  # interrupts the thread rather than wait for it
        if code != EXIT_OK:
            raise _Stop(code)  # the same: a thread that could not send may still run
    return code


class _Stop(Exception):
    """Leave the bridge with ``code``, interrupting the worker thread."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


async def _run_async(
    pipe: FramedPipe,
    fn: Callable[..., Awaitable[Any]],
    nargs: int,
    init: Callable[[], Any] | None,
) -> int:
    try:
        if init is not None:
            await trio.to_thread.run_sync(init, abandon_on_cancel=True)
        await (fn(pipe) if nargs == 1 else fn(pipe, pipe))
    except SystemExit as exc:
        if exc.code in (None, 0):
            return EXIT_OK
        return _Failure(exc).report(pipe)
    except Exception as exc:
        if _is_channel_loss(exc, pipe):
            raise _ChannelLost(str(exc)) from None
        return _Failure(exc).report(pipe)
    return EXIT_OK


# -- process-level plumbing -------------------------------------------------------------


class _State:
    """What the signal handlers need to reach the trio run."""

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None  # set while serving
        self.scope = trio.CancelScope()  # entered by the run; cancelled to stop it
        self.running = False  # trio.run has been called and has not returned
        self.stopping = False
        self.lost = False
        self.exit_code = EXIT_TERMINATED
        self.parent_pid = os.getppid()


_state = _State()
_PDEATH_SIGNAL: int | None = getattr(signal, "SIGRTMIN", None)
if _PDEATH_SIGNAL is not None:
    _PDEATH_SIGNAL += 2


def _watchdog(seconds: float, code: int) -> None:
    time.sleep(seconds)
    os._exit(code)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    state = _state
    if signum == _PDEATH_SIGNAL and os.getppid() == state.parent_pid:
        return  # only the thread that spawned us ended, not the parent process
    if state.stopping:
        os._exit(state.exit_code)  # second signal: no more grace
    state.stopping = True
    if signum == _PDEATH_SIGNAL:
        state.exit_code = EXIT_FAILED
    if not state.running:
        raise SystemExit(state.exit_code)  # loading the target: stop right here
    token = state.token
    if token is not None:  # else the run is starting and checks `stopping` itself
        with contextlib.suppress(trio.RunFinishedError):  # the run is ending anyway
            token.run_sync_soon(state.scope.cancel)
    _thread.start_new_thread(_watchdog, (_WATCHDOG, state.exit_code))


def _install_signal_handlers() -> None:
    """SIGTERM -> graceful stop; on Linux, also stop when the parent process dies (see
    the module docstring for why that is not a plain ``PR_SET_PDEATHSIG`` SIGTERM)."""
    signal.signal(signal.SIGTERM, _on_signal)
    if _PDEATH_SIGNAL is None or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        signal.signal(_PDEATH_SIGNAL, _on_signal)
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, _PDEATH_SIGNAL, 0, 0, 0)
    except (OSError, AttributeError, ValueError):  # best effort
        return
    if os.getppid() != _state.parent_pid:  # the parent died before prctl took effect
        raise SystemExit(EXIT_FAILED)


def _open_channel() -> Callable[[], trio.abc.Stream]:
    """Claim the channel's descriptors now (before user code runs); the returned
    factory wraps them in a trio stream inside the run."""
    text = os.environ.pop(FD_ENV, None)
    if text is not None:
        try:
            sock = socket.socket(fileno=int(text))
        except (ValueError, OSError) as exc:
            raise TargetError(f"{FD_ENV}={text!r} is not a usable socket: {exc}") from None
        if sock.type != socket.SOCK_STREAM:
            raise TargetError(f"{FD_ENV}={text!r} is not a stream socket")
        sock.set_inheritable(False)
        return lambda: trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    # No dedicated descriptor: frames on stdin/stdout. Keep duplicates for the channel
    # and point 0 at /dev/null and 1 (and sys.stdout) at stderr.
    sys.stdout.flush()
    rfd, wfd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return lambda: trio.StapledStream(trio.lowlevel.FdStream(wfd), trio.lowlevel.FdStream(rfd))


async def _serve(
    make_stream: Callable[[], trio.abc.Stream],
    name: str,
    runner: Callable[[FramedPipe], Awaitable[int]],
) -> int:
    state = _state
    code = EXIT_FAILED
    with state.scope:
        state.token = trio.lowlevel.current_trio_token()
        if state.stopping:  # signalled while the run was starting
            state.scope.cancel()
        try:
            async with framed_pipe(make_stream(), initiator=False, name=name) as pipe:
                try:
                    code = await runner(pipe)
                except _ChannelLost as exc:
                    state.lost = True
                    _say(f"channel to the parent lost: {exc}")
                    code = EXIT_FAILED
                except _Stop as stop:
                    code = stop.code
        except (PipekitError, trio.BrokenResourceError) as exc:
            state.lost = True
            _say(f"channel failed: {exc}")
            code = EXIT_FAILED
        finally:
            state.token = None
    if state.stopping:
        return state.exit_code
    return code


def _say(line: str) -> None:
    print(f"pipekit worker: {line}", file=sys.stderr, flush=True)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def run_worker(target: str, *, mode: Mode = "stream", init: str | None = None) -> int:
    """Serve ``target`` to the parent over the channel (see the module docstring) and
    return the exit code; after SIGTERM or a lost channel the process exits at once
    (``os._exit``, after flushing stdout/stderr) so that stray threads cannot hold it.

    Call it in a fresh process only: it claims the channel descriptors and installs
    signal handlers."""
    _install_signal_handlers()
    loading = target
    try:
        make_stream = _open_channel()
        mark = _progress_marker() if mode == "item" else _no_mark
        fn = load_target(target)
        loading = init or target
        init_fn = load_target(init) if init is not None else None
        if init_fn is not None:
            _check_callable_with(init_fn, 0, init or "", "INIT must take no arguments")
        runner: Callable[[FramedPipe], Awaitable[int]]
        failures: list[_Failure] = []
        if mode == "item":
            _check_callable_with(fn, 1, target, "an item-mode target takes one argument")
            body = _item_body(fn, init_fn, failures, mark)

            def runner(pipe: FramedPipe) -> Awaitable[int]:
                return _bridge(pipe, body, failures, item=True)

        elif mode == "stream":
            shape, nargs = stream_shape(fn, target)
            if shape == "async":

                def runner(pipe: FramedPipe) -> Awaitable[int]:
                    return _run_async(pipe, fn, nargs, init_fn)

            else:
                stream_body = _stream_body(fn, shape, init_fn, failures)

                def runner(pipe: FramedPipe) -> Awaitable[int]:
                    return _bridge(pipe, stream_body, failures, item=False)

        else:
            raise TargetError(f"unknown mode {mode!r} (stream or item)")
    except TargetError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except Exception as exc:
        traceback.print_exc()
        _say(f"importing {loading} failed: {type(exc).__name__}: {exc}")
        return EXIT_USAGE

    _state.running = True
    try:
        code = trio.run(_serve, make_stream, target, runner)
    finally:
        _state.running = False
    if _state.stopping or _state.lost:
        # Signalled, or the parent is gone: exit now, whatever threads user code left.
        _flush_stdio()
        os._exit(code)
    return code
