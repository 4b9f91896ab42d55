"""The conformance kit (``pipekit.testing.conformance``) run against every adapter.

One test per (adapter, check), ids like ``thread-order``. Each row is a factory of an
:class:`AdapterUnderTest`: a pair opener and the backpressure bound that adapter
documents (the numbers and their reasons live next to the openers in
``pipekit.testing._pairs``). After every check no child process may be left running
or as a zombie.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psutil
import pytest
import trio

from pipekit.adapters import tcp, unix, websocket
from pipekit.adapters.tcp import Listener
from pipekit.kernel import DEFAULT_CAPACITY, LocalPipe, Pipe, PipeStats, open_pipe_pair
from pipekit.testing import CHECKS, AdapterUnderTest, check_adapter, run_check
from pipekit.testing._pairs import (
    FRAMED_OPTIONS,
    FRAMED_SOCKETPAIR_BOUND,
    INPROC_BOUND,
    STDIO_BOUND,
    THREAD_BOUND,
    open_framed_mock_pair,
    open_framed_socketpair_pair,
    open_inproc_pair,
    open_stdio_relay_pair,
    open_thread_relay_pair,
)

Row = Callable[[], AdapterUnderTest]

ROWS: list[Row] = [
    lambda: AdapterUnderTest("inproc", open_inproc_pair, INPROC_BOUND),
    lambda: AdapterUnderTest(
        "framed-socketpair", open_framed_socketpair_pair, FRAMED_SOCKETPAIR_BOUND
    ),
    lambda: AdapterUnderTest("framed-mock", open_framed_mock_pair, FRAMED_SOCKETPAIR_BOUND),
    lambda: AdapterUnderTest("thread", open_thread_relay_pair, THREAD_BOUND),
    lambda: AdapterUnderTest("stdio", open_stdio_relay_pair, STDIO_BOUND),
]

# --- Socket and WebSocket adapters --------------------------------------------------------
# listen + connect pairs in this process over real sockets: `a` is the connecting side,
# `b` the peer the listener accepted. Small buffers (FRAMED_OPTIONS) keep the bound, and so
# the backpressure checks, small; the bound is that of one pipekit/1 hop.


@asynccontextmanager
async def _accepted(listener: Listener, connecting: Any) -> AsyncIterator[tuple[Pipe, Pipe]]:
    async with connecting as a:
        b = await listener.accept()
        try:
            yield a, b
        finally:
            await trio.aclose_forcefully(b)
            await trio.aclose_forcefully(a)  # at once, like the other rows' pairs


@asynccontextmanager
async def open_unix_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/conformance.sock"
        async with (
            unix.listen(path, **FRAMED_OPTIONS) as listener,
            _accepted(listener, unix.connect(path, **FRAMED_OPTIONS)) as pair,
        ):
            yield pair


@asynccontextmanager
async def open_tcp_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    async with tcp.listen("127.0.0.1", 0, **FRAMED_OPTIONS) as listener:
        host, port = listener.address
        async with _accepted(listener, tcp.connect(host, port, **FRAMED_OPTIONS)) as pair:
            yield pair


@asynccontextmanager
async def open_websocket_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
    async with websocket.listen("127.0.0.1", 0, **FRAMED_OPTIONS) as listener:
        assert listener.url is not None
        connecting = websocket.connect(listener.url, **FRAMED_OPTIONS)
        async with _accepted(listener, connecting) as pair:
            yield pair


SOCKET_ROWS: list[Row] = [
    lambda: AdapterUnderTest("unix", open_unix_pair, FRAMED_SOCKETPAIR_BOUND),
    lambda: AdapterUnderTest("tcp", open_tcp_pair, FRAMED_SOCKETPAIR_BOUND),
    lambda: AdapterUnderTest("websocket", open_websocket_pair, FRAMED_SOCKETPAIR_BOUND),
]

ALL_ROWS = ROWS + SOCKET_ROWS
ADAPTERS = {adapter.name: adapter for adapter in (row() for row in ALL_ROWS)}


def _children() -> dict[int, str]:
    out: dict[int, str] = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            out[child.pid] = str(child.status())
    return out


@pytest.mark.parametrize(
    ("adapter_name", "check"),
    [(name, check) for name in ADAPTERS for check, _ in CHECKS],
    ids=[f"{name}-{check}" for name in ADAPTERS for check, _ in CHECKS],
)
async def test_conformance(adapter_name: str, check: str) -> None:
    before = _children()
    await run_check(ADAPTERS[adapter_name], check)
    left = {pid: status for pid, status in _children().items() if pid not in before}
    assert not left, f"child processes left behind (pid: status): {left}"


# --- The checks catch broken adapters ----------------------------------------------------------
# Each test wraps an in-process pair so that one rule of the contract is broken, and shows
# that the check for that rule fails with a message saying what was observed.


_NOTHING = object()


class Broken(Pipe):
    """An in-process pipe end with one defect switched on."""

    def __init__(self, inner: LocalPipe, defect: str) -> None:
        self.inner = inner
        self.defect = defect
        self.name = inner.name
        self._ended = False
        self._held: list[Any] = []

    async def send(self, value: Any) -> None:
        if self.defect in ("send_never_yields", "cancelled_send_delivers"):
            if self.defect == "send_never_yields":  # a cancel point, but never a yield
                await trio.lowlevel.checkpoint_if_cancelled()
            if self.inner.send_lanes[0].try_put(value):
                if self.defect == "cancelled_send_delivers":
                    await trio.lowlevel.checkpoint()  # Cancelled, after delivering
                return
        if self.defect == "bool_becomes_int" and type(value) is bool:
            value = int(value)
        if self.defect == "send_after_end_ignored" and self._ended:
            return
        if self.defect == "truncates_large" and isinstance(value, bytes) and len(value) > 1 << 20:
            value = value[: 1 << 20]
        if self.defect == "uncancellable_send":
            with trio.CancelScope(shield=True):
                await self.inner.send(value)
            return
        if self.defect == "swaps_messages" and value == 100:
            self._held.append(value)  # sent after the next message
            return
        await self.inner.send(value)
        while self._held:
            await self.inner.send(self._held.pop())

    async def send_batch(self, values: Sequence[Any]) -> None:
        for value in values:
            await self.send(value)

    async def receive(self) -> Any:
        lane = self.inner.receive_lane
        assert lane is not None
        if self.defect == "receive_never_yields":
            await trio.lowlevel.checkpoint_if_cancelled()
        if self.defect in ("receive_never_yields", "cancelled_receive_takes"):
            item = lane.try_get(_NOTHING)  # a message that is there, without a yield
            if item is not _NOTHING:
                return item
        return await self.inner.receive()

    async def receive_batch(self, max_items: int | None = None) -> list[Any]:
        return await self.inner.receive_batch(max_items)

    async def end(self) -> None:
        self._ended = True
        if self.defect != "send_after_end_ignored":
            await self.inner.end()
        else:
            self.inner.end_nowait()

    async def fail(self, exc: BaseException) -> None:
        if self.defect == "failure_becomes_end":
            await self.inner.end()
        else:
            await self.inner.fail(exc)

    async def aclose(self) -> None:
        if self.defect == "close_hangs":
            await trio.sleep_forever()
        if self.defect != "close_keeps_peer_waiting":
            await self.inner.aclose()

    @property
    def stats(self) -> PipeStats:
        stats = self.inner.stats
        if self.defect == "stats_miscount":
            return dataclasses.replace(stats, messages_sent=stats.messages_sent + 1)
        return stats


def broken_adapter(defect: str, *, capacity: int = 64, bound: int = 64) -> AdapterUnderTest:
    @asynccontextmanager
    async def open_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
        a, b = open_pipe_pair(capacity)
        yield Broken(a, defect), Broken(b, defect)

    return AdapterUnderTest(f"broken:{defect}", open_pair, bound, time_limit=3, close_grace=0.2)


@pytest.mark.parametrize(
    ("defect", "check", "message"),
    [
        (
            "swaps_messages",
            "order",
            r"a->b send/receive: message 100 of 10000 differs: sent 100, received \[\]; "
            r"the expected one came at 101",
        ),
        ("bool_becomes_int", "order", r"message 3 of 10000 differs: sent True, received 1$"),
        ("send_after_end_ignored", "end", r"send\(\) after end\(\): expected .*returned None"),
        ("failure_becomes_end", "error", r"the failure was lost"),
        (
            "truncates_large",
            "large",
            r"message 0 of 2 differs: .* "
            r"\(lengths 4194304 and 1048576, one a prefix of the other\)",
        ),
        (
            "close_keeps_peer_waiting",
            "close_unblocks_receiver",
            r"a closes, b was receiving: receive\(\) still blocked 0.2 s after the close",
        ),
        (
            "close_hangs",
            "concurrent_close",
            r"a.aclose\(\) did not return within 0.2 s; b.aclose\(\) did not return within 0.2 s; "
            r"still blocked 0.2 s after both ends closed: "
            r"receiver a, receiver b, sender a, sender b",
        ),
        (
            "uncancellable_send",
            "cancellation",
            r"a->b: a cancelled send\(\) did not return within 0.2 s",
        ),
        (
            "cancelled_send_delivers",
            "cancel_points",
            r"a->b: after calls in cancelled scopes: message 0 of 4 differs: sent 'a->b 0', "
            r"received 'cancelled send'",
        ),
        (
            "cancelled_receive_takes",
            "cancel_points",
            r"a->b: receive\(\) in a cancelled scope returned 'a->b 1'",
        ),
        (
            "stats_miscount",
            "stats",
            r"a.stats: messages_sent=301, messages_received=170, queue_depth=0; "
            r"expected 300, 170, 0",
        ),
    ],
)
async def test_check_fails_an_adapter_that_breaks_its_rule(
    defect: str, check: str, message: str
) -> None:
    with pytest.raises(AssertionError) as info:
        await run_check(broken_adapter(defect), check)
    text = str(info.value)
    assert text.startswith(f"adapter 'broken:{defect}', check '{check}': "), text
    assert re.search(message, text), text


@pytest.mark.parametrize(
    ("defect", "message"),
    [
        (
            "send_never_yields",
            r"a->b: a loop of send\(\): 512 calls completed without a schedule point; "
            r"the contract allows at most 64 \(YIELD_EVERY\)",
        ),
        (
            "receive_never_yields",
            r"a->b: a loop of receive\(\): 512 calls completed without a schedule point",
        ),
    ],
)
async def test_fairness_fails_an_adapter_whose_busy_loop_never_yields(
    defect: str, message: str
) -> None:
    # A lane large enough that nothing blocks: blocking would yield.
    adapter = broken_adapter(defect, capacity=DEFAULT_CAPACITY, bound=DEFAULT_CAPACITY)
    with pytest.raises(AssertionError, match=message):
        await run_check(adapter, "fairness")


async def test_backpressure_fails_an_adapter_that_buffers_past_its_bound() -> None:
    adapter = broken_adapter("none", capacity=100_000, bound=500)
    with pytest.raises(
        AssertionError,
        match=r"a->b: send\(\) accepted 564 messages while the peer received none; "
        r"the bound is 500 \(and it never blocked\)",
    ):
        await run_check(adapter, "backpressure")


async def test_a_hang_is_reported_as_a_failure_of_the_check() -> None:
    @asynccontextmanager
    async def open_pair() -> AsyncIterator[tuple[Pipe, Pipe]]:
        a, _ = open_pipe_pair()
        _, b = open_pipe_pair()  # what a sends never reaches b
        yield a, b

    adapter = AdapterUnderTest("disconnected", open_pair, 64, time_limit=0.5)
    with pytest.raises(
        AssertionError, match=r"'disconnected', check 'end': did not finish within 0.5 s"
    ):
        await run_check(adapter, "end")


async def test_check_adapter_lists_every_failing_check() -> None:
    adapter = broken_adapter("stats_miscount")
    with pytest.raises(AssertionError) as info:
        await check_adapter(adapter.open_pair, bound=64, name="miscount", close_grace=0.2)
    text = str(info.value)
    assert text.startswith(f"adapter 'miscount' failed 1 of {len(CHECKS)} checks:\n- ")
    assert "check 'stats': a.stats: messages_sent=301" in text


async def test_check_adapter_passes_a_conforming_adapter() -> None:
    await check_adapter(open_inproc_pair, bound=INPROC_BOUND, name="inproc")
