"""Item mode: the worker thread's loop that calls ``fn(item)`` for every request (chunks
run in slices, with the progress record written before each slice), holds replies for
company, and the encoding fallback that turns unencodable results into error entries."""

from __future__ import annotations

import itertools
import mmap
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...kernel.errors import CodecError, ErrorKind, ProtocolError
from .._wire import (
    ANSWER_LAG,
    CHUNK,
    PROGRESS_ENV,
    RECORD,
    chunk_reply,
    error_entry,
    parse_chunk_reply,
    parse_chunk_request,
    parse_record_address,
    record_writer,
)
from .outcome import Failure, format_traceback

if TYPE_CHECKING:  # the blocking runtime imports this module without trio
    from ...adapters.thread import ThreadPort
    from ...kernel.framed import FramedPipe

_ITEM_BATCH = 256  # requests taken, and replies sent, at once in item mode
_ITEM_FLUSH = 0.01  # seconds a finished item's reply may wait for company
_HANDOVER = 0.0001  # seconds the item thread leaves the GIL to the loop between chunks
_SLICE_TIME = 0.001  # seconds of items run between two looks at the clock
_SLICE_MAX = 1024  # items run between two looks at the clock, at most


def _item_error(exc: BaseException) -> dict[str, str]:
    return error_entry(type(exc).__name__, str(exc), format_traceback(exc))


def _stop_iteration_error() -> dict[str, str]:
    return error_entry(
        "StopIteration", "the function raised StopIteration (no traceback available)", ""
    )


# -- the progress record ----------------------------------------------------------------


def no_mark(start: int, end: int) -> None:
    return None


def progress_marker() -> Callable[[int, int], None]:
    """The function that records, before a slice of a chunk runs, the ids it covers
    (``[start, end)``) in the shared memory the parent named in :data:`PROGRESS_ENV`
    (``path:offset``; removed once read), so that after a crash the parent knows which
    items ran. A no-op without it."""
    spec = os.environ.pop(PROGRESS_ENV, None)
    if not spec:
        return no_mark
    address = parse_record_address(spec)
    if address is None:
        return no_mark
    path, offset = address
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            memory = mmap.mmap(fd, offset + RECORD.size)
        finally:
            os.close(fd)
        return record_writer(memory, offset)
    except (OSError, ValueError):
        return no_mark


# -- the item loop (in the worker thread) -----------------------------------------------


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
    flush_at = min(out.flush_at, now + ANSWER_LAG)
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
            out.held.append(
                chunk_reply(first + done, results[done:], failed, busy if timed else None)
            )
            done, failed, busy = pos, [], 0.0
            out.flush()
            flush_at = now + ANSWER_LAG
    out.slice = size
    if len(results) > done or not items:
        out.held.append(
            chunk_reply(
                first + done, results[done:] if done else results, failed, busy if timed else None
            )
        )
    out.flush()


def _serve_items(
    port: ThreadPort,
    fn: Callable[[Any], Any],
    mark: Callable[[int, int], None],
    end: type[BaseException],
) -> None:
    receive_many = port.receive_batch
    out = _Replies(port, mark)
    while True:
        out.flush()  # about to wait for input: nothing may be held over
        try:
            batch = receive_many(_ITEM_BATCH)
        except end:
            return
        for request in batch:
            if out.held and out.due():
                out.flush()
            if type(request) is list and 3 <= len(request) <= 4 and request[0] == CHUNK:
                first, items, timed = parse_chunk_request(request)
                _run_chunk(fn, first, items, out, timed)
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
                    f"item mode expects [id, item] or [{CHUNK!r}, first_id, items] "
                    f"requests, got {request!r:.200}"
                ) from None
            try:
                out.add([rid, True, fn(item)])
            except Exception as exc:
                out.add([rid, False, _item_error(exc)])
            if len(out.held) >= _ITEM_BATCH:
                out.flush()


def item_body(
    fn: Callable[[Any], Any],
    init: Callable[[], Any] | None,
    failures: list[Failure],
    mark: Callable[[int, int], None] = no_mark,
    *,
    end: type[BaseException],
) -> Callable[[ThreadPort], None]:
    """The worker thread's body in item mode: ``init``, then answer every request until
    the parent ENDs (``mark``: the progress marker), which the port's ``receive_batch``
    says by raising ``end`` (:class:`trio.EndOfChannel` for a thread port; the
    blocking runtime has a trio-free one). What it raises is captured in ``failures``."""

    def body(port: ThreadPort) -> None:
        try:
            if init is not None:
                init()
            _serve_items(port, fn, mark, end)
        except BaseException as exc:
            failures.append(Failure(exc))
            raise

    return body


# -- replies that cannot be encoded -----------------------------------------------------


async def send_item_replies(pipe: FramedPipe, replies: list[Any]) -> None:
    """Send replies one by one, turning each result that cannot be encoded into an error
    reply (a chunk's reply is split in halves until the culprits are alone)."""
    for reply in replies:
        await _send_item_reply(pipe, reply)


async def _send_item_reply(pipe: FramedPipe, reply: Any) -> None:
    try:
        await pipe.send(reply)
        return
    except (CodecError, ProtocolError) as exc:
        if isinstance(exc, ProtocolError) and exc.kind != ErrorKind.OVERSIZE:
            raise
        error = exc
    chunk = isinstance(reply, list) and len(reply) in (4, 5) and reply[0] == CHUNK
    if not chunk:
        rid = reply[0] if isinstance(reply, list) and reply else None
        await pipe.send([rid, False, _item_error(error)])
        return
    first, results, failed, seconds = parse_chunk_reply(reply)
    if len(results) <= 1:
        await pipe.send(chunk_reply(first, [_item_error(error)], [0], seconds))
        return
    # Halves keep the reply's shape: a timed reply's seconds are shared by item count.
    half = len(results) // 2
    first_seconds = rest_seconds = None
    if seconds is not None:
        first_seconds = seconds * half / len(results)
        rest_seconds = seconds - first_seconds
    await _send_item_reply(
        pipe, chunk_reply(first, results[:half], [i for i in failed if i < half], first_seconds)
    )
    await _send_item_reply(
        pipe,
        chunk_reply(
            first + half, results[half:], [i - half for i in failed if i >= half], rest_seconds
        ),
    )
