"""Actors in pipelines (issue 15): a process as a stage (``pk.actor``, ``ActorModule``),
and a stage that sends to processes (``pk.to_actor``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from sched_helpers import all_tasks

import pipekit as pk
from pipekit import actors
from pipekit.actors import (
    STAGE_NODE,
    ActorModule,
    NodeStats,
    NoSuchProcess,
    NotInActor,
    NotInStage,
    Pid,
    open_node,
    process,
    registry,
    select,
)

NOTHING = NodeStats(processes=0, names=0, links=0, monitors=0)


async def doubler() -> None:
    async for x in process.listen("in"):
        await process.emit(x * 2)


async def echo_forever() -> None:
    async for x in process.listen("in"):
        await process.emit(x)


# -- an actor as a stage ----------------------------------------------------------------


def test_an_actor_stage_keeps_order_and_count() -> None:
    out = (pk.source(range(5000)) | pk.actor(doubler) | pk.collect()).run()
    assert out == [x * 2 for x in range(5000)]


def test_the_input_topic_ends_when_the_input_does() -> None:
    async def count_then_report() -> None:
        n = 0
        async for _ in process.listen("in"):
            n += 1
        await process.emit(f"{n} messages, then the end")

    assert (pk.source(range(7)) | pk.actor(count_then_report)).run() == ["7 messages, then the end"]


async def test_an_input_that_ends_before_the_actor_listens_still_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def late_listener() -> None:
        await trio.sleep(1)  # the input (empty) has ended long before
        got = [x async for x in process.listen("in")]
        await process.emit(got)

    assert await (pk.source([]) | pk.actor(late_listener)).arun() == [[]]


async def test_select_sees_the_end_of_the_input(autojump_clock: trio.testing.MockClock) -> None:
    async def items() -> AsyncIterator[int]:
        for i in range(2):
            await trio.sleep(1)  # the actor waits in select when the input ends
            yield i

    async def selecting() -> None:
        inp, control = process.listen("in"), process.listen("control")
        while True:
            got = await select([inp.case_receive(), control.case_receive()])
            if not got.ok:
                await process.emit("ended")
                return
            await process.emit(got.value)

    assert await (pk.source(items) | pk.actor(selecting)).arun() == [0, 1, "ended"]


def test_the_stage_actor_gets_its_arguments_and_may_listen_in_message_mode() -> None:
    async def tagger(tag: str) -> None:
        async for msg in process.listen("items", message=True):
            await process.emit((tag, msg.topic, msg.payload, msg.sender))

    out = (pk.source([1, 2]) | pk.actor(tagger, "t", topic="items")).run()
    assert out == [("t", "items", 1, None), ("t", "items", 2, None)]


@pytest.mark.parametrize("inside_a_node", [False, True])
async def test_a_slow_actor_holds_its_upstream_back_by_a_bound(
    autojump_clock: trio.testing.MockClock, inside_a_node: bool
) -> None:
    mailbox, buffer = 3, 4
    pulled = 0
    ahead: list[int] = []

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            yield i

    async def slow() -> None:
        received = 0
        async for x in process.listen("in"):
            received += 1
            ahead.append(pulled - received)
            await trio.sleep(1)
            await process.emit(x)

    p = pk.source(items, batch=1) | pk.actor(slow, mailbox_size=mailbox, buffer=buffer)
    if inside_a_node:  # the node's mailboxes hold 1024: the stage's own bound applies
        async with open_node("app") as node:
            assert await node.run(p.arun) == list(range(40))
    else:
        assert await p.arun() == list(range(40))
    # Beyond what the actor took: its mailbox, the stage's buffer, the source's item in
    # hand; nothing is lost, nothing more is pulled.
    assert max(ahead) <= mailbox + buffer + 1
    assert max(ahead) >= mailbox  # the mailbox did fill: the bound is what held it


async def test_emit_waits_while_the_next_stage_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    emitted = 0
    ahead: list[int] = []

    async def burst() -> None:
        nonlocal emitted
        async for n in process.listen("in"):
            for i in range(n):
                await process.emit(i)
                emitted += 1

    async def slow_sink(x: int) -> None:
        ahead.append(emitted - len(ahead))
        await trio.sleep(1)

    await (pk.source([30]) | pk.actor(burst) | pk.sink(slow_sink, buffer=2)).arun()
    assert len(ahead) == 30
    assert 2 <= max(ahead) <= 2 + 1  # the sink's buffer, and the one it holds


def test_an_actor_stage_failure_is_a_module_error_naming_it() -> None:
    async def fails_on_three() -> None:
        async for x in process.listen("in"):
            if x == 3:
                raise ValueError("three")
            await process.emit(x)

    with pytest.raises(pk.ModuleError) as info:
        (pk.source(range(10)) | pk.actor(fails_on_three, name="picky") | pk.collect()).run()
    assert info.value.module == "picky"
    assert isinstance(info.value.__cause__, ValueError)


def test_a_restarted_actor_stage_gets_the_input_its_predecessor_had_not_received() -> None:
    runs = 0

    async def fails_once_on_three() -> None:
        nonlocal runs
        runs += 1
        async for x in process.listen("in"):
            if x == 3 and runs == 1:
                raise ValueError("once")
            await process.emit(x)

    stage = pk.actor(fails_once_on_three, restart="on-failure", max_restarts=1)
    # Only the message it failed on is lost (the first run held the rest in its mailbox).
    assert (pk.source(range(8)) | stage).run() == [0, 1, 2, 4, 5, 6, 7]
    assert runs == 2


def test_an_actor_that_returns_early_ends_the_pipeline_and_stops_its_upstream() -> None:
    async def first_three() -> None:
        ch = process.listen("in")
        for _ in range(3):
            await process.emit(await ch.receive())

    assert (pk.source(itertools.count) | pk.actor(first_three)).run() == [0, 1, 2]


async def test_a_take_after_an_actor_stage_stops_it_and_leaves_no_task() -> None:
    before = all_tasks()
    p = pk.source(itertools.count) | pk.actor(echo_forever) | pk.take(3)
    assert await p.arun() == [0, 1, 2]
    assert all_tasks() == before


async def test_cancelling_a_pipeline_outside_any_node_leaves_no_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck() -> None:
        await process.listen("in").receive()
        await trio.sleep_forever()

    before = all_tasks()
    with trio.move_on_after(5) as scope:
        await (pk.source(range(3)) | pk.actor(stuck)).arun()
    assert scope.cancelled_caught
    assert all_tasks() == before


async def test_cancelling_a_pipeline_inside_a_node_leaves_no_process_name_or_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stuck() -> None:
        registry.register("stuck_stage")
        await trio.sleep_forever()

    async def main() -> tuple[bool, NodeStats]:
        with trio.move_on_after(5) as scope:
            await (pk.source(range(3)) | pk.actor(stuck)).arun()
        return scope.cancelled_caught, node.stats()

    async with open_node("app") as node:
        before = all_tasks()
        cancelled, during = await node.run(main)
        assert cancelled
        assert during == NodeStats(processes=1, names=0, links=0, monitors=0)  # main only
        assert node.stats() == NOTHING
        assert all_tasks() == before


def test_an_actor_stage_spawns_helpers_and_collects_their_replies() -> None:
    async def squarer() -> None:
        msg = await process.listen("job", message=True).receive()
        process.send(msg.sender, "square", (msg.payload, msg.payload**2))

    async def fan_out() -> None:
        replies = process.listen("square")
        async for batch in process.listen("in"):
            for x in batch:
                process.send(process.spawn(squarer), "job", x)
            got = dict([await replies.receive() for _ in batch])
            await process.emit([got[x] for x in batch])

    out = (pk.source([[1, 2, 3], [4, 5]]) | pk.actor(fan_out)).run()
    assert out == [[1, 4, 9], [16, 25]]


def test_outside_any_node_the_stage_runs_on_a_node_of_its_own() -> None:
    async def whoami() -> None:
        async for _ in process.listen("in"):
            await process.emit(process.pid())

    (pid,) = (pk.source([0]) | pk.actor(whoami)).run()
    assert pid.node == STAGE_NODE
    assert pid.name.endswith("whoami")  # the Pid names the entry


async def test_inside_a_node_the_stage_is_a_process_of_that_node_others_can_reach() -> None:
    registered = trio.Event()

    async def greeter() -> None:
        registry.register("greeter")
        registered.set()
        greeting = await process.listen("greeting").receive()
        async for name in process.listen("in"):
            await process.emit(f"{greeting}, {name} (from {process.pid().node})")

    async def main() -> list[str]:
        async with trio.open_nursery() as nursery:
            result: list[str] = []

            async def run_pipeline() -> None:
                result.extend(await (pk.source(["ann", "bob"]) | pk.actor(greeter)).arun())

            nursery.start_soon(run_pipeline)
            await registered.wait()
            process.send("greeter", "greeting", "hello")
        return result

    async with open_node("app") as node:
        assert await node.run(main) == ["hello, ann (from app)", "hello, bob (from app)"]
        assert node.stats() == NOTHING


def test_a_pipeline_run_by_a_thread_process_uses_a_node_of_its_own() -> None:
    async def whereami() -> None:
        async for _ in process.listen("in"):
            await process.emit(process.pid().node)

    def blocking() -> Any:  # its pipeline runs in a trio run of its own
        return (pk.source([0]) | pk.actor(whereami)).run()

    async def main() -> Any:
        process.spawn_monitored(blocking, "thread")
        return (await process.events().receive()).result

    assert actors.run(main, node="app") == [STAGE_NODE]


async def test_an_actor_stage_runs_on_the_node_it_is_given() -> None:
    async def whoami() -> None:
        async for _ in process.listen("in"):
            await process.emit(process.pid())

    async with open_node("given") as node:
        (pid,) = await (pk.source([0]) | pk.actor(whoami, node=node)).arun()
        assert pid.node == "given"
        assert node.stats() == NOTHING


async def test_an_actor_module_runs_on_a_kernel() -> None:
    got: list[Any] = []

    async def feed(out: pk.kernel.Pipe) -> None:
        await out.send_batch(list(range(5)))

    async def keep(inp: pk.kernel.Pipe) -> None:
        got.extend([x async for x in inp])

    module = ActorModule(doubler)
    async with pk.open_kernel() as k:
        src, actor, sink = k.add(feed), k.add(module, name="doubler"), k.add(keep)
        k.connect(src["out"], actor)
        k.connect(actor["out"], sink)
    assert got == [0, 2, 4, 6, 8]
    assert isinstance(module.pid, Pid) and module.pid.node == STAGE_NODE


# -- emit -------------------------------------------------------------------------------


async def test_emit_in_a_process_that_is_not_a_stage_is_not_in_stage() -> None:
    async def plain() -> None:
        await process.emit(1)

    async with open_node() as node:
        with pytest.raises(NotInStage, match="not a pipeline stage"):
            await node.run(plain)
    with pytest.raises(NotInStage, match="outside any process"):
        await process.emit(1)


def test_emit_in_a_process_the_stage_spawned_is_not_in_stage() -> None:
    async def helper() -> None:
        await process.emit("from the helper")

    async def spawner() -> None:
        async for _ in process.listen("in"):
            process.spawn_monitored(helper)
            event = await process.events().receive()
            await process.emit(type(event.error).__name__)

    assert (pk.source([0]) | pk.actor(spawner)).run() == ["NotInStage"]


# -- sending to actors ------------------------------------------------------------------


async def test_a_pipeline_inside_a_node_feeds_a_registered_actor_by_name(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def collector(n: int) -> list[Any]:
        jobs = process.listen("job", message=True)
        got = []
        for _ in range(n):
            msg = await jobs.receive()
            got.append((msg.payload, msg.sender))
            await trio.sleep(0.01)  # slower than the pipeline: its mailbox fills
        return got

    async def main() -> list[Any]:
        pid = process.spawn_monitored(collector, None, 200)
        registry.register("collector", pid)
        await (pk.source(range(200)) | pk.map(str) | pk.to_actor("collector", "job")).arun()
        event = await process.events().receive()
        assert event.sender == pid
        result: list[Any] = event.result
        return result

    async with open_node("app", mailbox_size=8) as node:
        got = await node.run(main)
    assert [payload for payload, _ in got] == [str(i) for i in range(200)]
    assert {sender.name for _, sender in got} == {f"{__name__}:{main.__qualname__}"}


async def test_to_actor_an_unknown_name_fails_the_stage_naming_it() -> None:
    async def main() -> None:
        await (pk.source([1]) | pk.to_actor("nobody_here", "job")).arun()

    async with open_node() as node:
        with pytest.raises(pk.ModuleError) as info:
            await node.run(main)
    assert info.value.module == "to_actor(nobody_here)"
    assert isinstance(info.value.__cause__, NoSuchProcess)
    assert "nobody_here" in str(info.value.__cause__)


async def test_to_actor_a_process_that_exited_fails_the_stage_naming_it() -> None:
    async def short_lived() -> str:
        return "gone"

    async def main() -> None:
        pid = process.spawn_monitored(short_lived)
        await process.events().receive()
        await (pk.source([1]) | pk.to_actor(pid, "job")).arun()

    async with open_node() as node:
        with pytest.raises(pk.ModuleError) as info:
            await node.run(main)
    assert isinstance(info.value.__cause__, NoSuchProcess)
    assert "short_lived" in str(info.value.__cause__)


async def test_to_actor_sends_through_the_node_it_is_given() -> None:
    async with open_node(mailbox_size=4) as node:
        pid = node.spawn(lambda: None)
        sink_pid = node.spawn(_collect_n, None, 20)
        await (pk.source(range(20)) | pk.to_actor(sink_pid, "n", node=node)).arun()
        assert pid.node == sink_pid.node
        await trio.testing.wait_all_tasks_blocked()
        assert node.stats() == NOTHING


async def _collect_n(n: int) -> list[int]:
    ch = process.listen("n")
    got = [await ch.receive() for _ in range(n)]
    assert got == list(range(n))
    return got


async def test_to_actor_outside_any_node_is_not_in_actor() -> None:
    with pytest.raises(pk.ModuleError) as info:
        await (pk.source([1]) | pk.to_actor("anyone", "job")).arun()
    assert isinstance(info.value.__cause__, NotInActor)


# -- bad input --------------------------------------------------------------------------


_actor: Any = pk.actor  # called with what its type hints refuse
_to_actor: Any = pk.to_actor


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: _actor(42), TypeError),
        (lambda: _actor(doubler, topic=1), TypeError),
        (lambda: _actor(doubler, mailbox_size=0), ValueError),
        (lambda: _actor(doubler, node="app"), TypeError),
        (lambda: _actor(doubler, workers=2), TypeError),
        (lambda: _to_actor(3, "job"), TypeError),
        (lambda: _to_actor("worker", b"job"), TypeError),
    ],
)
def test_bad_arguments_are_refused_when_the_stage_is_made(call: Any, error: type) -> None:
    with pytest.raises(error):
        call()
