"""The pool's queue: the runs, their items waiting for a worker, the items to isolate,
and the dispatch that hands them to the live workers in chunks."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .queue import Entry, Flight, Segment, SegmentState
from .runs import Run
from .sizing import ChunkSizer
from .stats import Counters
from .worker import Worker


class Dispatcher:
    """Queued work and the live workers it goes to: isolated items first (each to an
    idle worker), then the rest, each to the worker with the fewest unanswered items
    (see :class:`~pipekit.WorkerPool` for the rules)."""

    def __init__(self, size: int, sizer: ChunkSizer, counters: Counters) -> None:
        self.size = size
        self.sizer = sizer
        self.counters = counters
        self.live: list[Worker] = []  # the workers that may be given items
        self.runs: set[Run] = set()  # every run not finished or dropped
        self.pending: deque[Segment] = deque()
        self.pending_items = 0  # items in pending
        self.suspects: deque[Entry] = deque()
        self.reruns: deque[Segment] = deque()  # items that ran once (RAN): run alone
        self.rerun_items = 0  # items in reruns
        self.next_id = 0  # message ids: consecutive within a chunk

    @property
    def window(self) -> int:
        """How many items a run may have fed and not consumed (it follows the chunk
        size)."""
        return 2 * self.size * self.sizer.limit

    @property
    def queued(self) -> int:
        """Items waiting for a worker."""
        return self.pending_items + len(self.suspects) + self.rerun_items

    # -- workers ----------------------------------------------------------------------------

    def join(self, worker: Worker) -> None:
        """``worker`` may be given items from now on."""
        self.live.append(worker)

    def leave(self, worker: Worker) -> None:
        """``worker`` is given nothing more."""
        if worker in self.live:
            self.live.remove(worker)

    # -- the queue --------------------------------------------------------------------------

    def enqueue(self, segment: Segment) -> None:
        """Queue newly fed items and dispatch."""
        n = len(segment)
        self.pending.append(segment)
        self.pending_items += n
        self.counters.submitted += n
        segment.run.outstanding += n
        self.dispatch()

    def put_back(self, segments: list[Segment]) -> None:
        """Queue ``segments`` of a dead worker again, in this order: items that never
        started at the front of the queue, items that already ran once (``RAN``) to be
        run again on a worker that holds nothing else (:meth:`dispatch`)."""
        for segment in segments:
            if segment.state is SegmentState.RAN:
                self.reruns.append(segment)
                self.rerun_items += len(segment)
        fresh = [segment for segment in segments if segment.state is not SegmentState.RAN]
        self.pending.extendleft(reversed(fresh))
        self.pending_items += sum(len(segment) for segment in fresh)

    def requeue(self, entries: list[Entry]) -> None:
        """Queue single items again, at the front, in this order (cancelled ones are
        dropped)."""
        entries = [entry for entry in entries if not entry[0].cancelled]
        self.pending.extendleft(
            Segment(run, index, [item]) for run, index, item in reversed(entries)
        )
        self.pending_items += len(entries)

    def isolate(self, entries: Iterable[Entry]) -> None:
        """Queue items to run alone, each on an idle worker."""
        self.suspects.extend(entries)

    def drop(self, run: Run) -> None:
        """Forget ``run``: its queued items are removed, its answers ignored."""
        if run.cancelled:
            return
        run.cancelled = True
        self.runs.discard(run)
        if any(segment.run is run for segment in self.pending):
            kept = [segment for segment in self.pending if segment.run is not run]
            self.pending.clear()
            self.pending.extend(kept)
            self.pending_items = sum(len(segment) for segment in kept)
        if any(segment.run is run for segment in self.reruns):
            kept = [segment for segment in self.reruns if segment.run is not run]
            self.reruns.clear()
            self.reruns.extend(kept)
            self.rerun_items = sum(len(segment) for segment in kept)
        if any(entry[0] is run for entry in self.suspects):
            entries = [entry for entry in self.suspects if entry[0] is not run]
            self.suspects.clear()
            self.suspects.extend(entries)

    def close(self, error: BaseException) -> None:
        """The pool closes: every run fails with ``error``, the queue is emptied."""
        for run in list(self.runs):
            run.cancelled = True
            run.close(error)
        self.runs.clear()
        self.pending.clear()
        self.pending_items = 0
        self.suspects.clear()
        self.reruns.clear()
        self.rerun_items = 0

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand queued items to workers: isolated work first, each to an idle worker
        that then gets nothing else until it has answered all of it (suspects one by
        one, then items that already ran once), then the rest, each to the worker with
        the fewest unanswered items.

        Isolating the items that already ran once is what keeps an innocent item from
        being blamed: chunked before another item that crashes their worker, they would
        be lost a second time and not run a third."""
        live = self.live
        if not live:
            return
        suspects = self.suspects
        while suspects:
            idle = self._idle()
            if idle is None:
                return  # the others wait until the suspects are placed
            run, index, item = suspects.popleft()
            if run.cancelled:
                continue
            first = self.next_id
            self.next_id += 1
            idle.isolate(Flight(first, run, index, [item], SegmentState.SUSPECT))
        reruns = self.reruns
        while reruns:
            segment = reruns[0]
            if segment.run.cancelled:
                reruns.popleft()
                self.rerun_items -= len(segment)
                continue
            idle = self._idle()
            if idle is None:
                return  # the others wait until the reruns are placed
            n = min(len(segment), max(1, idle.capacity(self.sizer.limit)))
            start, items = segment.take(n)
            if not len(segment):
                reruns.popleft()
            self.rerun_items -= n
            first = self.next_id
            self.next_id += n
            idle.isolate(Flight(first, segment.run, start, items, SegmentState.RAN))
        pending = self.pending
        sizer = self.sizer
        while pending:
            chunk, limit = sizer.bounds(
                pending[0], pending[-1].run.draining, self.pending_items, len(live)
            )
            # A worker gets items once it has room for a whole chunk (or for everything
            # queued), so that cheap items are not sent in scraps, and only if it
            # answered since it was last given items: one stuck on a slow item keeps
            # what it has, however much larger the bound grew meanwhile.
            want = min(chunk, self.pending_items)
            workers: list[Worker] = []
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
            gives = water_fill(loads, caps, self.pending_items)
            for w, give in zip(workers, gives, strict=True):
                if give and pending:
                    self._assign(w, give, chunk)

    def _idle(self) -> Worker | None:
        """A live worker holding no unanswered item, if any."""
        for w in self.live:
            if not w.inflight and not w.dead and not w.closing:
                return w
        return None

    def _assign(self, worker: Worker, count: int, chunk: int) -> None:
        """Move up to ``count`` queued items to ``worker``, in chunks of at most
        ``chunk`` items of one queued segment each (cancelled ones are dropped). Stops
        early at a segment whose items are much larger than the estimate said (the
        bounds are then planned again)."""
        pending = self.pending
        sizer = self.sizer
        adaptive = sizer.adaptive
        give = worker.give
        next_id = self.next_id
        sent = 0
        while count and pending:
            segment = pending[0]
            left = len(segment)
            if segment.run.cancelled:
                pending.popleft()
                self.pending_items -= left
                continue
            if sent and adaptive and sizer.size_up(segment):
                break
            n = min(count, chunk, left)
            start, items = segment.take(n)
            if n == left:
                pending.popleft()
            give(Flight(next_id, segment.run, start, items, segment.state))
            next_id += n
            sent += n
            count -= n
        self.next_id = next_id
        self.pending_items -= sent
        worker.send_queued()


def water_fill(loads: list[int], caps: list[int], available: int) -> list[int]:
    """How many of ``available`` items to give each worker so that the least-loaded ones
    are filled first, level by level (the result of choosing the least-loaded worker for
    every item in turn), without exceeding ``caps``."""
    if available == 1:  # a submit, a one-item map: the first least-loaded worker with room
        gives = [0] * len(loads)
        room = [(n, i) for i, (n, c) in enumerate(zip(loads, caps, strict=True)) if n < c]
        if room:
            gives[min(room)[1]] = 1
        return gives
    free = sum(caps) - sum(loads)
    k = min(available, free)
    if k == free:
        return [c - n for n, c in zip(loads, caps, strict=True)]

    def amount(level: int) -> int:
        return sum(min(max(level - n, 0), c - n) for n, c in zip(loads, caps, strict=True))

    # amount(lo) == 0 <= k < amount(hi): at level max(loads) + k + 1 every worker takes
    # more than k items or all its room, so the search is O(log(spread + k)) steps,
    # not O(log(max(caps))) - a few items (a small map, a submit) cost one or two.
    lo, hi = min(loads), min(max(caps), max(loads) + k + 1)
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
