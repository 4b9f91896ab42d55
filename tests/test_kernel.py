"""The kernel: ``open_kernel``, wiring, end/error propagation, supervision, topology."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.kernel import (
    FramedPipe,
    Kernel,
    ModuleError,
    ModuleState,
    Pipe,
    RestartPolicy,
    Topology,
    WiringError,
    as_module,
    open_kernel,
)

HANG_GUARD = 5  # seconds; a guard against hangs, never used to synchronise

FramedPair = tuple[FramedPipe, FramedPipe]
OpenFramedPair = Callable[..., AbstractAsyncContextManager[FramedPair]]
SocketPairFactory = Callable[[], tuple[trio.SocketStream, trio.SocketStream]]


def numbers(n: int, start: int = 0) -> Callable[[Pipe], Any]:
    """A source module that sends ``start .. start+n-1`` and returns."""

    async def source(out: Pipe) -> None:
        for i in range(start, start + n):
            await out.send(i)

    return source


class Collector:
    """A sink module that records every message and how often it saw END."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.ends = 0
        self.error: BaseException | None = None

    async def __call__(self, inp: Pipe) -> None:
        while True:
            try:
                self.messages.append(await inp.receive())
            except trio.EndOfChannel:
                self.ends += 1
                return
            except BaseException as exc:
                self.error = exc
                raise


class Blocked:
    """A module body that blocks forever and records that it was cancelled."""

    def __init__(self) -> None:
        self.started = False
        self.cancelled = False

    async def wait(self) -> None:
        self.started = True
        try:
            await trio.Event().wait()
        except trio.Cancelled:
            self.cancelled = True
            raise


async def blocked_source(out: Pipe) -> None:
    await trio.sleep_forever()


# -- data flow -------------------------------------------------------------------------


async def test_connected_modules_deliver_every_message_in_order() -> None:
    sink = Collector()
    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(numbers(1000), name="src")
            dbl = k.add(lambda x: 2 * x, name="double")
            snk = k.add(sink, name="sink")
            k.connect(src, dbl)
            k.connect(dbl, snk)
    assert sink.messages == [2 * i for i in range(1000)]
    assert sink.ends == 1


async def test_module_stats_count_messages_in_and_out() -> None:
    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            src = k.add(numbers(300), name="src")
            dbl = k.add(lambda x: x, name="same")
            k.connect(src, dbl)
            k.connect(dbl, k.add(Collector(), name="sink"))
    stats = k.stats()
    assert stats["src"].messages_out == 300
    assert stats["same"].messages_in == 300
    assert stats["same"].messages_out == 300
    assert stats["sink"].messages_in == 300
    assert {s.state for s in stats.values()} == {"done"}


async def test_join_returns_once_every_module_has_finished() -> None:
    sink = Collector()
    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            k.connect(k.add(numbers(10), name="src"), k.add(sink))
            await k.join()
            assert sink.messages == list(range(10))
            assert sink.ends == 1


async def test_source_facing_a_sink_that_never_reads_blocks_at_capacity() -> None:
    sent = 0
    stalled: list[Pipe] = []

    async def source(out: Pipe) -> None:
        nonlocal sent
        for i in range(10_000):
            await out.send(i)
            sent += 1

    async def never_reads(inp: Pipe) -> None:
        stalled.append(inp)
        await trio.sleep_forever()

    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=100) as k:
            k.connect(k.add(source), k.add(never_reads))
            await k.start()
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 100
            assert stalled[0].stats.queue_depth == 100
            k.stop()


async def test_chain_facing_a_stalled_sink_buffers_no_more_than_its_capacities() -> None:
    sent = 0
    stalled: list[Pipe] = []

    async def source(out: Pipe) -> None:
        nonlocal sent
        for i in range(10_000):
            await out.send(i)
            sent += 1

    async def never_reads(inp: Pipe) -> None:
        stalled.append(inp)
        await trio.sleep_forever()

    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=100) as k:
            src, mid, snk = k.add(source), k.add(lambda x: x, name="mid"), k.add(never_reads)
            k.connect(src, mid)
            k.connect(mid, snk)
            await k.start()
            await trio.testing.wait_all_tasks_blocked()
            # Two input buffers of 100, plus at most one batch of 100 held by the map.
            assert 200 <= sent <= 300
            assert stalled[0].stats.queue_depth == 100
            k.stop()


async def test_merge_ends_only_after_every_input_has_ended() -> None:
    gate = trio.Event()
    sink = Collector()

    def tagged(tag: str, n: int) -> Callable[[Pipe], Any]:
        async def source(out: Pipe) -> None:
            for i in range(n):
                await out.send((tag, i))

        return source

    async def late(out: Pipe) -> None:
        for i in range(50):
            await out.send(("c", i))
        await gate.wait()
        for i in range(50, 100):
            await out.send(("c", i))

    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=16) as k:
            a = k.add(tagged("a", 100), name="a")
            b = k.add(tagged("b", 100), name="b")
            c = k.add(late, name="c")
            snk = k.add(sink, name="sink")
            k.merge([a, b, c], snk)
            await k.start()
            await trio.testing.wait_all_tasks_blocked()
            assert len(sink.messages) == 250
            assert sink.ends == 0
            gate.set()
    assert sink.ends == 1
    assert len(sink.messages) == 300
    for tag in "abc":
        assert [i for t, i in sink.messages if t == tag] == list(range(100))


async def test_split_delivers_every_message_to_every_output_in_order() -> None:
    sinks = [Collector() for _ in range(3)]
    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=16) as k:
            src = k.add(numbers(1000), name="src")
            targets = [k.add(s, name=f"sink{i}") for i, s in enumerate(sinks)]
            k.split(src, targets)
    for s in sinks:
        assert s.messages == list(range(1000))
        assert s.ends == 1


async def test_module_whose_downstream_stopped_reading_ends_normally() -> None:
    taken: list[int] = []

    async def endless(out: Pipe) -> None:
        i = 0
        while True:
            await out.send(i)
            i += 1

    async def take_five(inp: Pipe) -> None:
        for _ in range(5):
            taken.append(await inp.receive())

    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=8) as k:
            k.connect(k.add(endless), k.add(take_five))
    assert taken == [0, 1, 2, 3, 4]
    assert k.stats()["endless"].state == "done"
    assert k.stats()["take_five"].state == "done"


# -- errors ------------------------------------------------------------------------------


async def test_module_exception_surfaces_as_module_error_naming_the_module() -> None:
    original = ValueError("boom")

    async def explode(out: Pipe) -> None:
        raise original

    with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            k.connect(k.add(explode, name="exploder"), k.add(Collector(), name="sink"))
    assert info.value.module == "exploder"
    assert info.value.__cause__ is original
    assert "exploder" in str(info.value)
    assert k.stats()["exploder"].state == "failed"
    assert k.module_stats("exploder").state is ModuleState.FAILED
    assert k.failure is info.value
    with pytest.raises(WiringError, match="has exited"):
        k.add(Collector())


async def test_module_failure_cancels_the_other_modules() -> None:
    blocked = Blocked()

    async def explode(out: Pipe) -> None:
        await trio.testing.wait_all_tasks_blocked()
        raise RuntimeError("fatal")

    async def bystander(inp: Pipe) -> None:
        await blocked.wait()

    with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            k.connect(k.add(explode), k.add(bystander))
    assert info.value.module == "explode"
    assert blocked.started
    assert blocked.cancelled
    assert k.stats()["bystander"].state == "cancelled"


async def test_failing_upstream_fails_its_downstreams_receive_with_the_module_error() -> None:
    original = ValueError("upstream broke")
    sink = Collector()

    async def upstream(out: Pipe) -> None:
        await out.send("before")
        await trio.testing.wait_all_tasks_blocked()  # the sink is now waiting in receive
        raise original

    with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            k.connect(k.add(upstream), k.add(sink, name="sink"))
    assert sink.messages == ["before"]
    assert isinstance(sink.error, ModuleError)
    assert sink.error is info.value
    assert sink.error.module == "upstream"
    assert sink.error.__cause__ is original


async def test_body_exception_cancels_modules_and_propagates_unwrapped() -> None:
    blocked = Blocked()

    async def sink(inp: Pipe) -> None:
        await blocked.wait()

    cause = KeyError("inner")
    with trio.fail_after(HANG_GUARD), pytest.raises(RuntimeError) as info:
        async with open_kernel() as k:
            k.connect(k.add(blocked_source), k.add(sink))
            await k.start()
            await trio.testing.wait_all_tasks_blocked()
            raise RuntimeError("body failed") from cause
    assert type(info.value) is RuntimeError
    assert str(info.value) == "body failed"
    assert info.value.__cause__ is cause
    assert blocked.cancelled


async def test_stop_cancels_every_module_and_exits_without_error() -> None:
    blocked = Blocked()

    async def sink(inp: Pipe) -> None:
        await blocked.wait()

    with trio.fail_after(HANG_GUARD):
        async with open_kernel() as k:
            k.connect(k.add(blocked_source, name="src"), k.add(sink, name="sink"))
            await k.start()
            await trio.testing.wait_all_tasks_blocked()
            k.stop()
    assert blocked.cancelled
    assert k.stats()["sink"].state == "cancelled"
    assert k.stats()["src"].state == "cancelled"


async def test_stop_called_by_a_module_exits_without_error() -> None:
    got: list[int] = []

    async def endless(out: Pipe) -> None:
        i = 0
        while True:
            await out.send(i)
            i += 1

    with trio.fail_after(HANG_GUARD):
        async with open_kernel(capacity=4) as k:

            async def stopper(inp: Pipe) -> None:
                for _ in range(10):
                    got.append(await inp.receive())
                k.stop()
                await trio.sleep_forever()

            k.connect(k.add(endless), k.add(stopper))
    assert got == list(range(10))


# -- supervision ---------------------------------------------------------------------------


def crashes_on_thousands(msg: int) -> int:
    if msg % 1000 == 0:
        raise ValueError(f"cannot handle {msg}")
    return msg


async def crashing_stage(inp: Pipe, out: Pipe) -> None:
    async for msg in inp:
        await out.send(crashes_on_thousands(msg))


@pytest.mark.parametrize(
    "stage", [crashing_stage, crashes_on_thousands], ids=["async-stage", "map"]
)
async def test_on_failure_restarts_lose_only_the_crashing_messages(
    stage: Callable[..., Any], autojump_clock: trio.testing.MockClock
) -> None:
    sink = Collector()
    # capacity 100: a map's batch never holds two multiples of 1000.
    async with open_kernel(capacity=100) as k:
        src = k.add(numbers(10_000, start=1), name="src")
        mid = k.add(stage, name="stage", restart="on-failure", max_restarts=10)
        snk = k.add(sink, name="sink")
        k.connect(src, mid)
        k.connect(mid, snk)
        edges_before = k.topology().edges
    assert sink.messages == [m for m in range(1, 10_001) if m % 1000 != 0]
    assert len(sink.messages) == 9_990
    assert sink.ends == 1
    stats = k.stats()["stage"]
    assert stats.restarts == 10
    assert len(stats.failures) == 10
    assert stats.state == "done"
    assert stats.messages_out == 9_990
    assert stats.messages_in == 10_000
    assert k.topology().edges == edges_before
    assert len(edges_before) == 2


async def test_restarted_module_gets_fresh_ports_and_its_old_ones_are_detached(
    autojump_clock: trio.testing.MockClock,
) -> None:
    incarnations: list[tuple[Pipe, Pipe]] = []
    sink = Collector()

    async def stage(inp: Pipe, out: Pipe) -> None:
        incarnations.append((inp, out))
        async for msg in inp:
            if msg == 2 and len(incarnations) == 1:
                raise RuntimeError("first incarnation dies")
            await out.send(msg)

    async with open_kernel() as k:
        mid = k.add(stage, name="stage", restart="on-failure")
        k.connect(k.add(numbers(5), name="src"), mid)
        k.connect(mid, k.add(sink, name="sink"))
        await k.join()
        (old_inp, old_out), (new_inp, new_out) = incarnations
        assert old_out is not new_out and old_inp is not new_inp
        with pytest.raises(trio.ClosedResourceError):
            await old_out.send("stale")
        with pytest.raises(trio.ClosedResourceError):
            await old_inp.receive()
    assert sink.messages == [0, 1, 3, 4]
    assert sink.ends == 1


async def test_restart_always_restarts_a_returning_source_up_to_the_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0
    sink = Collector()

    async def source(out: Pipe) -> None:
        nonlocal runs
        runs += 1
        await out.send(runs)

    with pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            src = k.add(source, name="src", restart="always", max_restarts=3)
            k.connect(src, k.add(sink, name="sink"))
    assert runs == 4
    assert info.value.module == "src"
    assert "restart limit" in str(info.value)
    assert sink.messages == [1, 2, 3, 4]
    assert k.stats()["src"].restarts == 3


async def test_restart_on_failure_does_not_restart_a_module_that_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0

    async def source(out: Pipe) -> None:
        nonlocal runs
        runs += 1
        await out.send(runs)

    async with open_kernel() as k:
        src = k.add(source, name="src", restart="on-failure", max_restarts=3)
        k.connect(src, k.add(Collector(), name="sink"))
    assert runs == 1
    assert k.stats()["src"].restarts == 0


async def test_restart_always_does_not_restart_a_stage_whose_input_has_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs = 0
    sink = Collector()

    async def stage(inp: Pipe, out: Pipe) -> None:
        nonlocal runs
        runs += 1
        async for msg in inp:
            await out.send(msg)

    async with open_kernel() as k:
        mid = k.add(stage, name="stage", restart="always", max_restarts=3)
        k.connect(k.add(numbers(10), name="src"), mid)
        k.connect(mid, k.add(sink, name="sink"))
    assert runs == 1
    assert sink.messages == list(range(10))
    assert k.stats()["stage"].restarts == 0


async def test_restarted_merge_input_ends_the_merge_exactly_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = Collector()
    crashed = False

    async def crashes_once(out: Pipe) -> None:
        nonlocal crashed
        for i in range(100, 110):
            await out.send(i)
        if not crashed:
            crashed = True
            raise RuntimeError("once")

    async with open_kernel(capacity=4) as k:
        a = k.add(numbers(10), name="a")
        b = k.add(crashes_once, name="b", restart="on-failure")
        snk = k.add(sink, name="sink")
        k.merge([a, b], snk)
    assert sink.ends == 1
    assert sorted(sink.messages) == sorted([*range(10), *range(100, 110), *range(100, 110)])
    assert k.stats()["b"].restarts == 1
    assert [(e["from"], e["to"], e["kind"]) for e in k.topology().edges] == [
        ("a", "sink", "merge"),
        ("b", "sink", "merge"),
    ]


async def test_restart_backoff_grows_exponentially_up_to_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []

    async def flaky(out: Pipe) -> None:
        starts.append(trio.current_time())
        raise RuntimeError("again")

    policy = RestartPolicy(
        "on-failure", max_restarts=6, backoff=1.0, backoff_factor=2.0, backoff_max=5.0
    )
    with pytest.raises(ModuleError) as info:
        async with open_kernel() as k:
            k.connect(k.add(flaky, restart=policy), k.add(Collector(), name="sink"))
    delays = [b - a for a, b in itertools.pairwise(starts)]
    assert delays == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0, 5.0])
    assert "restart limit" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_restart_policy_delay_is_capped() -> None:
    policy = RestartPolicy("on-failure", backoff=0.5, backoff_factor=3.0, backoff_max=4.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.0, 4.0]
    with pytest.raises(ValueError):
        RestartPolicy("sometimes")  # type: ignore[arg-type]


# -- wiring ------------------------------------------------------------------------------------


async def test_unconnected_port_is_a_wiring_error() -> None:
    with pytest.raises(WiringError, match=r"output src\.out is not connected"):
        async with open_kernel() as k:
            k.add(numbers(3), name="src")


async def test_connecting_an_unknown_module_is_a_wiring_error() -> None:
    async with open_kernel() as k:
        with pytest.raises(WiringError, match="no module named 'ghost'"):
            k.connect("ghost", "phantom")


async def test_connecting_the_same_ports_twice_is_a_wiring_error() -> None:
    async with open_kernel() as k:
        src = k.add(numbers(3), name="src")
        snk = k.add(Collector(), name="sink")
        k.connect(src, snk)
        with pytest.raises(WiringError, match="already connected"):
            k.connect(src, snk)


async def test_module_with_several_ports_must_be_named_by_port() -> None:
    left, right = Collector(), Collector()

    async def two_outputs(out_left: Pipe, out_right: Pipe) -> None:
        await out_left.send("L")
        await out_right.send("R")

    async with open_kernel() as k:
        two = k.add(two_outputs)
        lsink = k.add(left, name="left")
        rsink = k.add(right, name="right")
        with pytest.raises(WiringError, match="2 output ports"):
            k.connect(two, lsink)
        with pytest.raises(WiringError, match="no port"):
            two["out_middle"]
        k.connect(two["out_left"], lsink)
        k.connect(two["out_right"], rsink)
    assert (left.messages, right.messages) == (["L"], ["R"])


async def test_connecting_an_input_as_a_source_is_a_wiring_error() -> None:
    async with open_kernel() as k:
        src = k.add(numbers(1), name="src")
        snk = k.add(Collector(), name="sink")
        with pytest.raises(WiringError, match="not an output port"):
            k.connect(snk["inp"], src)
        k.connect(src, snk)


async def test_duplicate_module_name_is_a_wiring_error() -> None:
    async with open_kernel() as k:
        k.add(lambda x: x, name="f")
        with pytest.raises(WiringError, match="already exists"):
            k.add(lambda x: x, name="f")
        k.stop()


async def test_rewiring_a_started_module_is_a_wiring_error() -> None:
    async with open_kernel() as k:
        src = k.add(blocked_source, name="src")
        k.connect(src, k.add(Collector(), name="sink"))
        await k.start()
        late = k.add(Collector(), name="late")
        with pytest.raises(WiringError, match="has started"):
            k.connect(src, late)
        k.stop()


def test_as_module_rejects_parameters_that_are_not_ports() -> None:
    async def ambiguous(inp: Pipe, config: int) -> None:
        pass

    with pytest.raises(TypeError, match="config"):
        as_module(ambiguous)


# -- topology -------------------------------------------------------------------------------------


async def build_topology_kernel(k: Kernel) -> None:
    src = k.add(numbers(5), name="src")
    dbl = k.add(lambda x: 2 * x, name="double", restart="on-failure")
    snk = k.add(Collector(), name="sink")
    k.connect(src, dbl)
    k.connect(dbl, snk)
    await trio.lowlevel.checkpoint()


async def test_topology_json_lists_modules_and_edges() -> None:
    async with open_kernel() as k:
        await build_topology_kernel(k)
        data = json.loads(k.topology().to_json())
    assert [m["name"] for m in data["modules"]] == ["src", "double", "sink"]
    assert data["modules"][1]["restart"] == "on-failure"
    assert [(e["from"], e["from_port"], e["to"], e["to_port"]) for e in data["edges"]] == [
        ("src", "out", "double", "inp"),
        ("double", "out", "sink", "inp"),
    ]


async def test_topology_dot_has_a_node_per_module_and_an_arrow_per_edge() -> None:
    async with open_kernel() as k:
        await build_topology_kernel(k)
        dot = k.topology().to_dot()
    assert dot.startswith("digraph")
    for name in ("src", "double", "sink"):
        assert f'"{name}" [label=' in dot
    assert '"src" -> "double" [label="out->inp"];' in dot
    assert '"double" -> "sink" [label="out->inp"];' in dot


async def test_topology_mermaid_has_a_node_per_module_and_an_arrow_per_edge() -> None:
    async with open_kernel() as k:
        await build_topology_kernel(k)
        mermaid = k.topology().to_mermaid()
    assert mermaid.startswith("flowchart LR")
    assert 'm0["src"]' in mermaid and 'm1["double"]' in mermaid and 'm2["sink"]' in mermaid
    assert "m0 -->|out->inp| m1" in mermaid
    assert "m1 -->|out->inp| m2" in mermaid


# -- resources -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["normal", "cancelled", "failed"])
async def test_kernel_leaves_no_task_thread_or_file_descriptor_behind(
    ending: str,
    no_leaks: Callable[[], AbstractContextManager[None]],
    framed_pair: OpenFramedPair,
    socket_pair_factory: SocketPairFactory,
) -> None:
    """Modules exchange messages through a framed pipe over a real socketpair; the kernel
    then ends normally, is cancelled from outside, or fails because a module raised."""
    blocked = Blocked()
    received: list[int] = []
    half_way = trio.Event()

    with no_leaks(), trio.fail_after(HANG_GUARD):
        s1, s2 = socket_pair_factory()
        async with trio.open_nursery() as outer:
            with trio.CancelScope() as scope:

                async def cancel_half_way() -> None:
                    await half_way.wait()
                    scope.cancel()

                if ending == "cancelled":
                    outer.start_soon(cancel_half_way)

                async def run() -> None:
                    async with open_kernel() as k, framed_pair(s1, s2) as (wire_in, wire_out):

                        async def to_wire(inp: Pipe) -> None:
                            async for msg in inp:
                                if ending == "failed" and msg == 500:
                                    raise RuntimeError("wire module failed")
                                await wire_in.send(msg)
                            await wire_in.end()

                        async def from_wire(out: Pipe) -> None:
                            async for msg in wire_out:
                                await out.send(msg)

                        async def collect(inp: Pipe) -> None:
                            async for msg in inp:
                                received.append(msg)
                                if len(received) == 300:
                                    half_way.set()
                                    if ending == "cancelled":
                                        await blocked.wait()

                        k.connect(k.add(numbers(1000)), k.add(to_wire))
                        k.connect(k.add(from_wire), k.add(collect))
                        await k.join()

                if ending == "failed":
                    with pytest.raises(ModuleError, match="wire module failed"):
                        await run()
                else:
                    await run()

            outer.cancel_scope.cancel()
    if ending == "normal":
        assert received == list(range(1000))
    elif ending == "cancelled":
        assert scope.cancelled_caught
        assert blocked.cancelled
        assert received == list(range(300))
    else:
        assert received == list(range(len(received)))
        assert len(received) <= 500


async def test_a_module_that_ends_its_own_output_does_not_end_a_merge_early() -> None:
    got: list[object] = []
    quick_done = trio.Event()

    async def quick(out: Pipe) -> None:
        await out.send("quick")
        await out.end()  # ended here, and again by the kernel when it returns
        quick_done.set()

    async def slow(out: Pipe) -> None:
        await quick_done.wait()
        for i in range(5):
            await out.send(i)

    async def consume(inp: Pipe) -> None:
        async for x in inp:
            got.append(x)

    with trio.fail_after(10):
        async with open_kernel() as k:
            k.merge([k.add(quick), k.add(slow)], k.add(consume))
    assert got == ["quick", 0, 1, 2, 3, 4]


def test_dot_export_breaks_the_label_line_before_the_restart_policy() -> None:
    topo = Topology(
        modules=[
            {"name": 'say "hi"', "restart": "on-failure", "inputs": [], "outputs": ["out"]},
            {"name": "b", "restart": "never", "inputs": ["inp"], "outputs": []},
        ],
        edges=[
            {"from": 'say "hi"', "from_port": "out", "to": "b", "to_port": "inp", "kind": "connect"}
        ],
    )
    dot = topo.to_dot()
    assert '"say \\"hi\\"" [label="say \\"hi\\"\\n(on-failure)"];' in dot
    assert "\\\\n" not in dot
    assert '"b" [label="b"];' in dot


async def test_adding_a_module_after_the_kernel_exited_is_refused() -> None:
    async with open_kernel() as k:
        pass
    with pytest.raises(WiringError, match="has exited"):
        k.add(lambda x: x)
