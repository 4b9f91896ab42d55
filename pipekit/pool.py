"""Process worker pools: ``pk.WorkerPool`` calls a Python function once per item in a
fixed number of reused worker processes.

::

    async with pk.WorkerPool("myapp.nlp:tag", size=4, init="myapp.nlp:load_model") as pool:
        tags = await pool.map(sentences)              # input order; errors as values
        async for index, tag in pool.imap_unordered(more):
            ...
        one = await pool.submit(sentence)

Each worker is ``python -m pipekit worker TARGET --mode item [--init INIT]``
(:func:`~pipekit.adapters.stdio.worker_spec`): it calls ``INIT`` once, then
``TARGET(item)`` for every item it is sent, and answers in request order over its
framed channel (msgpack by default, so items and results are msgpack values: tuples
come back as lists). Items travel in chunks (the item protocol of
:mod:`pipekit.child`): each request carries consecutive items of one ``map``,
``imap_unordered`` or ``submit`` as ``["items", first_id, items, 1]``, and each reply
``["items", id, results, failed_offsets, seconds]`` answers the next items of the oldest
chunk on that worker (and says how long the worker spent on them), so the bookkeeping
is per chunk, not per item.

**Errors are values.** A failed item never raises out of :meth:`WorkerPool.map`,
:meth:`~WorkerPool.imap_unordered` or :meth:`~WorkerPool.submit`: its result is a
:class:`WorkerError`, and ``isinstance(result, pk.WorkerError)`` is how to tell. Its
``kind`` is the exception's class name when the function raised (the worker goes on),
``"terminated"`` when the item crashed its worker, ``"timeout"`` when it took longer than
``timeout`` seconds, or ``"CodecError"``/``"ProtocolError"`` when it could not be encoded.

**Chunks.** The chunk size adapts to the work: the workers measure the time they spend
on items, and a chunk holds about :data:`CHUNK_SECONDS` of it - cheap items travel by the
ten thousand (like ``multiprocessing.Pool.map``'s chunks, and at most
:data:`MAX_CHUNK` items or about :data:`CHUNK_BYTES` of encoded items or results), an item
that takes longer than that travels alone. The estimate follows a change of pace within a
few answers; a ``bytes`` or ``str`` item much larger than the estimate says raises it
before it is chunked. Once all the items of a ``map`` or ``imap_unordered`` are queued, the last
chunks shrink (each worker's share of what is left, halved, down to about
:data:`TAIL_SECONDS` of work), so that the workers finish together. ``chunksize=`` fixes
the size instead.

**Dispatch.** Each chunk goes to the live worker with the fewest unanswered items, and a
worker never has more than its bound of them: ``max_inflight`` if given, else two
chunks (one running, one waiting, so the worker never waits for the pool). A worker is
given items only when it has room for a whole chunk (or for everything queued: no timer,
a lone ``submit`` goes out at once) and has answered something since it was last given
items - so a worker stuck on a slow item keeps what it had, and the rest goes to the
others. The chunks queued for one worker are sent in one write. Whatever is fed in
(``map`` takes any iterable, also a lazy or endless one) is pulled only as workers have
room for it: at most twice what the workers may hold (``2 * size * max_inflight`` items,
counting results ``imap_unordered`` has not handed out yet), so memory stays bounded.

**Crashes and timeouts.** A worker that dies (``os._exit``, a signal, a segfault,
``sys.exit`` in the function) or is killed for a timeout is replaced by a fresh process.
The worker answers chunk by chunk (at least every ~0.1 s while busy), so when it dies the
pool may hold several of its items unanswered. To tell them apart each worker records,
in a few bytes of memory shared with the pool, which slice of items it is running (at
most 1024 items, ~1 ms of work); once the dead process is reaped the pool reads the
record. Unanswered items before that slice ran to the end (their answers were lost):
they run once more, in chunks of such items only. Items after it never started: they
are queued again. The items of the slice are *suspects*: each is sent again, alone, to a
worker with nothing else to do; the one that crashes (or times out) in isolation is the
culprit and comes back as the error value, the others complete normally. When a worker
dies holding a single unanswered item, that item is the culprit at once. So an item may
run twice - once on the worker that died, once more - but never more: one that ran
twice and was lost both times (its second worker died too, say killed from outside)
comes back as a ``terminated`` error rather than run a third time. Make functions
idempotent where that matters (or use ``max_inflight=1``, where every item is isolated
and none runs twice). A worker killed from outside therefore costs no item at all: its
items are all run again and succeed. (Without the shared record - the pool could not
create its small temporary file - every unanswered item of a dead worker is a suspect.)

The pool fails as a whole (the ``async with`` raises) only if a worker cannot be started,
if ``INIT`` raises (a :class:`WorkerError` with the remote traceback), or if fresh workers
keep dying before answering anything (:data:`MAX_BARREN_DEATHS` in a row).
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import struct
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal

import trio

from .adapters.stdio import ProcessError, ProcessPipe, ProcessSpec, open_process, worker_spec
from .child import PROGRESS_ENV
from .kernel import CodecError, PipekitError, ProtocolError, RemoteError
from .kernel.protocol import DEFAULT_MAX_FRAME
from .kernel.scopes import open_plain_nursery

__all__ = ["MAX_BARREN_DEATHS", "PoolStats", "WorkerError", "WorkerPool"]

Stdio = Literal["pipe", "inherit", "null"]

MAX_BARREN_DEATHS = 5
"""Fresh workers that may die in a row, pool-wide, before any worker answers an item,
before the pool gives up (their items are isolated and retried in between)."""

PROCESS_KINDS = frozenset({"spawn_failed", "terminated", "timeout", "io_error"})

MAX_INFLIGHT = 1 << 20
"""The largest ``max_inflight`` and ``chunksize``."""

CHUNK_SECONDS = 0.05
"""Adaptive chunks hold about this much work (seconds, as the workers measure it)."""

MAX_CHUNK = 65536
"""Adaptive chunks hold at most this many items..."""

CHUNK_BYTES = 1 << 20
"""... and about this many bytes (encoded items or results, whichever are larger)."""

FIRST_CHUNK = 8
"""The chunk size before the workers have answered anything."""

TAIL_SECONDS = 0.005
"""The last chunks of a ``map`` shrink, but not below this much work."""

_FAIRNESS_EVERY = 64
_CHUNK = "items"  # the tag of chunked requests and replies (pipekit.child's item mode)
_TIMED = 1  # chunk request flag: replies say how long their items took
_ANSWER_LAG = 0.1  # a busy worker answers at least this often (pipekit.child, chunks)
_SAMPLE_ITEMS = 256  # items, or ...
_SAMPLE_BYTES = 32 * 1024  # ... bytes in a sample of the bytes per item


class WorkerError(PipekitError):
    """A failed item, delivered as a value in place of its result.

    ``kind``: the exception's class name if the function raised (``"ValueError"``...),
    ``"terminated"`` if the item crashed its worker, ``"timeout"`` if it ran longer than
    the pool's ``timeout``, ``"CodecError"`` or ``"ProtocolError"`` if the item could not
    be sent (not encodable, or larger than a frame). ``message``: the exception's text or
    what happened to the process. ``index``: the item's position in the input of
    ``map``/``imap_unordered`` (None for ``submit``). ``traceback``: the remote traceback
    text when the function raised, else ``""``. ``remote``: True when the exception was
    raised in the worker. ``pid``, ``exit_code``, ``signal`` and ``stderr`` (its tail)
    describe the worker process for ``terminated``/``timeout``; the
    :class:`~pipekit.ProcessError` is then the ``__cause__``.

    ``str(error)`` is ``"kind: message"``.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        index: int | None = None,
        traceback: str = "",
        remote: bool = False,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.index = index
        self.traceback = traceback
        self.remote = remote
        self.pid = pid
        self.exit_code = exit_code
        self.signal = signal
        self.stderr = stderr

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_worker_error, (self.kind, self.message, dict(self.__dict__)))

    def __repr__(self) -> str:
        where = f", index={self.index}" if self.index is not None else ""
        pid = f", pid={self.pid}" if self.pid is not None else ""
        return f"WorkerError({self.kind!r}, {self.message!r}{where}{pid})"


def _rebuild_worker_error(kind: str, message: str, state: dict[str, Any]) -> WorkerError:
    err = WorkerError(kind, message)
    err.__dict__.update(state)
    return err


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's counters."""

    size: int
    """Worker processes the pool keeps running."""
    live: int
    """Worker processes running and accepting items right now."""
    submitted: int
    """Items accepted (fed by ``map``/``imap_unordered`` or submitted)."""
    completed: int
    """Results delivered, error values included."""
    errors: int
    """Error values delivered (:class:`WorkerError`)."""
    crashes: int
    """Worker processes that died on their own (not counting timeouts)."""
    timeouts: int
    """Worker processes killed because an item ran past ``timeout``."""
    replacements: int
    """Worker processes started to replace dead ones."""
    retried: int
    """Items sent again (in isolation) after their worker died with them unanswered."""
    inflight: int
    """Items sent to workers and not answered yet."""
    pending: int
    """Items accepted and waiting for a worker."""
    chunksize: int
    """Items per chunk now (the ``chunksize`` option, or the adaptive size)."""
    max_inflight: int
    """Unanswered items a worker may hold now (the ``max_inflight`` option, or twice
    the adaptive chunk size)."""


# --- runs: who waits for which results ---------------------------------------------------


class _Run:
    """The consumer of a set of items (one ``map``, ``imap_unordered`` or ``submit``)."""

    __slots__ = ("cancelled", "closed_error", "draining", "event", "outstanding", "wake_at")

    def __init__(self) -> None:
        self.outstanding = 0  # fed and not yet consumed
        self.draining = False  # every item is fed: chunks shrink towards the end
        self.wake_at = -1  # set the event when outstanding falls to this
        self.event = trio.Event()
        self.cancelled = False  # nobody wants the results any more
        self.closed_error: BaseException | None = None  # the pool closed under us

    def complete(self, index: int | None, value: Any) -> None:
        raise NotImplementedError

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        """Results for the items ``start``, ``start + 1``, ... (``None``: ``submit``)."""
        raise NotImplementedError

    def close(self, error: BaseException) -> None:
        self.closed_error = error
        self.event.set()

    async def wait(self) -> None:
        """Wait for :meth:`complete` (or the pool's closing) to set the event."""
        if self.closed_error is not None:
            raise self.closed_error
        self.event = trio.Event()
        await self.event.wait()
        if self.closed_error is not None:
            raise self.closed_error


class _MapRun(_Run):
    __slots__ = ("parts",)

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[tuple[int, list[Any]]] = []  # (index of the first, results)

    def complete(self, index: int | None, value: Any) -> None:
        assert index is not None
        self.parts.append((index, [value]))
        self.outstanding -= 1
        if self.outstanding <= self.wake_at:
            self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        assert start is not None
        self.parts.append((start, values))
        self.outstanding -= len(values)
        if self.outstanding <= self.wake_at:
            self.event.set()

    def results(self) -> list[Any]:
        """Every result, in input order (call once all are in)."""
        parts = self.parts
        parts.sort(key=_first)
        results: list[Any] = []
        for _, values in parts:
            results.extend(values)
        parts.clear()
        return results


def _first(part: tuple[int, list[Any]]) -> int:
    return part[0]


class _StreamRun(_Run):
    __slots__ = ("ready",)

    def __init__(self) -> None:
        super().__init__()
        self.ready: deque[tuple[int, Any]] = deque()

    def complete(self, index: int | None, value: Any) -> None:
        if self.cancelled:
            return
        self.ready.append((index, value))  # type: ignore[arg-type]
        self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        if self.cancelled:
            return
        assert start is not None
        self.ready.extend(zip(range(start, start + len(values)), values, strict=True))
        self.event.set()


class _OneRun(_Run):
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        super().__init__()
        self.value: Any = None
        self.done = False

    def complete(self, index: int | None, value: Any) -> None:
        self.value = value
        self.done = True
        self.outstanding = 0
        self.event.set()

    def complete_many(self, start: int | None, values: list[Any]) -> None:
        self.complete(None, values[0])


# What the pool knows of items that were on a worker that died (see _settle):
_FRESH = 0  # never ran (as far as the pool knows)
_RAN = 1  # ran once to the end on a worker that died before answering: run once more
_SUSPECT = 2  # may have crashed (or hung) its worker: run alone


class _Segment:
    """Queued items: ``items[pos:stop]``, consecutive items of one run; ``items[k]`` has
    the index ``base + k`` (``base`` None: one submitted item). ``items`` may be the
    caller's own list (``map`` over a list slices it as workers take items). ``kind``:
    :data:`_FRESH` or :data:`_RAN` (such items are never chunked with fresh ones)."""

    __slots__ = ("base", "items", "kind", "pos", "run", "stop")

    def __init__(
        self,
        run: _Run,
        base: int | None,
        items: list[Any],
        pos: int = 0,
        stop: int = -1,
        kind: int = _FRESH,
    ) -> None:
        self.run = run
        self.base = base
        self.items = items
        self.pos = pos
        self.stop = len(items) if stop < 0 else stop
        self.kind = kind

    def __len__(self) -> int:
        return self.stop - self.pos

    def take(self, count: int) -> tuple[int | None, list[Any]]:
        """Remove the next ``count`` items (at most): ``(index of the first, items)``."""
        pos, items = self.pos, self.items
        start = None if self.base is None else self.base + pos
        self.pos = end = min(pos + count, self.stop)
        if pos == 0 and end == len(items):
            return start, items
        return start, items[pos:end]


# An item to isolate: (run, index, item).
_Entry = tuple[_Run, int | None, Any]


class _Flight:
    """A chunk sent to a worker: ``items`` with message ids ``first``, ``first + 1``...
    and indices ``start``, ``start + 1``... (or None); ``done`` of them are answered.
    ``kind``: what is known of its items (:data:`_FRESH`, :data:`_RAN`, :data:`_SUSPECT`)."""

    __slots__ = ("done", "first", "items", "kind", "run", "start")

    def __init__(
        self, first: int, run: _Run, start: int | None, items: list[Any], kind: int = _FRESH
    ) -> None:
        self.first = first
        self.run = run
        self.start = start
        self.items = items
        self.kind = kind
        self.done = 0

    def index(self, offset: int) -> int | None:
        return None if self.start is None else self.start + offset

    def entries(self, lo: int, hi: int) -> list[_Entry]:
        run, items = self.run, self.items
        return [(run, self.index(k), items[k]) for k in range(lo, hi)]

    def unanswered(self) -> list[_Entry]:
        return self.entries(self.done, len(self.items))


# --- progress records --------------------------------------------------------------------

_RECORD = struct.Struct("=qq")  # [start, end) ids of the slice a worker is running


class _Progress:
    """Shared memory where each worker records, before running a slice of a chunk, the
    ids of that slice (``pipekit.child`` item mode, :data:`~pipekit.child.PROGRESS_ENV`):
    16 bytes per slot, read once the worker's process is gone. On Linux the file has no
    name (the workers open it through ``/proc/<pid>/fd``), elsewhere it is a temporary
    file removed when the pool closes."""

    def __init__(self, file: Any, path: str, named: bool, slots: int) -> None:
        self.file = file
        self.path = path
        self.named = named
        self.memory = mmap.mmap(file.fileno(), _RECORD.size * slots)

    @classmethod
    def create(cls, slots: int) -> _Progress | None:
        """A record for ``slots`` workers, or None if no shared file can be made (then
        every unanswered item of a dead worker is a suspect)."""
        file: Any = None
        try:
            if sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd"):
                file = tempfile.TemporaryFile(prefix="pipekit-pool-")  # noqa: SIM115
                path, named = f"/proc/{os.getpid()}/fd/{file.fileno()}", False
            else:
                file = tempfile.NamedTemporaryFile(prefix="pipekit-pool-", delete=False)  # noqa: SIM115
                path, named = file.name, True
            file.truncate(_RECORD.size * slots)
            return cls(file, path, named, slots)
        except (OSError, ValueError):
            if file is not None:
                file.close()
            return None

    def where(self, slot: int) -> str:
        """The value of :data:`~pipekit.child.PROGRESS_ENV` for a worker in ``slot``."""
        return f"{self.path}:{_RECORD.size * slot}"

    def reset(self, slot: int) -> None:
        _RECORD.pack_into(self.memory, _RECORD.size * slot, -1, -1)

    def read(self, slot: int) -> tuple[int, int] | None:
        start, end = _RECORD.unpack_from(self.memory, _RECORD.size * slot)
        return (start, end) if 0 <= start <= end else None

    def close(self) -> None:
        self.memory.close()
        self.file.close()
        if self.named:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


# --- one worker process ---------------------------------------------------------------


class _Worker:
    """One live worker process and the tasks that serve it."""

    def __init__(self, pool: WorkerPool, slot: int, pipe: ProcessPipe) -> None:
        self.pool = pool
        self.slot = slot
        self.pipe = pipe
        self.pid: int = pipe.pid if pipe.pid is not None else -1
        self.inflight: deque[_Flight] = deque()
        self.load = 0  # unanswered items (in the flights)
        self.outbox: list[list[Any]] = []
        self.outbox_items = 0  # items in the outbox
        self.items_sent = 0  # items handed to the pipe (for the bytes-per-item estimate)
        self.seen_sent = (0, 0)  # (items_sent, bytes sent) at the last estimate
        self.seen_received = 0  # bytes received at the last estimate
        self.tx_event = trio.Event()
        self.busy_event = trio.Event()  # the watchdog waits for the first item
        self.head_since = 0.0  # when the oldest unanswered item became the oldest
        self.answered = 0
        self.fed = False  # given items since its last answer: no more until it answers
        self.warming = pool.init is not None  # one item at a time until the first answer
        self.isolating = False  # holds an item being isolated: nothing else goes here
        self.dead = False
        self.closing = False
        self.fatal: BaseException | None = None  # the pool must fail with this
        self.loss: BaseException | None = None  # how it died, for _settle
        self.timed_out: float | None = None  # killed for an item past this allowance
        self.scope = trio.CancelScope()

    def capacity(self, limit: int) -> int:
        if self.isolating or self.dead or self.closing:
            return 0
        return 1 if self.warming else limit

    async def serve(self) -> None:
        """Run until the worker dies, is killed, or the pool closes it."""
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop)
                if self.pool.timeout is not None:
                    nursery.start_soon(self._watchdog, self.pool.timeout)
                await self._receive_loop()
                nursery.cancel_scope.cancel()

    def request_close(self) -> None:
        """END the worker's input once everything queued is sent."""
        self.closing = True
        self.tx_event.set()

    async def _send_loop(self) -> None:
        pipe = self.pipe
        while True:
            if not self.outbox:
                if self.closing:
                    # If this fails, the receiving side reports how the worker ended.
                    with contextlib.suppress(
                        trio.BrokenResourceError, trio.ClosedResourceError, PipekitError
                    ):
                        await pipe.end()
                    return
                self.tx_event = trio.Event()
                await self.tx_event.wait()
                continue
            batch, self.outbox = self.outbox, []
            count, self.outbox_items = self.outbox_items, 0
            try:
                await pipe.send_batch(batch)
                self.items_sent += count
            except (CodecError, ProtocolError) as exc:
                if isinstance(exc, ProtocolError) and exc.kind != "oversize":
                    return  # the channel broke: the receiving side reports it
                if not await self._send_one_by_one(batch):
                    return
                self.items_sent += count
            except (trio.BrokenResourceError, trio.ClosedResourceError, PipekitError):
                return  # the worker died: the receiving side reports it

    async def _send_one_by_one(self, batch: list[list[Any]]) -> bool:
        """Send a batch that could not be encoded as a whole, chunk by chunk; a chunk
        that cannot be encoded is split in halves until each item that cannot be
        encoded is alone and gets its error value. False if the channel broke."""
        for message in batch:
            if not await self._send_chunk(message):
                return False
        return True

    async def _send_chunk(self, message: list[Any]) -> bool:
        if self.dead:
            return False
        try:
            await self.pipe.send(message)
            return True
        except (CodecError, ProtocolError) as exc:
            if isinstance(exc, ProtocolError) and exc.kind != "oversize":
                return False
            error: BaseException = exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, PipekitError):
            return False
        for part in self.pool._unsendable(self, message[1], error):
            if not await self._send_chunk(part):
                return False
        return True

    async def _receive_loop(self) -> None:
        pipe = self.pipe
        inflight = self.inflight
        pool = self.pool
        while True:
            try:
                batch = await pipe.receive_batch()
            except trio.EndOfChannel:
                if not self.dead and (inflight or not self.closing):
                    pool._worker_died(
                        self,
                        ProcessError(
                            "io_error",
                            f"{self.describe()} ended its output",
                            program=pipe.name,
                            pid=self.pid,
                        ),
                    )
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, PipekitError) as exc:
                if not self.dead:
                    pool._worker_died(self, exc)
                return
            if self.dead:
                return
            done = 0
            timed = 0  # items whose replies said how long they took
            spent = 0.0  # ... and that time
            try:
                for reply in batch:
                    tag, first, results, failed = reply[:4]
                    if tag != _CHUNK:
                        raise ValueError(f"not a chunk reply: {tag!r:.100}")
                    if len(reply) == 5:
                        spent += reply[4]
                        timed += len(results)
                    if not inflight:
                        raise ValueError(f"answer to request {first!r}, none was expected")
                    flight = inflight[0]
                    n = len(results)
                    if (
                        first != flight.first + flight.done
                        or not 0 < n <= len(flight.items) - flight.done
                    ):
                        raise ValueError(f"answer to requests {first!r}+{n}, not expected")
                    if failed:
                        for offset in failed:
                            results[offset] = pool._remote_error(
                                self, flight.index(flight.done + offset), results[offset]
                            )
                    flight.run.complete_many(flight.index(flight.done), results)
                    flight.done += n
                    self.load -= n
                    done += n
                    if flight.done == len(flight.items):
                        inflight.popleft()
            except (ValueError, TypeError, IndexError) as exc:
                # Not an answer to the oldest request: not an item-mode worker, or a bug.
                if done:
                    self.answered += done
                    pool._answered(self, done)
                pool._worker_died(
                    self, ProtocolError(f"{self.describe()} sent a bad answer: {exc}")
                )
                return
            self.answered += done
            if pool.chunksize is None:
                pool._learn(self, done, timed, spent)
            pool._answered(self, done)

    async def _watchdog(self, limit: float) -> None:
        inflight = self.inflight
        while True:
            if not inflight:
                self.busy_event = trio.Event()
                await self.busy_event.wait()
                continue
            allowance = limit
            if self.answered == 0 and self.pool.init is not None:
                allowance += self.pool.init_timeout or 0.0
            deadline = self.head_since + allowance
            if self.load > 1:
                # Finished items may wait up to _ANSWER_LAG for the rest of their chunk:
                # the oldest unanswered item may have started that much later.
                deadline += _ANSWER_LAG
            if trio.current_time() >= deadline:
                self.pool._timed_out(self, allowance)
                return
            await trio.sleep_until(deadline)

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"


# --- the pool ---------------------------------------------------------------------------


class WorkerPool:
    """``size`` worker processes calling ``target`` once per item; see the module
    docstring for dispatch, errors, crashes and timeouts.

    ``target`` is ``"package.module:function"`` or ``"path/to/file.py:function"``;
    ``init`` (same form) is a zero-argument function each worker calls once before its
    first item (load a model there). ``chunksize`` fixes the items per request (default:
    adaptive, see the module docstring). ``max_inflight`` bounds the unanswered items per
    worker (default: two chunks, at most ``2 * MAX_CHUNK``); chunks are then at most half
    of it. ``timeout`` (seconds, per item) kills the worker running an item that takes
    longer; an item's clock starts when the worker has answered every item sent before
    it (with 0.1 s of grace when it is not alone on its worker: finished items may wait
    that long for the rest of their chunk), and the first item of a fresh worker also
    gets ``init_timeout`` when there is an ``init``. ``env``, ``cwd``, ``stdout``,
    ``stderr``, ``kill_grace``, ``python`` and ``codecs`` are the workers' process
    options (:func:`~pipekit.adapters.stdio.worker_spec`).

    Use it as ``async with WorkerPool(...) as pool``: entering starts every worker and
    waits for their handshakes; leaving ENDs idle workers, kills those still busy with
    items nobody waits for any more, and reaps them all - after an exception or a
    cancellation every worker is terminated (SIGTERM, SIGKILL after ``kill_grace``).
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        size: int | None = None,
        *,
        init: str | os.PathLike[str] | None = None,
        chunksize: int | None = None,
        max_inflight: int | None = None,
        timeout: float | None = None,
        init_timeout: float | None = 60.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdout: Stdio = "inherit",
        stderr: Stdio = "pipe",
        kill_grace: float = 5.0,
        python: str | None = None,
        codecs: Sequence[str] = ("msgpack",),
    ) -> None:
        if size is None:
            size = os.cpu_count() or 1
        if size < 1:
            raise ValueError("size must be at least 1")
        if max_inflight is not None and not 1 <= max_inflight <= MAX_INFLIGHT:
            raise ValueError(f"max_inflight must be between 1 and {MAX_INFLIGHT}")
        if chunksize is not None:
            if not 1 <= chunksize <= MAX_INFLIGHT:
                raise ValueError(f"chunksize must be between 1 and {MAX_INFLIGHT}")
            if max_inflight is not None and chunksize > max_inflight:
                raise ValueError("chunksize cannot exceed max_inflight")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive")
        self.target = os.fspath(target)
        self.size = size
        self.init = os.fspath(init) if init is not None else None
        self.chunksize = chunksize
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.init_timeout = init_timeout
        self.spec: ProcessSpec = worker_spec(
            self.target,
            mode="item",
            init=self.init,
            python=python,
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            kill_grace=kill_grace,
            codecs=tuple(codecs),
        )
        self._workers: list[_Worker | None] = [None] * size
        self._live: list[_Worker] = []
        self._pending: deque[_Segment] = deque()
        self._pending_items = 0  # items in _pending
        self._suspects: deque[_Entry] = deque()
        self._limbo = 0  # unanswered items of dead workers not yet settled
        self._env = env
        self._progress: _Progress | None = None
        self._runs: set[_Run] = set()
        self._next_id = 0  # message ids: consecutive within a chunk
        self._item_seconds: float | None = None  # estimated time a worker spends per item
        self._item_bytes = 0.0  # estimated encoded size of an item or result (0: unknown)
        self._chunk = 1  # items per chunk now
        self._limit = 1  # unanswered items per worker now, at most
        self._plan()
        self._started = trio.Event()
        self._stack: AsyncExitStack | None = None
        self._opened = False
        self._closing = False
        self._failed = False
        self._barren_deaths = 0
        # counters
        self._submitted = 0
        self._completed = 0
        self._errors = 0
        self._crashes = 0
        self._timeouts = 0
        self._replacements = 0
        self._retried = 0

    # -- lifetime ---------------------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        if self._opened:
            raise RuntimeError("a WorkerPool can be entered only once")
        self._opened = True
        stack = AsyncExitStack()
        await stack.enter_async_context(self._lifetime())
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[None]:
        self._progress = _Progress.create(self.size)
        try:
            async with self._workers_running():
                yield
        finally:
            if self._progress is not None:
                self._progress.close()

    @asynccontextmanager
    async def _workers_running(self) -> AsyncIterator[None]:
        async with open_plain_nursery() as nursery:
            for slot in range(self.size):
                nursery.start_soon(self._run_slot, slot, name=f"pipekit:pool:{slot}")
            await self._started.wait()
            try:
                yield
            except BaseException:
                self._shut(trio.ClosedResourceError("the worker pool was aborted"))
                nursery.cancel_scope.cancel()
                raise
            self._shut(trio.ClosedResourceError("the worker pool is closed"))
            for worker in list(self._live):
                if worker.inflight:
                    self._kill(worker)  # nobody waits for these results any more
                else:
                    worker.request_close()

    def _shut(self, error: BaseException) -> None:
        self._closing = True
        for run in list(self._runs):
            run.cancelled = True
            run.close(error)
        self._runs.clear()
        self._pending.clear()
        self._pending_items = 0
        self._suspects.clear()

    def _slot_spec(self, slot: int) -> ProcessSpec:
        """The spec of the next worker in ``slot``: with its progress record, reset."""
        progress = self._progress
        if progress is None:
            return self.spec
        progress.reset(slot)
        env = dict(os.environ if self._env is None else self._env)
        env[PROGRESS_ENV] = progress.where(slot)
        return replace(self.spec, env=env)

    async def _run_slot(self, slot: int) -> None:
        while not self._closing:
            worker: _Worker | None = None
            try:
                async with open_process(self._slot_spec(slot)) as pipe:
                    worker = _Worker(self, slot, pipe)
                    self._register(worker)
                    await worker.serve()
            except (PipekitError, trio.BrokenResourceError) as exc:
                if worker is None:  # cannot start a worker: the pool fails
                    if self._failed:
                        return  # another slot already fails the pool
                    self._failed = True
                    raise
                if not worker.dead:
                    self._worker_died(worker, exc)
            if worker is not None:
                self._unregister(worker)
                if worker.dead:
                    self._settle(worker)  # the process is gone: its record is final
            if worker is not None and worker.fatal is not None:
                if self._failed:
                    return  # another slot already fails the pool
                self._failed = True
                raise worker.fatal
            if self._closing:
                return

    def _register(self, worker: _Worker) -> None:
        self._workers[worker.slot] = worker
        self._live.append(worker)
        if not self._started.is_set() and len(self._live) == self.size:
            self._started.set()
        if self._closing:
            worker.request_close()
        else:
            self._dispatch()

    def _unregister(self, worker: _Worker) -> None:
        if self._workers[worker.slot] is worker:
            self._workers[worker.slot] = None
        if worker in self._live:
            self._live.remove(worker)

    # -- dispatch ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the worker pool is closed")
        if not self._started.is_set() or self._stack is None:
            raise RuntimeError("use the pool inside 'async with WorkerPool(...) as pool'")

    def _dispatch(self) -> None:
        """Hand queued items to workers: isolated items first (each to an idle worker),
        then the rest, each to the worker with the fewest unanswered items."""
        live = self._live
        if not live:
            return
        suspects = self._suspects
        while suspects:
            idle = None
            for w in live:
                if not w.inflight and not w.dead and not w.closing:
                    idle = w
                    break
            if idle is None:
                return  # the others wait until the suspects are placed
            entry = suspects.popleft()
            if entry[0].cancelled:
                continue
            idle.isolating = True
            self._assign(idle, entry)
            idle.tx_event.set()
        pending = self._pending
        while pending:
            chunk, limit = self._bounds(len(live))
            # A worker gets items once it has room for a whole chunk (or for everything
            # queued), so that cheap items are not sent in scraps, and only if it
            # answered since it was last given items: one stuck on a slow item keeps
            # what it has, however much larger the bound grew meanwhile.
            want = min(chunk, self._pending_items)
            workers: list[_Worker] = []
            loads: list[int] = []
            caps: list[int] = []
            for w in live:
                cap = w.capacity(limit)
                n = w.load
                if n < cap and cap - n >= min(want, cap) and not (n and w.fed):
                    workers.append(w)
                    loads.append(n)
                    caps.append(cap)
            if not workers:
                return
            gives = _water_fill(loads, caps, self._pending_items)
            for w, give in zip(workers, gives, strict=True):
                if give and pending:
                    self._assign_many(w, give, chunk)

    def _bounds(self, workers: int) -> tuple[int, int]:
        """The chunk size and in-flight bound for the items queued now."""
        if self.chunksize is None:
            self._size_up(self._pending[0])
        chunk = self._chunk
        limit = self._limit
        if self._pending[-1].run.draining and self.chunksize is None:
            # The last items: smaller chunks, so that the workers finish together (each
            # worker's share of what is left, halved) - but not below a few ms of work:
            # each round of smaller chunks costs a round trip.
            tail = -(-self._pending_items // (2 * workers))
            seconds = self._item_seconds
            if seconds is not None:
                tail = max(tail, int(TAIL_SECONDS / seconds))
            if tail < chunk:
                chunk = max(1, tail)
                if self.max_inflight is None:
                    limit = 2 * chunk
        return chunk, limit

    def _assign_many(self, worker: _Worker, count: int, chunk: int) -> None:
        """Move up to ``count`` queued items to ``worker``, in chunks of at most
        ``chunk`` items of one queued segment each (cancelled ones are dropped). Stops
        early at a segment whose items are much larger than the estimate said (the
        bounds are then planned again)."""
        pending = self._pending
        inflight = worker.inflight
        outbox = worker.outbox
        if not inflight:
            worker.head_since = trio.current_time()
            worker.busy_event.set()
        next_id = self._next_id
        sent = 0
        while count and pending:
            segment = pending[0]
            left = len(segment)
            if segment.run.cancelled:
                pending.popleft()
                self._pending_items -= left
                continue
            if sent and self.chunksize is None and self._size_up(segment):
                break
            n = min(count, chunk, left)
            start, items = segment.take(n)
            if n == left:
                pending.popleft()
            inflight.append(_Flight(next_id, segment.run, start, items, segment.kind))
            outbox.append([_CHUNK, next_id, items, _TIMED])
            next_id += n
            sent += n
            count -= n
        self._next_id = next_id
        self._pending_items -= sent
        worker.load += sent
        worker.outbox_items += sent
        worker.fed = True
        worker.tx_event.set()

    def _assign(self, worker: _Worker, entry: _Entry) -> None:
        run, index, item = entry
        first = self._next_id
        self._next_id += 1
        if not worker.inflight:
            worker.head_since = trio.current_time()
            worker.busy_event.set()
        worker.inflight.append(_Flight(first, run, index, [item], _SUSPECT))
        worker.load += 1
        worker.outbox.append([_CHUNK, first, [item], _TIMED])
        worker.outbox_items += 1

    def _drop(self, run: _Run) -> None:
        """Forget ``run``: its queued items are removed, its answers ignored."""
        if run.cancelled:
            return
        run.cancelled = True
        self._runs.discard(run)
        if any(segment.run is run for segment in self._pending):
            kept = [segment for segment in self._pending if segment.run is not run]
            self._pending.clear()
            self._pending.extend(kept)
            self._pending_items = sum(len(segment) for segment in kept)
        if any(entry[0] is run for entry in self._suspects):
            entries = [entry for entry in self._suspects if entry[0] is not run]
            self._suspects.clear()
            self._suspects.extend(entries)

    def _enqueue(self, segment: _Segment) -> None:
        n = len(segment)
        self._pending.append(segment)
        self._pending_items += n
        self._submitted += n
        segment.run.outstanding += n
        self._dispatch()

    # -- answers and failures ---------------------------------------------------------

    def _answered(self, worker: _Worker, count: int) -> None:
        self._completed += count
        self._barren_deaths = 0
        worker.fed = False
        worker.warming = False
        worker.isolating = False
        if worker.inflight:
            worker.head_since = trio.current_time()
        if worker.closing and not worker.inflight:
            worker.tx_event.set()
        self._dispatch()

    def _plan(self) -> None:
        """Set the chunk size and the in-flight bound from the options and estimates."""
        if self.chunksize is not None:
            chunk = self.chunksize
        else:
            seconds = self._item_seconds
            chunk = FIRST_CHUNK if seconds is None else int(CHUNK_SECONDS / seconds)
            if self._item_bytes > 0:
                chunk = min(chunk, int(CHUNK_BYTES / self._item_bytes))
            chunk = max(1, min(chunk, MAX_CHUNK))
            if self.max_inflight is not None:
                chunk = min(chunk, max(1, self.max_inflight // 2))
        self._chunk = chunk
        self._limit = self.max_inflight if self.max_inflight is not None else 2 * chunk

    def _size_up(self, segment: _Segment) -> bool:
        """Before items are chunked: if the next one is a ``bytes``-like or ``str`` much
        larger than the bytes-per-item estimate (items of another kind than the last
        ones), raise the estimate to its size, so that a chunk of such items is not built
        by the old estimate (a chunk larger than a frame would only fail to encode).
        True if it did."""
        if segment.pos >= segment.stop:
            return False
        item = segment.items[segment.pos]
        if isinstance(item, str):
            size = len(item) if item.isascii() else 4 * len(item)  # UTF-8: at most 4
        elif isinstance(item, (bytes, bytearray)):
            size = len(item)
        elif isinstance(item, memoryview):
            size = item.nbytes
        else:
            return False
        if size > 2 * self._item_bytes and size * self._chunk > CHUNK_BYTES:
            self._item_bytes = float(size)
            self._plan()
            return True
        return False

    def _learn(self, worker: _Worker, answered: int, timed: int, spent: float) -> None:
        """Update the estimates of time and bytes per item from answers just received:
        a geometric moving average (each sample moves the estimate halfway, in log
        scale), so that the chunk size follows a change of pace within a few answers."""
        if timed:
            sample = max(spent / timed, 1e-9)
            old = self._item_seconds
            self._item_seconds = sample if old is None else (old * sample) ** 0.5
        # Bytes per item: only from samples large enough for the messages' own few
        # dozen bytes not to count.
        stats = worker.pipe.stats
        size = 0.0
        received = stats.bytes_received - worker.seen_received
        if answered >= _SAMPLE_ITEMS or received >= _SAMPLE_BYTES:
            size = received / max(answered, 1)
            worker.seen_received = stats.bytes_received
        items, sent = worker.seen_sent
        count, sent = worker.items_sent - items, stats.bytes_sent - sent
        if count >= _SAMPLE_ITEMS or (count and sent >= _SAMPLE_BYTES):
            size = max(size, sent / count)
            worker.seen_sent = (worker.items_sent, stats.bytes_sent)
        if size > 0:
            old_size = self._item_bytes
            self._item_bytes = size if not old_size else (old_size * size) ** 0.5
        self._plan()

    def _remote_error(self, worker: _Worker, index: int | None, info: Any) -> WorkerError:
        self._errors += 1
        if not isinstance(info, dict):
            info = {"kind": "RemoteError", "message": repr(info)}
        return WorkerError(
            str(info.get("kind", "Exception")),
            str(info.get("message", "")),
            index=index,
            traceback=str(info.get("traceback", "")),
            remote=True,
            pid=worker.pid,
        )

    def _deliver_error(self, entry: _Entry, error: WorkerError) -> None:
        self._errors += 1
        self._completed += 1
        entry[0].complete(entry[1], error)

    def _unsendable(self, worker: _Worker, first: int, exc: BaseException) -> list[list[Any]]:
        """A chunk could not be encoded: split it in two (the messages to send instead)
        or, if it holds one item, that item was never sent and its result is the error."""
        inflight = worker.inflight
        for i, flight in enumerate(inflight):
            if flight.first != first or flight.done:
                continue
            items = flight.items
            if len(items) > 1:
                if isinstance(exc, ProtocolError) and self.chunksize is None:
                    # Larger than a frame: the items are larger than the estimate said.
                    self._item_bytes = max(self._item_bytes, DEFAULT_MAX_FRAME / len(items))
                    self._plan()
                half = len(items) // 2
                a = _Flight(first, flight.run, flight.start, items[:half], flight.kind)
                b = _Flight(first + half, flight.run, flight.index(half), items[half:], flight.kind)
                inflight[i] = a
                inflight.insert(i + 1, b)
                return [[_CHUNK, a.first, a.items, _TIMED], [_CHUNK, b.first, b.items, _TIMED]]
            del inflight[i]
            worker.load -= 1
            if i == 0:
                worker.head_since = trio.current_time()
            err = WorkerError(type(exc).__name__, str(exc), index=flight.start, pid=worker.pid)
            err.__cause__ = exc
            self._deliver_error((flight.run, flight.start, items[0]), err)
            if worker.closing and not inflight:
                worker.tx_event.set()
            self._dispatch()
            return []
        return []

    @staticmethod
    def _take_unanswered(worker: _Worker) -> list[_Entry]:
        entries = [entry for flight in worker.inflight for entry in flight.unanswered()]
        worker.inflight.clear()
        worker.load = 0
        return entries

    def _worker_died(self, worker: _Worker, exc: BaseException) -> None:
        """The worker's channel broke: it crashed (or, rarely, misbehaved). Its items are
        settled once the process is reaped (:meth:`_settle`)."""
        if worker.dead:
            return
        remote = _remote_cause(exc)
        if (
            worker.answered == 0
            and remote is not None
            and remote.kind not in ("SystemExit", "KeyboardInterrupt")
        ):
            # INIT raised (or the runtime failed before serving): nothing an item did.
            err = WorkerError(
                remote.kind,
                f"{worker.describe()} failed before serving any item "
                f"(in {self.init or 'its start-up'}): {remote.message}",
                traceback=str(remote.details.get("traceback", "")),
                remote=True,
                pid=worker.pid,
            )
            err.__cause__ = exc
            worker.fatal = err
            self._requeue(self._take_unanswered(worker))
            self._kill(worker)
            return
        self._crashes += 1
        if worker.answered == 0:
            self._barren_deaths += 1
            if self._barren_deaths >= MAX_BARREN_DEATHS:
                err = WorkerError(
                    "terminated",
                    f"{MAX_BARREN_DEATHS} fresh workers in a row died before answering any "
                    f"item; the last: {exc}",
                    pid=worker.pid,
                )
                err.__cause__ = exc
                worker.fatal = err
        worker.loss = exc
        self._kill(worker)
        self._dispatch()

    def _timed_out(self, worker: _Worker, allowance: float) -> None:
        if worker.dead:
            return
        self._timeouts += 1
        worker.timed_out = allowance
        self._kill(worker)
        self._dispatch()

    def _kill(self, worker: _Worker) -> None:
        """Stop using ``worker`` and SIGKILL its process group; its slot starts a
        replacement unless the pool is closing. Its unanswered items wait for
        :meth:`_settle`."""
        worker.dead = True
        if not self._closing and worker.fatal is None:
            self._replacements += 1
        if worker in self._live:
            self._live.remove(worker)
        self._limbo += worker.load
        worker.outbox = []
        worker.pipe.kill()
        worker.scope.cancel()

    def _settle(self, worker: _Worker) -> None:
        """Decide what becomes of the unanswered items of ``worker``, which died or was
        killed and whose process is reaped, from its progress record: the ids of the
        slice of items it was running (``[start, end)``). A single unanswered item is the
        culprit at once. Otherwise items before the slice ran to the end (their answers
        were lost): they run once more, chunked only with such items. Items after it
        never started: they are queued again as they were. Items in the slice are
        suspects: each runs again alone. An item that ran (or was in the slice) a second
        time is not run a third time: its result is an error. Without a record, every
        unanswered item is a suspect."""
        flights = list(worker.inflight)
        worker.inflight.clear()
        self._limbo -= worker.load
        worker.load = 0
        if self._closing:
            return
        if sum(len(flight.items) - flight.done for flight in flights) == 1:
            # A single unanswered item is the culprit (whatever the record says: with
            # max_inflight=1, no item runs twice).
            entry = next(e for flight in flights for e in flight.unanswered())
            if not entry[0].cancelled:
                self._deliver_error(entry, self._loss_error(worker, entry[1]))
            self._dispatch()
            return
        record = self._progress.read(worker.slot) if self._progress is not None else None
        again: list[_Segment] = []  # back to the front of the queue, in order
        suspects: list[_Entry] = []
        lost: list[_Entry] = []  # ran twice: not run again
        for flight in flights:
            n = len(flight.items)
            lo = flight.done
            if flight.run.cancelled:
                continue
            if record is None:
                suspects.extend(flight.entries(lo, n))
                continue
            a = min(max(record[0] - flight.first, lo), n)  # [lo, a): ran to the end
            b = min(max(record[1] - flight.first, a), n)  # [a, b): in the last slice
            kind = flight.kind
            if kind == _FRESH:
                if a > lo:
                    again.append(_Segment(flight.run, flight.start, flight.items, lo, a, _RAN))
                suspects.extend(flight.entries(a, b))
            elif kind == _RAN:
                lost.extend(flight.entries(lo, b))
            else:
                lost.extend(flight.entries(lo, a))
                suspects.extend(flight.entries(a, b))
            if b < n:  # [b, n): never started
                if kind == _SUSPECT:
                    suspects.extend(flight.entries(b, n))
                else:
                    again.append(_Segment(flight.run, flight.start, flight.items, b, n, kind))
        for entry in lost:
            self._deliver_error(entry, self._loss_error(worker, entry[1], again=True))
        if suspects:
            self._retried += len(suspects)
            self._suspects.extend(suspects)
        if again:
            count = sum(len(segment) for segment in again)
            self._retried += count
            self._pending.extendleft(reversed(again))
            self._pending_items += count
        self._dispatch()

    def _requeue(self, entries: list[_Entry]) -> None:
        entries = [entry for entry in entries if not entry[0].cancelled]
        self._pending.extendleft(
            _Segment(run, index, [item]) for run, index, item in reversed(entries)
        )
        self._pending_items += len(entries)

    def _loss_error(
        self, worker: _Worker, index: int | None, *, again: bool = False
    ) -> WorkerError:
        """The error value of an item lost with ``worker``: its culprit, or (``again``)
        an item that ran twice on workers that died before answering it."""
        where = f"item {index}" if index is not None else "the item"
        allowance = worker.timed_out
        if allowance is not None and not again:
            message = f"{where} not answered within {allowance:g} s; {worker.describe()} killed"
            cause = ProcessError("timeout", message, program=self.spec.argv[0], pid=worker.pid)
            err = WorkerError("timeout", message, index=index, pid=worker.pid)
            err.__cause__ = cause
            return err
        exc = worker.loss
        if exc is None:  # killed for another item's timeout
            exc = ProcessError(
                "timeout",
                f"{worker.describe()} was killed: an item took longer than the timeout",
                program=self.spec.argv[0],
                pid=worker.pid,
            )
        return self._crash_error(worker, index, exc, again=again)

    def _crash_error(
        self, worker: _Worker, index: int | None, exc: BaseException, *, again: bool = False
    ) -> WorkerError:
        where = f"item {index}" if index is not None else "the item"
        doing = f"while running {where}"
        if again:  # not run a third time
            doing = f"before answering {where}, already lost once with another worker"
        remote = _remote_cause(exc)
        if isinstance(exc, ProcessError):
            message = f"{worker.describe()} died {doing}: "
            if exc.signal is not None:
                message += f"killed by signal {_signal_name(exc.signal)}"
            elif exc.exit_code is not None:
                message += f"exit code {exc.exit_code}"
            else:
                message += exc.kind
            if remote is not None:
                message += f" ({remote.kind}: {remote.message})"
            err = WorkerError(
                "terminated",
                message,
                index=index,
                traceback=str(remote.details.get("traceback", "")) if remote else "",
                pid=worker.pid,
                exit_code=exc.exit_code,
                signal=exc.signal,
                stderr=exc.stderr,
            )
        else:
            err = WorkerError(
                "terminated",
                f"{worker.describe()} failed {doing}: {exc}",
                index=index,
                pid=worker.pid,
            )
        err.__cause__ = exc
        return err

    # -- the API ----------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The pids of the live workers, in slot order."""
        return [w.pid for w in self._workers if w is not None and not w.dead]

    @property
    def replacements(self) -> int:
        """How many worker processes were started to replace dead ones."""
        return self._replacements

    @property
    def stats(self) -> PoolStats:
        return PoolStats(
            size=self.size,
            live=len(self._live),
            submitted=self._submitted,
            completed=self._completed,
            errors=self._errors,
            crashes=self._crashes,
            timeouts=self._timeouts,
            replacements=self._replacements,
            retried=self._retried,
            inflight=sum(w.load for w in self._live),
            pending=self._pending_items + len(self._suspects) + self._limbo,
            chunksize=self._chunk,
            max_inflight=self._limit,
        )

    @property
    def _window(self) -> int:
        return 2 * self.size * self._limit

    async def map(self, items: Iterable[Any]) -> list[Any]:
        """Run every item; return the results in input order, a failed item's result
        being its :class:`WorkerError`. ``items`` is pulled lazily, as workers have
        room (at most ``2 * size * max_inflight`` items are held at a time, with
        ``max_inflight`` as in :attr:`stats`); a list is sliced as workers take items."""
        self._check_open()
        run = _MapRun()
        self._runs.add(run)
        source = items if type(items) is list else None  # sliced as workers take items
        iterator = iter(items) if source is None else None
        index = 0
        exhausted = False
        try:
            while True:
                window = self._window  # it follows the chunk size
                low = window // 2
                if not exhausted and run.outstanding <= low:
                    want = window - run.outstanding
                    if source is not None:
                        n = max(0, min(want, len(source) - index))
                        segment = _Segment(run, 0, source, index, index + n)
                    else:
                        assert iterator is not None
                        chunk = list(itertools.islice(iterator, want))
                        n = len(chunk)
                        segment = _Segment(run, index, chunk)
                    if n < want:
                        exhausted = run.draining = True
                    if n:
                        self._enqueue(segment)
                        index += n
                if exhausted and run.outstanding == 0:
                    await trio.lowlevel.checkpoint()
                    return run.results()
                run.wake_at = 0 if exhausted else low
                if run.outstanding > run.wake_at:
                    await run.wait()
        except BaseException:
            self._drop(run)
            raise
        finally:
            self._runs.discard(run)

    def imap_unordered(self, items: Iterable[Any]) -> UnorderedResults:
        """Run every item; iterate over ``(index, result)`` pairs as they complete
        (``index``: the item's position in ``items``; a failed item's result is its
        :class:`WorkerError`). Every index comes exactly once. ``items`` is pulled
        lazily; results not yet consumed count against the same bound as ``map``'s.

        ``async for index, result in pool.imap_unordered(items)``; leaving the loop
        early, call ``aclose()`` (or use ``async with``) so the remaining items are
        dropped rather than run."""
        self._check_open()
        return UnorderedResults(self, items)

    async def submit(self, item: Any) -> Any:
        """Run one item and return its result (its :class:`WorkerError` if it failed:
        errors are values here too). Any number of tasks may submit concurrently."""
        self._check_open()
        run = _OneRun()
        self._runs.add(run)
        try:
            self._enqueue(_Segment(run, None, [item]))
            while not run.done:
                await run.wait()
            return run.value
        except BaseException:
            self._drop(run)
            raise
        finally:
            self._runs.discard(run)


class UnorderedResults:
    """The iterator :meth:`WorkerPool.imap_unordered` returns: ``(index, result)`` pairs
    in completion order."""

    def __init__(self, pool: WorkerPool, items: Iterable[Any]) -> None:
        self._pool = pool
        self._iterator: Iterator[Any] | None = iter(items)
        self._run = _StreamRun()
        self._index = 0
        self._yields = 0
        pool._runs.add(self._run)

    def __aiter__(self) -> UnorderedResults:
        return self

    async def __anext__(self) -> tuple[int, Any]:
        run = self._run
        pool = self._pool
        window = pool._window
        while True:
            if run.closed_error is not None:
                raise run.closed_error
            if run.cancelled:  # closed (or interrupted) earlier
                raise StopAsyncIteration
            if self._iterator is not None and run.outstanding <= window // 2:
                self._feed(window - run.outstanding)
            if run.ready:
                self._yields += 1
                if self._yields % _FAIRNESS_EVERY == 0:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.lowlevel.checkpoint_if_cancelled()
                run.outstanding -= 1
                return run.ready.popleft()
            if self._iterator is None and run.outstanding == 0:
                self._finish()
                raise StopAsyncIteration
            try:
                await run.wait()
            except BaseException:
                self._finish()
                raise

    def _feed(self, want: int) -> None:
        assert self._iterator is not None
        chunk = list(itertools.islice(self._iterator, want))
        if len(chunk) < want:
            self._iterator = None
            self._run.draining = True
        if chunk:
            start = self._index
            self._index += len(chunk)
            self._pool._enqueue(_Segment(self._run, start, chunk))

    def _finish(self) -> None:
        self._iterator = None
        self._pool._drop(self._run)

    async def aclose(self) -> None:
        """Stop: items not yet sent are dropped, answers still coming are ignored."""
        self._finish()
        self._run.ready.clear()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> UnorderedResults:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _water_fill(loads: list[int], caps: list[int], available: int) -> list[int]:
    """How many of ``available`` items to give each worker so that the least-loaded ones
    are filled first, level by level (the result of choosing the least-loaded worker for
    every item in turn), without exceeding ``caps``."""
    free = sum(caps) - sum(loads)
    k = min(available, free)
    if k == free:
        return [c - n for n, c in zip(loads, caps, strict=True)]

    def amount(level: int) -> int:
        return sum(min(max(level - n, 0), c - n) for n, c in zip(loads, caps, strict=True))

    lo, hi = min(loads), max(caps)  # amount(lo) == 0 <= k < free == amount(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if amount(mid) <= k:
            lo = mid
        else:
            hi = mid
    gives = [min(max(lo - n, 0), c - n) for n, c in zip(loads, caps, strict=True)]
    rest = k - sum(gives)
    for i, (n, c) in enumerate(zip(loads, caps, strict=True)):
        if rest and n <= lo < c:
            gives[i] += 1
            rest -= 1
    return gives


def _remote_cause(exc: BaseException | None) -> RemoteError | None:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, RemoteError):
            return exc
        exc = exc.__cause__
        seen += 1
    return None


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
