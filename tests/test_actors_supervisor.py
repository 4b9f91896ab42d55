"""Supervisors: restart strategies, restart kinds, intensity, nesting (issue 15)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from pipekit.actors import (
    CANCEL,
    ChildSpec,
    LinkedFailure,
    NodeStats,
    Pid,
    Supervisor,
    SupervisorGaveUp,
    Terminated,
    open_node,
    process,
    registry,
)

NOTHING = NodeStats(processes=0, names=0, links=0, monitors=0)


class Log:
    """Which child started (in order) and with what Pid; children crash on request."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, Pid]] = []

    def pids(self, cid: str) -> list[Pid]:
        return [pid for c, pid in self.starts if c == cid]

    def child(self, cid: str, *, crash_after: float | None = None, ret: bool = False) -> Any:
        async def child() -> str:
            self.starts.append((cid, process.pid()))
            registry.register(cid)
            if crash_after is not None:
                await trio.sleep(crash_after)
                raise RuntimeError(f"{cid} crashed")
            if ret:
                await trio.lowlevel.checkpoint()
                return f"{cid} done"
            await process.listen("crash").receive()
            raise RuntimeError(f"{cid} told to crash")

        child.__qualname__ = cid
        return child


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def crash(node: Any, cid: str) -> None:
    node.send(cid, "crash", None)
    await settle()


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    log = Log()
    sup = Supervisor([ChildSpec(c, log.child(c)) for c in "abc"], strategy="one_for_one")
    async with open_node() as node:
        node.spawn(sup)
        await settle()
        await crash(node, "b")
        assert [len(log.pids(c)) for c in "abc"] == [1, 2, 1]
        assert node.registry.lookup("b") == log.pids("b")[1]


async def test_one_for_all_restarts_every_child() -> None:
    log = Log()
    sup = Supervisor([ChildSpec(c, log.child(c)) for c in "abc"], strategy="one_for_all")
    async with open_node() as node:
        node.spawn(sup)
        await settle()
        await crash(node, "b")
        assert [len(log.pids(c)) for c in "abc"] == [2, 2, 2]
        # restarted in their order (spawned in that order: serials increase)
        assert [int(log.pids(c)[1].proc) for c in "abc"] == sorted(
            int(log.pids(c)[1].proc) for c in "abc"
        )


async def test_rest_for_one_restarts_the_child_and_those_after_it() -> None:
    log = Log()
    sup = Supervisor([ChildSpec(c, log.child(c)) for c in "abc"], strategy="rest_for_one")
    async with open_node() as node:
        node.spawn(sup)
        await settle()
        await crash(node, "b")
        assert [len(log.pids(c)) for c in "abc"] == [1, 2, 2]


async def test_children_a_restart_stops_get_terminated() -> None:
    log = Log()
    sup = Supervisor([ChildSpec(c, log.child(c)) for c in "ab"], strategy="one_for_all")

    async def watcher() -> Any:
        await settle()
        process.monitor(log.pids("a")[0])
        return (await process.events().receive()).error

    async with open_node() as node:
        node.spawn(sup)
        await settle()
        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def watch() -> None:
                got.append(await node.run(watcher))

            nursery.start_soon(watch)
            await settle()
            await crash(node, "b")
        assert isinstance(got[0], Terminated)


async def test_a_supervisor_gives_up_past_its_intensity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor(
        [
            ChildSpec("steady", log.child("steady")),
            ChildSpec("bad", log.child("bad", crash_after=1)),
        ],
        intensity=2,
        period=5,
    )
    async with open_node() as node:
        with pytest.raises(SupervisorGaveUp) as info:
            await node.run(sup)
        assert node.stats() == NOTHING  # the steady child was stopped too
    assert info.value.child == "bad" and isinstance(info.value.reason, RuntimeError)
    assert len(log.pids("bad")) == 3  # first run and two restarts


async def test_restarts_older_than_the_period_do_not_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor([ChildSpec("slow", log.child("slow", crash_after=10))], intensity=1, period=5)
    async with open_node() as node:
        with trio.move_on_after(100):
            await node.run(sup)
    assert len(log.pids("slow")) >= 9


async def test_the_parent_of_a_supervisor_that_gives_up_sees_why(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    sup = Supervisor([ChildSpec("bad", log.child("bad", crash_after=1))], intensity=0)

    async def parent() -> Any:
        process.spawn_monitored(sup)
        return (await process.events().receive()).error

    async with open_node() as node:
        error = await node.run(parent)
    assert isinstance(error, SupervisorGaveUp)


async def test_transient_children_are_restarted_only_after_a_failure() -> None:
    log = Log()
    sup = Supervisor(
        [
            ChildSpec("ok", log.child("ok", ret=True), restart="transient"),
            ChildSpec("bad", log.child("bad"), restart="transient"),
        ]
    )
    async with open_node() as node:
        node.spawn(sup)
        await settle()
        await crash(node, "bad")
        assert (len(log.pids("ok")), len(log.pids("bad"))) == (1, 2)


async def test_temporary_children_are_never_restarted_and_the_supervisor_then_returns() -> None:
    log = Log()
    sup = Supervisor([ChildSpec("t", log.child("t"), restart="temporary")])
    async with open_node() as node:
        async with trio.open_nursery() as nursery:
            result: list[Any] = []

            async def go() -> None:
                result.append(await node.run(sup))

            nursery.start_soon(go)
            await settle()
            await crash(node, "t")
        assert result == [None] and len(log.pids("t")) == 1


async def test_permanent_children_are_restarted_even_after_returning() -> None:
    calls = 0

    async def once_then_wait() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return
        await trio.sleep_forever()

    sup = Supervisor([ChildSpec("p", once_then_wait)])
    async with open_node() as node:
        node.spawn(sup)
        await settle()
        assert calls == 2


async def test_nested_supervisors_restart_a_subtree_that_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    inner = Supervisor([ChildSpec("leaf", log.child("leaf", crash_after=1))], intensity=0)
    outer = Supervisor([ChildSpec("inner", inner)], intensity=2, period=60)
    async with open_node() as node:
        with pytest.raises(SupervisorGaveUp) as info:
            await node.run(outer)
        assert node.stats() == NOTHING
    # the outer supervisor started the inner three times; each ran one leaf
    assert len(log.pids("leaf")) == 3
    assert info.value.child == "inner" and isinstance(info.value.reason, SupervisorGaveUp)


async def test_cancel_stops_the_children_and_the_supervisor_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()

    async def graceful() -> str:
        log.starts.append(("g", process.pid()))
        event = await process.events().receive()
        assert event.kind == CANCEL
        return "cleaned up"

    sup = Supervisor([ChildSpec("g", graceful, shutdown="1s"), ChildSpec("x", log.child("x"))])

    async def parent() -> Any:
        pid = process.spawn_monitored(sup)
        await settle()
        process.cancel(pid, "5s")
        return (await process.events().receive()).error

    async with open_node() as node:
        assert await node.run(parent) is None
        assert node.stats() == NOTHING


async def test_children_die_with_their_supervisor() -> None:
    log = Log()
    sup = Supervisor([ChildSpec(c, log.child(c)) for c in "ab"])

    async def parent() -> Any:
        pid = process.spawn(sup)
        await settle()
        process.monitor(log.pids("a")[0])
        process.terminate(pid)
        return (await process.events().receive()).error

    async with open_node() as node:
        error = await node.run(parent)
        await settle()
        assert node.stats() == NOTHING
    assert isinstance(error, LinkedFailure) and isinstance(error.reason, Terminated)


async def test_a_failing_non_child_link_takes_the_supervisor_down() -> None:
    log = Log()
    sup = Supervisor([ChildSpec("a", log.child("a"))])

    async def parent() -> None:
        process.spawn_linked(sup)
        await settle()
        raise RuntimeError("parent broke")

    async def main() -> Any:
        process.spawn_monitored(parent)
        await process.events().receive()
        await settle()
        return node_stats()

    async with open_node() as node:

        def node_stats() -> NodeStats:
            return node.stats()

        # only main itself is left: the parent, the supervisor and its child are gone
        assert await node.run(main) == NodeStats(processes=1, names=0, links=0, monitors=0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Supervisor([ChildSpec("a", print), ChildSpec("a", print)]), "unique"),
        (lambda: Supervisor([], strategy="one_for_some"), "strategy"),  # type: ignore[arg-type]
        (lambda: Supervisor([], intensity=-1), "intensity"),
        (lambda: ChildSpec("a", print, restart="sometimes"), "restart"),  # type: ignore[arg-type]
        (lambda: ChildSpec("", print), "id"),
        (lambda: ChildSpec("a", print, shutdown="soon"), "duration"),
    ],
)
def test_bad_supervisor_settings_raise_value_error(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_a_child_that_is_not_a_child_spec_raises_type_error() -> None:
    with pytest.raises(TypeError, match="ChildSpec"):
        Supervisor([print])  # type: ignore[list-item]
