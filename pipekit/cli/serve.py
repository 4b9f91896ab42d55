"""``pipekit serve``: endpoints for remote and browser modules, and the live demo.

Every peer that connects, whether a browser page over WebSocket (the demo page at ``/``
uses the browser client ``/pipekit.js``) or a program over TCP, joins its own pipeline
as a module::

    source(readings) | remote(peer) | sink(meter)

The server streams readings ``{"seq": n, "value": x}`` to the peer, the peer transforms
them and sends them back, and the meter checks their order and reports the throughput.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from typing import Any, TextIO

import trio

from ..adapters import tcp, websocket
from ..adapters.websocket import HttpResource
from ..kernel import FramedPipe, PipekitError
from ..pipeline import remote, sink, source

__all__ = ["PeerReport", "demo_resources", "readings", "serve_demo", "stream_through_peer"]


def demo_resources() -> dict[str, HttpResource]:
    """The demo page's HTTP resources (``/`` and ``/demo.html``, ``/demo.js`` if any)."""
    web = resources.files("pipekit.adapters").joinpath("web")
    page = HttpResource(web.joinpath("demo.html").read_bytes())
    served = {"/": page, "/demo.html": page}
    script = web.joinpath("demo.js")
    if script.is_file():
        served["/demo.js"] = HttpResource(script.read_bytes(), "text/javascript")
    return served


def readings(count: int | None, *, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``count`` readings (endless if None): a slow sine wave with seeded noise."""
    rng = random.Random(seed)
    n = 0
    while count is None or n < count:
        value = round(50 + 40 * math.sin(n / 500) + rng.gauss(0, 5), 3)
        yield {"seq": n, "value": value}
        n += 1


async def _paced(items: Iterator[dict[str, Any]], rate: float) -> AsyncIterator[dict[str, Any]]:
    """``items`` at about ``rate`` per second (in ticks of 1/20 s)."""
    per_tick = max(1, round(rate / 20))
    start = trio.current_time()
    for n, item in enumerate(items, 1):
        yield item
        if n % per_tick == 0:
            await trio.sleep_until(start + n / rate)


@dataclass
class PeerReport:
    """What came back from one peer: counts, order and throughput."""

    peer: str
    received: int = 0
    out_of_order: int = 0
    last: Any = None
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    failure: str | None = None

    def take(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("seq") != self.received:
            self.out_of_order += 1
        self.received += 1
        self.last = message

    @property
    def rate(self) -> float:
        elapsed = (self.finished or time.perf_counter()) - self.started
        return self.received / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        state = "live" if not self.finished else "done" if not self.failure else "ended"
        order = "in order" if not self.out_of_order else f"{self.out_of_order} out of order"
        line = f"{self.peer}: {self.received:,} back ({order}), {self.rate:,.0f} msg/s, {state}"
        return line + (f": {self.failure}" if self.failure else "")


async def stream_through_peer(
    pipe: FramedPipe,
    *,
    count: int | None,
    rate: float | None = None,
    on_message: Callable[[Any], Any] | None = None,
    report: PeerReport | None = None,
) -> PeerReport:
    """Run ``source(readings) | remote(pipe) | sink(...)``: ``count`` readings (endless if
    None, paced at ``rate`` per second if given) go to the peer; what it sends back is
    counted in the returned :class:`PeerReport` and passed to ``on_message``."""
    report = report or PeerReport(pipe.name)

    def take(message: Any) -> None:
        report.take(message)
        if on_message is not None:
            on_message(message)

    items: Any = (
        partial(readings, count) if rate is None else partial(_paced, readings(count), rate)
    )
    try:
        await (source(items) | remote(pipe) | sink(take)).arun()
    finally:
        report.finished = time.perf_counter()
    return report


@dataclass
class _Board:
    """Live reports of every peer, printed every second."""

    out: TextIO
    reports: list[PeerReport] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            await trio.sleep(1)
            for report in self.reports:
                if report.finished is None:
                    print("  " + report.line(), file=self.out, flush=True)


async def serve_demo(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    tcp_port: int | None = None,
    token: str | None = None,
    origins: Sequence[str | None] | None = (websocket.SAME_ORIGIN,),
    idle_timeout: float | None = 30.0,
    count: int | None = None,
    rate: float | None = 2000.0,
    out: TextIO = sys.stdout,
    task_status: trio.TaskStatus[Mapping[str, Any]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the demo until cancelled: the page, the browser client and the WebSocket
    endpoint on ``host``:``port``, and with ``tcp_port`` a pipekit/1 TCP endpoint.
    Each peer gets ``count`` readings (endless if None) at ``rate`` per second (as fast
    as it takes them if None). Only the demo's own pages may connect over WebSocket
    unless ``origins`` says otherwise (None admits every origin), and a peer silent for
    ``idle_timeout`` seconds is dropped. ``task_status`` receives the endpoints'
    addresses."""
    board = _Board(out)

    async def handle(pipe: FramedPipe) -> None:
        report = PeerReport(pipe.name)
        board.reports.append(report)
        print(f"+ {pipe.name} joined", file=out, flush=True)
        try:
            await stream_through_peer(pipe, count=count, rate=rate, report=report)
            print(f"- {report.line()}", file=out, flush=True)
        except (PipekitError, trio.BrokenResourceError) as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            report.failure = f"{type(cause).__name__}: {cause}"
            print(f"- {report.line()}", file=out, flush=True)
        finally:
            board.reports.remove(report)

    async with trio.open_nursery() as nursery:
        ws = await nursery.start(
            partial(
                websocket.serve,
                handle,
                host,
                port,
                token=token,
                origins=origins,
                http=demo_resources(),
                idle_timeout=idle_timeout,
            )
        )
        addresses: dict[str, Any] = {"websocket": ws.url, "http": ws.url.replace("ws", "http", 1)}
        addresses["page"] = addresses["http"].rsplit("/", 1)[0] + "/"
        if tcp_port is not None:
            tcp_listener = await nursery.start(
                partial(tcp.serve, handle, host, tcp_port, token=token, idle_timeout=idle_timeout)
            )
            addresses["tcp"] = tcp_listener.address
        nursery.start_soon(board.run)
        task_status.started(addresses)
