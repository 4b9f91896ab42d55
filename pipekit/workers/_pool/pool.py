"""Process worker pools: ``pk.WorkerPool`` calls a Python function once per item in a
fixed number of reused worker processes.

::

    async with pk.WorkerPool("myapp.nlp:tag", size=4, init="myapp.nlp:load_model") as pool:
        tags = await pool.map(sentences)              # input order; errors as values
        async for index, tag in pool.imap_unordered(more):
            ...
        one = await pool.submit(sentence)

Each worker is ``pipekit worker TARGET --mode item [--init INIT]`` (``worker_spec``,
started through a bootstrap that imports only the child runtime): it calls ``INIT``
once, then ``TARGET(item)`` for every item it is sent, and answers in request order
over its framed channel (msgpack by default, so items and results are msgpack values:
tuples come back as lists). Items travel in chunks (the item protocol of
:mod:`pipekit.workers._wire`): each request carries consecutive items of one ``map``,
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
they run once more, on a worker that holds nothing else and gets nothing more until it
has answered them (so that another item that crashes it cannot take them along again:
only an item that crashes a worker is ever reported). Items after it never started: they
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

import itertools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal

import trio

from ...adapters.stdio import ProcessSpec
from .._launch import worker_spec
from .._targets import resolve_target
from .._wire import WorkerMode
from .dispatch import Dispatcher
from .queue import Segment
from .results import UnorderedResults
from .runs import MapRun, OneRun
from .sizing import MAX_INFLIGHT, ChunkSizer
from .stats import Counters, PoolStats
from .supervisor import Supervisor

Stdio = Literal["pipe", "inherit", "null"]


class WorkerPool:
    """``size`` worker processes calling ``target`` once per item; see the module
    docstring for dispatch, errors, crashes and timeouts.

    ``target`` is a module-level function object, ``"package.module:function"`` or
    ``"path/to/file.py:function"`` (a function is passed by the name the workers import
    it by: see :func:`~pipekit.workers.target_spec` for what can be); ``init`` (same
    forms) is a zero-argument function each worker calls once before its first item
    (load a model there). ``chunksize`` fixes the items per request (default:
    adaptive, see the module docstring). ``max_inflight`` bounds the unanswered items per
    worker (default: two chunks, at most ``2 * MAX_CHUNK``); chunks are then at most half
    of it. ``timeout`` (seconds, per item) kills the worker running an item that takes
    longer; an item's clock starts when the worker has answered every item sent before
    it (with 0.1 s of grace when it is not alone on its worker: finished items may wait
    that long for the rest of their chunk), and the first item of a fresh worker also
    gets ``init_timeout`` when there is an ``init``. ``env``, ``cwd``, ``stdout``,
    ``stderr``, ``kill_grace``, ``python`` and ``codecs`` are the workers' process
    options (``worker_spec``).

    Use it as ``async with WorkerPool(...) as pool``: entering starts every worker and
    waits for their handshakes; leaving ENDs idle workers, kills those still busy with
    items nobody waits for any more, and reaps them all - after an exception or a
    cancellation every worker is terminated (SIGTERM, SIGKILL after ``kill_grace``).

    Example::

        async with pk.WorkerPool("textstats.py:count_words", size=4, timeout=10) as pool:
            counts = await pool.map(texts)          # in input order; errors are values
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Callable[..., Any],
        size: int | None = None,
        *,
        init: str | os.PathLike[str] | Callable[[], Any] | None = None,
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
        where = resolve_target(target)
        self.target = where.spec
        self.size = size
        self.init: str | None = None
        env = where.env(env)
        if init is not None:
            init_where = resolve_target(init)
            self.init = init_where.spec
            env = init_where.env(env)
        self.chunksize = chunksize
        self.max_inflight = max_inflight
        self.timeout = timeout
        self.init_timeout = init_timeout
        self.spec: ProcessSpec = worker_spec(
            self.target,
            mode=WorkerMode.ITEM,
            init=self.init,
            python=python,
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            kill_grace=kill_grace,
            codecs=tuple(codecs),
        )
        self._counters = Counters()
        self._sizer = ChunkSizer(chunksize, max_inflight)
        self._dispatcher = Dispatcher(size, self._sizer, self._counters)
        self._supervisor = Supervisor(
            self.spec,
            size,
            env=env,
            init=self.init,
            timeout=timeout,
            init_timeout=init_timeout,
            dispatcher=self._dispatcher,
            counters=self._counters,
        )
        self._stack: AsyncExitStack | None = None
        self._opened = False

    # -- lifetime -----------------------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        if self._opened:
            raise RuntimeError("a WorkerPool can be entered only once")
        self._opened = True
        stack = AsyncExitStack()
        await stack.enter_async_context(self._supervisor.running())
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

    def _check_open(self) -> None:
        if self._supervisor.closing:
            raise trio.ClosedResourceError("the worker pool is closed")
        if not self._supervisor.started.is_set() or self._stack is None:
            raise RuntimeError("use the pool inside 'async with WorkerPool(...) as pool'")

    # -- the API ------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The pids of the live workers, in slot order."""
        return self._supervisor.pids

    @property
    def replacements(self) -> int:
        """How many worker processes were started to replace dead ones."""
        return self._counters.replacements

    @property
    def stats(self) -> PoolStats:
        counters = self._counters
        dispatcher = self._dispatcher
        return PoolStats(
            size=self.size,
            live=len(dispatcher.live),
            submitted=counters.submitted,
            completed=counters.completed,
            errors=counters.errors,
            crashes=counters.crashes,
            timeouts=counters.timeouts,
            replacements=counters.replacements,
            retried=counters.retried,
            inflight=sum(w.load for w in dispatcher.live),
            pending=dispatcher.queued + self._supervisor.limbo,
            chunksize=self._sizer.chunk,
            max_inflight=self._sizer.limit,
        )

    async def map(self, items: Iterable[Any]) -> list[Any]:
        """Run every item; return the results in input order, a failed item's result
        being its :class:`WorkerError`. ``items`` is pulled lazily, as workers have
        room (at most ``2 * size * max_inflight`` items are held at a time, with
        ``max_inflight`` as in :attr:`stats`); a list is sliced as workers take items."""
        self._check_open()
        dispatcher = self._dispatcher
        run = MapRun()
        dispatcher.runs.add(run)
        source = items if type(items) is list else None  # sliced as workers take items
        iterator = iter(items) if source is None else None
        index = 0
        exhausted = False
        waited = False  # passed a checkpoint already (the wait for answers)
        try:
            while True:
                window = dispatcher.window  # it follows the chunk size
                low = window // 2
                if not exhausted and run.outstanding <= low:
                    want = window - run.outstanding
                    if source is not None:
                        n = max(0, min(want, len(source) - index))
                        segment = Segment(run, 0, source, index, index + n)
                    else:
                        assert iterator is not None
                        chunk = list(itertools.islice(iterator, want))
                        n = len(chunk)
                        segment = Segment(run, index, chunk)
                    if n < want:
                        exhausted = run.draining = True
                    if n:
                        dispatcher.enqueue(segment)
                        index += n
                if exhausted and run.outstanding == 0:
                    if not waited:  # (one scheduler pass less per call that waited)
                        await trio.lowlevel.checkpoint()
                    return run.results()
                run.wake_at = 0 if exhausted else low
                if run.outstanding > run.wake_at:
                    await run.wait()
                    waited = True
        except BaseException:
            dispatcher.drop(run)
            raise
        finally:
            dispatcher.runs.discard(run)

    def imap_unordered(self, items: Iterable[Any]) -> UnorderedResults:
        """Run every item; iterate over ``(index, result)`` pairs as they complete
        (``index``: the item's position in ``items``; a failed item's result is its
        :class:`WorkerError`). Every index comes exactly once. ``items`` is pulled
        lazily; results not yet consumed count against the same bound as ``map``'s.

        ``async for index, result in pool.imap_unordered(items)``; leaving the loop
        early, call ``aclose()`` (or use ``async with``) so the remaining items are
        dropped rather than run."""
        self._check_open()
        return UnorderedResults(self._dispatcher, items)

    async def submit(self, item: Any) -> Any:
        """Run one item and return its result (its :class:`WorkerError` if it failed:
        errors are values here too). Any number of tasks may submit concurrently."""
        self._check_open()
        dispatcher = self._dispatcher
        run = OneRun()
        dispatcher.runs.add(run)
        try:
            dispatcher.enqueue(Segment(run, None, [item]))
            while not run.done:
                await run.wait()
            return run.value
        except BaseException:
            dispatcher.drop(run)
            raise
        finally:
            dispatcher.runs.discard(run)
