"""One worker process of a pool: the tasks that send it chunks, read its answers and
watch its clock, and what it reports to the pool (:class:`WorkerHost`)."""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Any, Protocol

import trio

from ...adapters.stdio import ProcessError, ProcessPipe
from ...kernel import CodecError, ErrorKind, PipekitError, ProtocolError
from .._wire import ANSWER_LAG, chunk_request, parse_chunk_reply, parse_chunk_request
from .errors import WorkerError
from .queue import Entry, Flight

_SAMPLE_ITEMS = 256  # items, or ...
_SAMPLE_BYTES = 32 * 1024  # ... bytes in a sample of the bytes per item


class _Stopped(Exception):
    """Raised by the ``receive_with`` handler to end the receive loop."""


class WorkerHost(Protocol):
    """What a :class:`Worker` reports to (the pool). Every call comes from one of the
    worker's own tasks or from its pipe's reader task (answers are handed over there,
    see ``FramedPipe.receive_with``), on the pool's trio loop."""

    def answered(self, worker: Worker, count: int, timing: tuple[int, float] | None) -> None:
        """``count`` more items were answered (their results are delivered).
        ``timing``: ``(items, seconds)`` the worker said those of them that were timed
        took, to learn the pace from; None if the batch is no sample."""

    def item_failed(self, worker: Worker, index: int | None, info: Any) -> WorkerError:
        """The error value of the item ``index``, whose function raised in the worker
        (``info``: the reply's error entry)."""

    def oversize_chunk(self, items: int) -> None:
        """A chunk of ``items`` items was larger than a frame (it is sent in halves)."""

    def unsendable(self, worker: Worker, entry: Entry, exc: BaseException) -> None:
        """An item could not be encoded (``exc``) and was not sent: its result is an
        error value."""

    def died(self, worker: Worker, exc: BaseException) -> None:
        """The worker's channel broke: it crashed, or misbehaved (``exc`` says how)."""

    def timed_out(self, worker: Worker, allowance: float) -> None:
        """The worker's oldest unanswered item ran past ``allowance`` seconds."""


class Worker:
    """One live worker process and the tasks that serve it.

    The pool queues chunks with :meth:`give` (or :meth:`isolate`) and wakes the send
    loop with :meth:`send_queued`; answers, failures and timeouts go to ``host``.
    ``timeout``: seconds an item may run; ``init_timeout``: extra seconds for the first
    item when the worker has an ``init`` (``has_init``: one item at a time until the
    first answer)."""

    def __init__(
        self,
        host: WorkerHost,
        slot: int,
        pipe: ProcessPipe,
        *,
        timeout: float | None,
        has_init: bool,
        init_timeout: float | None,
    ) -> None:
        self.host = host
        self.slot = slot
        self.pipe = pipe
        self.pid: int = pipe.pid if pipe.pid is not None else -1
        self.timeout = timeout
        self.has_init = has_init
        self.init_timeout = init_timeout
        self.inflight: deque[Flight] = deque()
        self.load = 0  # unanswered items (in the flights)
        self.outbox: list[list[Any]] = []
        self.outbox_items = 0  # items in the outbox
        self.items_sent = 0  # items handed to the pipe (for the bytes-per-item estimate)
        self.seen_sent = (0, 0)  # (items_sent, bytes sent) at the last estimate
        self.seen_received = 0  # bytes received at the last estimate
        self.tx_event = trio.Event()
        self.send_parked = False  # the send loop waits for tx_event, its outbox empty
        self.busy_event = trio.Event()  # the watchdog waits for the first item
        self.head_since = 0.0  # when the oldest unanswered item became the oldest
        self.answered = 0
        self.fed = False  # given items since its last answer: no more until it answers
        self.warming = has_init  # one item at a time until the first answer
        self.isolating = False  # holds isolated items: nothing else until all answered
        self.dead = False
        self.closing = False
        self.fatal: BaseException | None = None  # the pool must fail with this
        self.loss: BaseException | None = None  # how it died, for settling its items
        self.timed_out: float | None = None  # killed for an item past this allowance
        self.scope = trio.CancelScope()

    def describe(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"

    # -- what the pool asks of it ---------------------------------------------------------

    def capacity(self, limit: int) -> int:
        """How many unanswered items it may hold now, with ``limit`` the pool's bound."""
        if self.isolating or self.dead or self.closing:
            return 0
        return 1 if self.warming else limit

    def give(self, flight: Flight) -> None:
        """Queue ``flight`` to be sent (at the next :meth:`send_queued`)."""
        inflight = self.inflight
        if not inflight:
            self.head_since = trio.current_time()
            self.busy_event.set()
        inflight.append(flight)
        n = len(flight.items)
        self.outbox.append(chunk_request(flight.first, flight.items))
        self.load += n
        self.outbox_items += n

    def send_queued(self) -> None:
        """Send what was given: no more items until it answers. What the pipe takes
        without waiting is queued (and, when its writer is idle, written) here, with no
        hand-off to the send loop (a scheduler pass per call of a one-item map); the
        rest, and anything the pipe refuses, is the send loop's."""
        self.fed = True
        if self.send_parked and self.outbox and not self.dead:
            try:
                sent = self.pipe.send_batch_nowait(self.outbox)
            except (CodecError, ProtocolError):
                sent = False  # the send loop meets it again, and splits the batch
            if sent:
                self.outbox = []
                self.items_sent += self.outbox_items
                self.outbox_items = 0
                return
        self.tx_event.set()

    def isolate(self, flight: Flight) -> None:
        """Send ``flight``, items being isolated (a suspect, or items that already ran
        once): nothing else goes here until every item it holds is answered."""
        self.isolating = True
        self.give(flight)
        self.tx_event.set()

    def request_close(self) -> None:
        """END the worker's input once everything queued is sent."""
        self.closing = True
        self.tx_event.set()

    def kill(
        self,
        *,
        fatal: BaseException | None = None,
        loss: BaseException | None = None,
        timed_out: float | None = None,
    ) -> None:
        """Stop using the worker and SIGKILL its process group; its unanswered items stay
        in :attr:`inflight`. ``fatal``: the pool must fail with this; ``loss``: how it
        died; ``timed_out``: killed for an item past this allowance."""
        self.dead = True
        if fatal is not None:
            self.fatal = fatal
        if loss is not None:
            self.loss = loss
        if timed_out is not None:
            self.timed_out = timed_out
        self.outbox = []
        self.pipe.kill()
        self.scope.cancel()

    def take_flights(self) -> list[Flight]:
        """Remove and return the chunks sent and not fully answered."""
        flights = list(self.inflight)
        self.inflight.clear()
        self.load = 0
        return flights

    def bytes_per_item(self, answered: int) -> float:
        """A sample of the encoded size of an item or result, from the traffic since the
        last sample (0.0: too little yet for the messages' own few dozen bytes not to
        count); ``answered`` items were just answered."""
        stats = self.pipe.stats
        size = 0.0
        received = stats.bytes_received - self.seen_received
        if answered >= _SAMPLE_ITEMS or received >= _SAMPLE_BYTES:
            size = received / max(answered, 1)
            self.seen_received = stats.bytes_received
        items, sent = self.seen_sent
        count, sent = self.items_sent - items, stats.bytes_sent - sent
        if count >= _SAMPLE_ITEMS or (count and sent >= _SAMPLE_BYTES):
            size = max(size, sent / count)
            self.seen_sent = (self.items_sent, stats.bytes_sent)
        return size

    # -- its tasks ------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until the worker dies, is killed, or the pool closes it."""
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop)
                if self.timeout is not None:
                    nursery.start_soon(self._watchdog, self.timeout)
                await self._receive_loop()
                nursery.cancel_scope.cancel()

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
                self.send_parked = True
                try:
                    await self.tx_event.wait()
                finally:
                    self.send_parked = False
                continue
            batch, self.outbox = self.outbox, []
            count, self.outbox_items = self.outbox_items, 0
            try:
                await pipe.send_batch(batch)
                self.items_sent += count
            except (CodecError, ProtocolError) as exc:
                if isinstance(exc, ProtocolError) and exc.kind != ErrorKind.OVERSIZE:
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
            if isinstance(exc, ProtocolError) and exc.kind != ErrorKind.OVERSIZE:
                return False
            error: BaseException = exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, PipekitError):
            return False
        first, _, _ = parse_chunk_request(message)
        for part in self._unsendable(first, error):
            if not await self._send_chunk(part):
                return False
        return True

    def _unsendable(self, first: int, exc: BaseException) -> list[list[Any]]:
        """The chunk with the ids from ``first`` on could not be encoded: split it in two
        (the requests to send instead) or, if it holds one item, that item is not sent
        and its result is the error."""
        inflight = self.inflight
        for i, flight in enumerate(inflight):
            if flight.first != first or flight.done:
                continue
            items = flight.items
            if len(items) > 1:
                if isinstance(exc, ProtocolError):
                    # Larger than a frame: the items are larger than the estimate said.
                    self.host.oversize_chunk(len(items))
                a, b = flight.split()
                inflight[i] = a
                inflight.insert(i + 1, b)
                return [chunk_request(a.first, a.items), chunk_request(b.first, b.items)]
            del inflight[i]
            self.load -= 1
            if i == 0:
                self.head_since = trio.current_time()
            if not inflight:
                self.isolating = False
            if self.closing and not inflight:
                self.tx_event.set()
            self.host.unsendable(self, (flight.run, flight.start, items[0]), exc)
            return []
        return []

    def _took_answers(self, count: int) -> None:
        """``count`` items were answered: the worker may be given items again."""
        self.answered += count
        self.fed = False
        self.warming = False
        if self.inflight:
            self.head_since = trio.current_time()
        else:
            self.isolating = False
        if self.closing and not self.inflight:
            self.tx_event.set()

    async def _receive_loop(self) -> None:
        """Take the worker's answers. While this waits, the pipe's reader hands each batch
        of replies to :meth:`_take` in its own task (``receive_with``), so an answer
        reaches the run waiting for it with no pass through this task: a one-item call
        costs the reader's pass and the caller's."""
        pipe = self.pipe
        take = self._take
        while True:
            try:
                batch = await pipe.receive_with(take)
            except _Stopped:
                return
            except trio.EndOfChannel:
                if not self.dead and (self.inflight or not self.closing):
                    self.host.died(
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
                    self.host.died(self, exc)
                return
            if not self._answers(batch):
                return

    def _take(self, batch: list[Any]) -> int:
        """The ``receive_with`` handler: every reply is taken; raises :class:`_Stopped`
        once the worker is dead or sent a bad answer (the receive loop then ends)."""
        if not self._answers(batch):
            raise _Stopped
        return len(batch)

    def _answers(self, batch: list[Any]) -> bool:
        """Deliver the results in ``batch`` (replies to the oldest chunks) to their runs
        and tell the host. False if the worker is dead or the replies were bad (the
        host is told it died): nothing more is read."""
        if self.dead:
            return False
        inflight = self.inflight
        host = self.host
        done = 0
        timed = 0  # items whose replies said how long they took
        spent = 0.0  # ... and that time
        try:
            for reply in batch:
                first, results, failed, seconds = parse_chunk_reply(reply)
                if seconds is not None:
                    spent += seconds
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
                        results[offset] = host.item_failed(
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
                self._took_answers(done)
                host.answered(self, done, None)
            host.died(self, ProtocolError(f"{self.describe()} sent a bad answer: {exc}"))
            return False
        self._took_answers(done)
        host.answered(self, done, (timed, spent))
        return True

    async def _watchdog(self, limit: float) -> None:
        inflight = self.inflight
        while True:
            if not inflight:
                self.busy_event = trio.Event()
                await self.busy_event.wait()
                continue
            allowance = limit
            if self.answered == 0 and self.has_init:
                allowance += self.init_timeout or 0.0
            deadline = self.head_since + allowance
            if self.load > 1:
                # Finished items may wait up to ANSWER_LAG for the rest of their chunk:
                # the oldest unanswered item may have started that much later.
                deadline += ANSWER_LAG
            if trio.current_time() >= deadline:
                self.host.timed_out(self, allowance)
                return
            await trio.sleep_until(deadline)
