"""Operators: stages that reshape the stream rather than call a function per item.

``take``, ``skip``, ``batch``, ``unbatch``, ``tumbling``, ``window``, ``throttle`` and
``tee``. Each is a module that works on the batches its input delivers (slicing and
regrouping lists, not a Python call per item) and ends, fails and is cancelled like
every module: it ENDs its output when its input ENDs (after emitting what it holds), an
upstream failure reaches it as the exception its ``receive`` raises, and a
cancellation stops it at its next ``await``.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

import trio

from ..kernel import Module, Pipe
from ..kernel.scopes import open_plain_nursery
from ._meter import Meter
from ._settings import StageOptions, StageSettings
from ._stage import Stage

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = [
    "StopsUpstream",
    "batch",
    "skip",
    "take",
    "tee",
    "throttle",
    "tumbling",
    "unbatch",
    "window",
]


class _Operator(Stage):
    """A stage whose module comes from ``factory`` (one fresh module per run)."""

    def __init__(self, label: str, options: StageSettings, factory: Callable[[], Module]) -> None:
        super().__init__(label, options)
        self.factory = factory

    def module(self, *, first: bool = False) -> Module:
        mod = self.factory()
        if not isinstance(mod, _ThrottleModule | _TeeModule):
            # An operator runs no function of the user's: its own work (slicing lists)
            # is not counted as busy time, so that it never looks like a bottleneck
            # next to a stage whose function keeps the event loop busy. A throttle's
            # pacing and a tee's sending count (busy: neither starved nor blocked).
            mod.meter = Meter()  # type: ignore[attr-defined]
        return mod


def _settings(caller: str, options: Any) -> StageSettings:
    return StageSettings.from_options(caller, options, StageOptions)


def _count(what: str, n: Any, least: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{what} must be an int, not {n!r}")
    if n < least:
        raise ValueError(f"{what} must be at least {least}")
    return n


def _seconds(what: str, s: Any) -> float:
    if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {s!r}")
    return float(s)


# --- take and skip ------------------------------------------------------------------


class StopsUpstream:
    """A module that may end the stream early: :class:`~pipekit.Pipeline` sets
    :attr:`stop_upstream` to a function stopping every stage before it in its line."""

    stop_upstream: Callable[[], None] = staticmethod(lambda: None)


class _TakeModule(StopsUpstream):
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, n: int) -> None:
        self.left = n  # across restarts: never more than n in all

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        while self.left > 0:
            try:
                got = await inp.receive_batch(self.left)  # never more than it needs
            except trio.EndOfChannel:
                return  # fewer than n: the stream ended by itself
            self.left -= len(got)
            await out.send_batch(got)
        # Enough: the stages before this one stop now (as if their input had ended),
        # and whatever they still send meets a closed pipe.
        self.stop_upstream()
        await inp.aclose()


def take(n: int, **options: Unpack[StageOptions]) -> Stage:
    """Pass the first ``n`` messages on, then end the stream: the stages before this
    one are stopped (their processes terminated, their outputs ENDed) and the stages
    after it finish with exactly ``n`` messages. ``pipeline.take(n)`` is
    ``pipeline | pk.take(n)``.

    Example::

        import itertools
        pk.source(itertools.count()) | pk.map(str) | pk.take(3)    # -> ['0', '1', '2']
    """
    n = _count("take(n): n", n, 0)
    return _Operator(f"take({n})", _settings("take", options), lambda: _TakeModule(n))


class _SkipModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, n: int) -> None:
        self.left = n

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        async for got in inp.batches():
            if self.left:
                if len(got) <= self.left:
                    self.left -= len(got)
                    continue
                got = got[self.left :]
                self.left = 0
            await out.send_batch(got)


def skip(n: int, **options: Unpack[StageOptions]) -> Stage:
    """Drop the first ``n`` messages, pass the rest on.

    Example::

        pk.source(range(5)) | pk.skip(2)                          # -> [2, 3, 4]
    """
    n = _count("skip(n): n", n, 0)
    return _Operator(f"skip({n})", _settings("skip", options), lambda: _SkipModule(n))


# --- batch, unbatch, tumbling -------------------------------------------------------


class _BatchModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, n: int, timeout: float | None) -> None:
        self.n = n
        self.timeout = timeout

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        if self.timeout is not None:
            await _TimedBatches(self.n, self.timeout, out).run(inp)
            return
        n = self.n
        buf: list[Any] = []
        async for got in inp.batches():
            buf = buf + got if buf else got
            if len(buf) >= n:
                full = len(buf) - len(buf) % n
                await out.send_batch([buf[i : i + n] for i in range(0, full, n)])
                buf = buf[full:]
        if buf:
            await out.send_batch([buf])


class _TimedBatches:
    """``batch(n, timeout=)``: the receiving task sends the full lists; a timer task
    sends a list whose oldest message has waited ``timeout``.

    The timer is lazy: it sleeps until the current list's due time, and when it wakes
    to find that list gone (sent full) it sleeps on until the due time of the list
    then open. So a stream that fills its lists in time costs one timer per
    ``timeout`` seconds, not one per list: a trio timer (a cancel scope) costs several
    scheduler rounds, more than the rest of the operator. The two tasks never send at
    once: what one takes while the other sends is handed to the sender, in order, and
    the receiving task then waits for that send (backpressure)."""

    __slots__ = ("buf", "done", "due", "n", "out", "parked", "pending", "sending", "wait")

    def __init__(self, n: int, wait: float, out: Pipe) -> None:
        self.n = n
        self.wait = wait
        self.out = out
        self.buf: list[Any] = []
        self.due = math.inf  # when buf's oldest message has waited `wait`
        self.parked: trio.Event | None = None  # the timer's, while buf is empty
        self.sending = False
        self.pending: list[list[Any]] = []  # taken while the other task was sending
        self.done: trio.Event | None = None  # set when a send is over

    async def run(self, inp: Pipe) -> None:
        n, wait = self.n, self.wait
        async with open_plain_nursery() as nursery:
            nursery.start_soon(self._timer)
            async for got in inp.batches():
                buf = self.buf
                if not buf:
                    self.due = trio.current_time() + wait
                    if self.parked is not None:
                        self.parked.set()
                        self.parked = None
                    buf = got
                else:
                    buf.extend(got)
                if len(buf) < n:
                    self.buf = buf if buf is not got else got[:]  # ours to extend
                    continue
                full = len(buf) - len(buf) % n
                self.buf = rest = buf[full:]
                # What is left came in the last batch received: it waits from now.
                self.due = trio.current_time() + wait if rest else math.inf
                await self._send([buf[i : i + n] for i in range(0, full, n)], wait=True)
            while self.sending:  # the timer's send: let it finish
                await self._send_over()
            nursery.cancel_scope.cancel()
        if self.buf:
            await self.out.send_batch([self.buf])

    async def _timer(self) -> None:
        while True:
            if not self.buf:
                self.parked = parked = trio.Event()
                await parked.wait()
                continue
            await trio.sleep_until(self.due)
            if self.buf and self.due <= trio.current_time():
                lists, self.buf, self.due = [self.buf], [], math.inf
                await self._send(lists, wait=False)

    async def _send(self, lists: list[list[Any]], *, wait: bool) -> None:
        """Send ``lists``, or hand them to the task sending now (then, if ``wait``,
        wait until it has sent them)."""
        if self.sending:
            self.pending.extend(lists)
            if wait:
                await self._send_over()
            return
        self.sending = True
        try:
            while lists:
                await self.out.send_batch(lists)
                lists, self.pending = self.pending, []
        finally:
            self.sending = False
            if self.done is not None:
                self.done.set()
                self.done = None

    async def _send_over(self) -> None:
        if self.done is None:
            self.done = trio.Event()
        await self.done.wait()


def batch(n: int, *, timeout: float | None = None, **options: Unpack[StageOptions]) -> Stage:
    """Group messages into lists of ``n``, in order; the last list may be shorter.
    With ``timeout``, a list also goes out when its oldest message has waited
    ``timeout`` seconds (so a slow stream still moves). Lists come out unchanged by
    :func:`unbatch`.

    Example::

        pk.source(range(5)) | pk.batch(2)                         # -> [[0, 1], [2, 3], [4]]
    """
    n = _count("batch(n): n", n, 1)
    t = None if timeout is None else _seconds("batch(timeout=)", timeout)
    label = f"batch({n})" if t is None else f"batch({n}, timeout={t:g})"
    return _Operator(label, _settings("batch", options), lambda: _BatchModule(n, t))


class _UnbatchModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        async for got in inp.batches():
            flat = list(itertools.chain.from_iterable(got))
            if flat:
                await out.send_batch(flat)


def unbatch(**options: Unpack[StageOptions]) -> Stage:
    """Send the items of every message (a list, or any iterable) one by one: the
    inverse of :func:`batch`.

    Example::

        pk.source([[1, 2], [], [3]]) | pk.unbatch()                # -> [1, 2, 3]
    """
    return _Operator("unbatch", _settings("unbatch", options), _UnbatchModule)


class _TumblingTimeModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        seconds = self.seconds
        start = trio.current_time()
        boundary = start + seconds  # the end of the current window
        buf: list[Any] = []
        late: list[Any] = []  # taken at or after the boundary: the next window's
        ended = False
        while not ended:
            ended, late = await _gather_until(inp, boundary, buf)
            if buf:
                await out.send_batch([buf])
            buf = late
            now = trio.current_time()
            boundary = start + (math.floor((now - start) / seconds) + 1) * seconds
        if buf:
            await out.send_batch([buf])


async def _gather_until(
    inp: Pipe, deadline: float, into: list[Any], *, stamped: bool = False
) -> tuple[bool, list[Any]]:
    """Receive batches into ``into`` until ``deadline`` (``stamped``: as ``(time taken,
    batch)`` pairs), under one timer for the whole wait: a cancel scope costs about a
    scheduler round, so one per batch would cost more than the operator. Returns
    ``(ended, late)``: whether the input ENDed, and a batch that came at or after
    ``deadline`` (it belongs to the next window)."""
    with trio.move_on_at(deadline):
        try:
            while True:
                got = await inp.receive_batch()
                now = trio.current_time()
                if now >= deadline:
                    return False, got
                if stamped:
                    into.append((now, got))
                else:
                    into.extend(got)
        except trio.EndOfChannel:
            return True, []
    return False, []


def tumbling(
    size: int | None = None, *, seconds: float | None = None, **options: Unpack[StageOptions]
) -> Stage:
    """Non-overlapping windows, as lists: of ``size`` messages each (the last may be
    shorter; the same as ``batch(size)``), or of the messages taken in each
    ``seconds``-long interval since the stage started (empty intervals emit nothing; the
    window open at the end goes out then). Give exactly one of ``size`` and ``seconds``.

    Example::

        pk.source(range(5)) | pk.tumbling(2)                      # -> [[0, 1], [2, 3], [4]]
        pk.source(ticks()) | pk.tumbling(seconds=1.0)             # the items of each second
    """
    if (size is None) == (seconds is None):
        raise TypeError("tumbling() takes exactly one of size and seconds")
    settings = _settings("tumbling", options)
    if size is not None:
        n = _count("tumbling(size)", size, 1)
        return _Operator(f"tumbling({n})", settings, lambda: _BatchModule(n, None))
    s = _seconds("tumbling(seconds=)", seconds)
    return _Operator(f"tumbling(seconds={s:g})", settings, lambda: _TumblingTimeModule(s))


# --- sliding windows ----------------------------------------------------------------


class _SlidingCountModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, size: int, step: int) -> None:
        self.size = size
        self.step = step

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        if self.step == 1:
            await self._every_message(ports["inp"], ports["out"])
            return
        inp, out = ports["inp"], ports["out"]
        size, step = self.size, self.step
        kept: list[Any] = []  # messages from index `offset` on that a window may need
        offset = 0  # stream index of kept[0]
        start = 0  # stream index of the next window's first message
        async for got in inp.batches():
            seq = kept + got if kept else got
            end = offset + len(seq)
            # Window k holds seq[b + k*step + j] for j < size: zip the size columns
            # seq[b + j::step] (it stops at the last full window), all in C.
            b = start - offset
            columns = [seq[b + j :: step] for j in range(size)]
            windows = list(map(list, zip(*columns, strict=False)))
            if windows:
                start += len(windows) * step
            if start < end:
                kept = seq[max(start - offset, 0) :]
                offset = max(start, offset)
            else:
                kept, offset = [], end
            if windows:
                await out.send_batch(windows)

    async def _every_message(self, inp: Pipe, out: Pipe) -> None:
        """``step == 1`` (the usual case), with less to do per batch: a window ends at
        every message from the ``size``-th on, and only the last ``size - 1`` are kept."""
        size = self.size
        tail = size - 1
        kept: list[Any] = []
        async for got in inp.batches():
            seq = kept + got if kept else got
            if len(seq) < size:
                kept = seq  # never changed in place: `kept + got` makes a new list
                continue
            # Window k is seq[k : k + size]: zip the columns seq, seq[1:], ... in C.
            columns = [seq, *(seq[j:] for j in range(1, size))]
            windows = list(map(list, zip(*columns, strict=False)))
            kept = seq[len(seq) - tail :] if tail else []
            await out.send_batch(windows)


class _SlidingTimeModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, seconds: float, every: float) -> None:
        self.seconds = seconds
        self.every = every

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp, out = ports["inp"], ports["out"]
        every = self.every
        start = trio.current_time()
        tick = start + every
        held: deque[tuple[float, list[Any]]] = deque()  # (time taken, batch)
        unseen = False  # messages came since the last window went out
        ended = False
        while not ended:
            fresh: list[tuple[float, list[Any]]] = []
            ended, late = await _gather_until(inp, tick, fresh, stamped=True)
            if fresh:
                held.extend(fresh)
                unseen = True
            if ended:
                break
            window = self._window(held, tick)
            if window:
                await out.send_batch([window])
            unseen = False
            if late:
                held.append((trio.current_time(), late))
                unseen = True
            now = trio.current_time()
            tick = start + (math.floor((now - start) / every) + 1) * every
        if unseen:  # the messages since the last window must not be lost
            window = self._window(held, trio.current_time())
            if window:
                await out.send_batch([window])

    def _window(self, held: deque[tuple[float, list[Any]]], end: float) -> list[Any]:
        """The messages taken in ``[end - seconds, end)``; older ones are forgotten."""
        while held and held[0][0] < end - self.seconds:
            held.popleft()
        return [m for _, got in held for m in got]


def window(
    size: int | None = None,
    step: int = 1,
    *,
    seconds: float | None = None,
    every: float | None = None,
    **options: Unpack[StageOptions],
) -> Stage:
    """Sliding windows, as lists. By count: every ``step`` messages, the last ``size``
    messages (only full windows: a stream shorter than ``size`` gives none). By time:
    every ``every`` seconds (default: ``seconds``), the messages taken in the last
    ``seconds`` (empty windows emit nothing; at the end, one more window if messages came
    since the last). Give exactly one of ``size`` and ``seconds``.

    Example::

        pk.source(range(5)) | pk.window(3)               # -> [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
        pk.source(range(6)) | pk.window(2, step=3)       # -> [[0, 1], [3, 4]]
        pk.source(readings()) | pk.window(seconds=60, every=10)   # last minute, every 10 s
    """
    if (size is None) == (seconds is None):
        raise TypeError("window() takes exactly one of size and seconds")
    settings = _settings("window", options)
    if size is not None:
        if every is not None:
            raise TypeError("window(size) counts messages: every= goes with seconds=")
        n = _count("window(size)", size, 1)
        k = _count("window(step=)", step, 1)
        label = f"window({n})" if k == 1 else f"window({n}, step={k})"
        return _Operator(label, settings, lambda: _SlidingCountModule(n, k))
    if step != 1:
        raise TypeError("window(seconds=) is timed: step= goes with size")
    s = _seconds("window(seconds=)", seconds)
    e = s if every is None else _seconds("window(every=)", every)
    label = f"window(seconds={s:g}, every={e:g})"
    return _Operator(label, settings, lambda: _SlidingTimeModule(s, e))


# --- throttle -----------------------------------------------------------------------


class _ThrottleModule:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        # The generic cell rate algorithm: message k may go at tat + k / rate, and
        # `tolerance` lets up to `burst` go at once after a pause.
        inp, out = ports["inp"], ports["out"]
        rate, interval = self.rate, 1.0 / self.rate
        tolerance = (self.burst - 1) * interval
        tat = -math.inf  # the theoretical time of the next message
        async for got in inp.batches():
            i, n = 0, len(got)
            while i < n:
                now = trio.current_time()
                first = max(tat, now)
                if first > now + tolerance:
                    await trio.sleep_until(first - tolerance)
                    continue
                k = min(n - i, int((now + tolerance - first) * rate + 1e-9) + 1)
                tat = first + k * interval
                await out.send_batch(got[i : i + k] if i or k < n else got)
                i += k


def throttle(rate: float, *, burst: int | None = None, **options: Unpack[StageOptions]) -> Stage:
    """Pass messages on at most ``rate`` per second: over any ``t`` seconds, at most
    ``burst + rate * t`` of them. ``burst`` (default: what ``rate`` allows in 10 ms, at
    least 1) is how many may go at once after a pause. Messages wait in the stage's
    input buffer meanwhile, so a throttle slows everything upstream (backpressure).

    Example::

        pk.source(urls) | pk.throttle(5) | pk.map(fetch)          # 5 requests a second
    """
    r = _seconds("throttle(rate)", rate)  # a positive number
    b = max(1, math.ceil(r * 0.01)) if burst is None else _count("throttle(burst=)", burst, 1)
    settings = _settings("throttle", options)
    return _Operator(f"throttle({r:g}/s)", settings, lambda: _ThrottleModule(r, b))


# --- tee ----------------------------------------------------------------------------


class _TeeModule:
    inputs: tuple[str, ...] = ("inp",)

    def __init__(self, ports: tuple[str, ...]) -> None:
        self.outputs: tuple[str, ...] = ("out", *ports)

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports["inp"]
        live = [ports[p] for p in self.outputs]
        async for got in inp.batches():
            for o in list(live):
                try:
                    await o.send_batch(got)
                except trio.BrokenResourceError:
                    live.remove(o)  # that branch stopped reading (a take): the rest go on
            if not live:
                await inp.aclose()
                return


class _Tee(Stage):
    def __init__(self, branches: list[list[Stage]], options: StageSettings) -> None:
        super().__init__(f"tee({len(branches)})", options)
        self._branches = [(f"branch{i + 1}", b) for i, b in enumerate(branches)]

    def branches(self) -> list[tuple[str, list[Stage]]]:
        return list(self._branches)

    def module(self, *, first: bool = False) -> Module:
        return _TeeModule(tuple(p for p, _ in self._branches))


def tee(
    *branches: Stage | Pipeline | Callable[[Any], Any], **options: Unpack[StageOptions]
) -> Stage:
    """Pass every message on, and send it to each branch too. A branch is a stage or a
    pipeline ending in a sink (``pk.map(fmt) | pk.write_lines(path)``), or a function,
    which becomes ``pk.sink(fn)``. The slowest branch sets the pace (each gets every
    message, in order); a failing branch fails the pipeline; a branch that stops early
    (a ``take``) stops getting messages, and the others go on.

    Example::

        seen = []
        pk.source(range(3)) | pk.tee(seen.append) | pk.map(str)   # -> ['0', '1', '2']
    """
    from ._pipeline import Pipeline  # defined in terms of each other
    from ._sinks import sink

    if not branches:
        raise TypeError("tee() needs at least one branch")
    lines: list[list[Stage]] = []
    for b in branches:
        if isinstance(b, Pipeline):
            lines.append(list(b.stages))
        elif isinstance(b, Stage):
            lines.append([b])
        elif callable(b):
            lines.append([sink(b)])
        else:
            raise TypeError(f"a tee branch is a stage, a pipeline or a function, not {b!r}")
    return _Tee(lines, _settings("tee", options))
