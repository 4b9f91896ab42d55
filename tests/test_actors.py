"""The local actor node: Pids, spawning, messages, events, links, monitors, names,
cancel and terminate (issue 15). The reference's worked examples that need ``select``
and ``after`` are in ``test_actors_examples.py``; supervisors in
``test_actors_supervisor.py``."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
import trio
import trio.testing
from sched_helpers import all_tasks

from pipekit import PipekitError
from pipekit.actors import (
    CANCEL,
    EXIT,
    LINK_DOWN,
    ActorError,
    ExitEvent,
    LinkedFailure,
    MailboxFull,
    Message,
    NameTaken,
    NodeStats,
    NoSuchProcess,
    NotInActor,
    Pid,
    SpawnError,
    Terminated,
    open_node,
    process,
    registry,
    run,
)

NOTHING = NodeStats(processes=0, names=0, links=0, monitors=0)


# -- Pid --------------------------------------------------------------------------------


def test_a_pid_prints_in_the_reference_form_and_parses_back() -> None:
    pid = Pid("node1", "host1", "system:logger", "main")
    assert str(pid) == "{node1@host1|system:logger|main}"
    assert Pid.parse(str(pid)) == pid
    assert hash(Pid.parse(str(pid))) == hash(pid)


def test_a_pid_without_a_node_part_parses() -> None:
    pid = Pid.parse("{host1|app:worker|proc123}")
    assert (pid.node, pid.host, pid.name, pid.proc) == (None, "host1", "app:worker", "proc123")
    assert str(pid) == "{host1|app:worker|proc123}"


def test_pids_differing_in_any_part_are_different() -> None:
    base = Pid("n", "h", "a:b", "1")
    others = [Pid("m", "h", "a:b", "1"), Pid(None, "h", "a:b", "1"), Pid("n", "h", "a:b", "2")]
    assert all(other != base for other in others)
    assert len({base, *others}) == 4


def test_a_pid_survives_pickling() -> None:
    pid = Pid("n", "local", "app:main", "7")
    assert pickle.loads(pickle.dumps(pid)) == pid


@pytest.mark.parametrize("text", ["", "{a|b}", "a|b|c", "{a@b@c|d|e}", "{h|a|b|c}", "{h||p}"])
def test_parsing_what_is_not_a_pid_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a pid"):
        Pid.parse(text)


def test_a_pid_part_with_a_separator_is_refused() -> None:
    with pytest.raises(ValueError, match="name"):
        Pid("n", "h", "a|b", "1")


# -- running ----------------------------------------------------------------------------


async def answer(x: int) -> int:
    await trio.lowlevel.checkpoint()
    return x * 2


async def fail(message: str = "boom") -> None:
    await trio.lowlevel.checkpoint()
    raise RuntimeError(message)


async def forever() -> None:
    await trio.sleep_forever()


def test_run_runs_an_entry_and_returns_its_result() -> None:
    assert run(answer, 21) == 42


def test_run_raises_the_error_of_the_entry() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        run(fail)


def test_run_takes_an_import_string() -> None:
    assert run("tests.test_actors:answer", 5) == 10


async def test_node_run_takes_a_name_registered_with_the_node() -> None:
    async with open_node("app") as node:
        node.add_entry("app:answer", answer)
        assert await node.run("app:answer", 4) == 8


async def test_a_process_pid_names_its_node_host_and_entry() -> None:
    async def me() -> Pid:
        return process.pid()

    async with open_node("app") as node:
        node.add_entry("app:me", me)
        pid = await node.run("app:me")
    assert (pid.node, pid.host, pid.name) == ("app", "local", "app:me")


async def test_each_process_has_its_own_pid() -> None:
    async def two() -> tuple[Pid, Pid]:
        child = process.spawn(forever)
        return process.pid(), child

    async with open_node() as node:
        mine, child = await node.run(two)
    assert mine != child and mine.proc != child.proc


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ("no.such.module:main", "cannot import"),
        ("tests.test_actors:nothing_here", "has no"),
        ("nocolon", "unknown entry"),
        (42, "an entry is"),
    ],
)
async def test_an_unknown_entry_raises_spawn_error(entry: Any, match: str) -> None:
    async with open_node() as node:
        with pytest.raises(SpawnError, match=match):
            node.spawn(entry)


async def test_an_unknown_host_raises_spawn_error_naming_the_hosts() -> None:
    async with open_node() as node:
        with pytest.raises(SpawnError, match=r"unknown host 'mars'.*local"):
            node.spawn(answer, "mars")


async def test_arguments_given_where_the_host_goes_raise_type_error() -> None:
    async with open_node() as node:
        with pytest.raises(TypeError, match="arguments come after the host"):
            node.spawn(answer, 3)  # type: ignore[arg-type]


async def test_the_process_api_outside_an_actor_raises_not_in_actor() -> None:
    with pytest.raises(NotInActor, match="not inside an actor"):
        process.pid()
    with pytest.raises(NotInActor):
        registry.lookup("x")


def test_actor_errors_are_pipekit_errors() -> None:
    for cls in (MailboxFull, NoSuchProcess, NameTaken, NotInActor, SpawnError, Terminated):
        assert issubclass(cls, ActorError) and issubclass(cls, PipekitError)


async def test_tasks_an_actor_starts_act_as_that_process() -> None:
    async def main() -> list[Pid]:
        seen: list[Pid] = []

        async def part() -> None:
            seen.append(process.pid())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(part)
            nursery.start_soon(part)
        return [process.pid(), *seen]

    async with open_node() as node:
        mine, a, b = await node.run(main)
    assert mine == a == b


async def test_leaving_the_node_block_terminates_running_processes() -> None:
    async def watcher(target: Pid) -> None:
        process.monitor(target)
        await trio.sleep_forever()

    async with open_node() as node:
        node.spawn(forever)
        await trio.testing.wait_all_tasks_blocked()
        assert node.stats().processes == 1
    assert node.stats() == NOTHING


async def test_a_closed_node_starts_no_process() -> None:
    async with open_node() as node:
        pass
    with pytest.raises(ActorError, match="closed"):
        node.spawn(answer, None, 1)


# -- messages ---------------------------------------------------------------------------


async def test_each_payload_is_a_separate_message_in_order() -> None:
    async def main() -> list[int]:
        process.send(process.pid(), "n", 1, 2, 3)
        ch = process.listen("n")
        return [await ch.receive() for _ in range(3)]

    async with open_node() as node:
        assert await node.run(main) == [1, 2, 3]


async def test_order_is_kept_per_sender_receiver_pair() -> None:
    async def sender(dest: Pid, tag: str) -> None:
        for i in range(200):
            process.send(dest, "seq", (tag, i))
            if i % 7 == 0:
                await trio.lowlevel.checkpoint()

    async def main() -> dict[str, list[int]]:
        ch = process.listen("seq")
        me = process.pid()
        process.spawn(sender, None, me, "a")
        process.spawn(sender, None, me, "b")
        got: dict[str, list[int]] = {"a": [], "b": []}
        for _ in range(400):
            tag, i = await ch.receive()
            got[tag].append(i)
        return got

    async with open_node() as node:
        got = await node.run(main)
    assert got == {"a": list(range(200)), "b": list(range(200))}


async def test_a_message_sent_before_the_listener_exists_reaches_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def echo() -> None:
        await trio.sleep(1)  # the parent sends before this process listens
        msg = await process.listen("echo", message=True).receive()
        process.send(msg.sender, "reply", msg.payload)

    async def main() -> Any:
        pid = process.spawn(echo)
        process.send(pid, "echo", "hello")
        return await process.listen("reply").receive()

    async with open_node() as node:
        assert await node.run(main) == "hello"


async def test_a_message_names_its_sender_topic_and_payload() -> None:
    async def main() -> Message:
        process.send(process.pid(), "t", {"k": 1})
        return await process.listen("t", message=True).receive()  # type: ignore[no-any-return]

    async with open_node() as node:
        msg = await node.run(main)
    assert msg.topic == "t" and msg.payload == {"k": 1} and msg.sender.name.endswith("main")


async def test_send_with_no_payload_sends_one_message_of_none() -> None:
    async def main() -> Any:
        process.send(process.pid(), "ping")
        return await process.listen("ping").receive()

    async with open_node() as node:
        assert await node.run(main) is None


async def test_the_inbox_gets_what_no_listener_takes() -> None:
    async def main() -> tuple[Any, list[tuple[str, Any]]]:
        specific = process.listen("specific_topic")
        me = process.pid()
        process.send(me, "specific_topic", "mine")
        process.send(me, "other", "a")
        process.send(me, "third", "b")
        inbox = process.inbox()
        got = [await inbox.receive() for _ in range(2)]
        return await specific.receive(), [(m.topic, m.payload) for m in got]

    async with open_node() as node:
        mine, inboxed = await node.run(main)
    assert mine == "mine" and inboxed == [("other", "a"), ("third", "b")]


async def test_listen_twice_gives_the_same_channel_and_other_mode_is_refused() -> None:
    async def main() -> None:
        assert process.listen("t") is process.listen("t")
        with pytest.raises(ActorError, match="already listens"):
            process.listen("t", message=True)

    async with open_node() as node:
        await node.run(main)


async def test_sending_to_a_registered_name_or_a_pid_string_reaches_its_process() -> None:
    async def server() -> list[Any]:
        registry.register("server")
        ch = process.listen("q")
        return [await ch.receive(), await ch.receive()]

    results: list[Any] = []
    async with open_node() as node:

        async def go() -> None:
            results.append(await node.run(server))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go)
            await trio.testing.wait_all_tasks_blocked()
            node.send("server", "q", 5)
            node.send(str(registry_pid(node, "server")), "q", 6)
    assert results == [[5, 6]]


def registry_pid(node: Any, name: str) -> Pid:
    pid: Pid = node.registry.lookup(name)
    return pid


async def test_sending_to_an_unknown_name_or_dead_pid_raises_no_such_process() -> None:
    async with open_node("n") as node:
        pid = node.spawn(answer, None, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NoSuchProcess, match="not running"):
            node.send(pid, "t", 1)
        with pytest.raises(NoSuchProcess, match="registered as 'ghost'"):
            node.send("ghost", "t", 1)
        with pytest.raises(NoSuchProcess, match="not connected"):
            node.send(Pid("elsewhere", "local", "a:b", "1"), "t", 1)


async def test_spawn_returns_the_pid_the_process_sees_as_its_own() -> None:
    async def me() -> Pid:
        return process.pid()

    async with open_node("n") as node:
        pid = node.spawn_process(me, None, (), None, link=False, monitor=False)
        proc = node.find(pid)
        assert proc.pid == pid and hash(proc.pid) == hash(pid)
        assert await node.run(me) != pid


async def test_a_pid_differing_from_a_live_process_only_outside_its_number_reaches_nobody() -> None:
    async with open_node("n") as node:
        node.add_entry("app:worker", forever)
        pid = node.spawn("app:worker")
        for other in (
            Pid("elsewhere", pid.host, pid.name, pid.proc),  # another node
            Pid(pid.node, "thread", pid.name, pid.proc),  # another host
            Pid(pid.node, pid.host, "app:other", pid.proc),  # another entry
        ):
            with pytest.raises(NoSuchProcess):
                node.send(other, "t", 1)
            with pytest.raises(NoSuchProcess):
                await node.send_wait(other, "t", 1)
            with pytest.raises(NoSuchProcess):
                node.terminate(other)
        node.send(pid, "t", 1)  # the real one still reaches it
        node.terminate(pid)


async def test_a_bad_destination_or_topic_raises_type_error() -> None:
    async with open_node() as node:
        pid = node.spawn(forever)
        with pytest.raises(TypeError, match="destination"):
            node.send(42, "t", 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="topic"):
            node.send(pid, 7, 1)  # type: ignore[arg-type]


async def test_a_full_mailbox_refuses_the_whole_send() -> None:
    async with open_node(mailbox_size=4) as node:
        pid = node.spawn(forever)
        node.send(pid, "t", 1, 2, 3)
        with pytest.raises(MailboxFull, match="full"):
            node.send(pid, "t", 4, 5)  # both or neither
        node.send(pid, "t", 4)
        with pytest.raises(MailboxFull):
            node.send(pid, "other", 5)


async def test_send_wait_waits_for_room_and_delivers_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def consumer(n: int) -> list[int]:
        ch = process.listen("n")
        got = []
        for _ in range(n):
            await trio.sleep(0.01)
            got.append(await ch.receive())
        return got

    async def producer() -> list[int]:
        pid = process.spawn_monitored(consumer, None, 50)
        for i in range(50):
            await process.send_wait(pid, "n", i)
        event = await process.events().receive()
        return event.result  # type: ignore[no-any-return]

    async with open_node(mailbox_size=3) as node:
        assert await node.run(producer) == list(range(50))


async def test_send_wait_of_more_than_a_mailbox_holds_raises() -> None:
    async with open_node(mailbox_size=2) as node:
        pid = node.spawn(forever)
        with pytest.raises(MailboxFull, match="never fit"):
            await node.send_wait(pid, "t", 1, 2, 3)


async def test_send_wait_to_a_process_that_exits_raises_no_such_process() -> None:
    async with open_node(mailbox_size=1) as node:
        pid = node.spawn(forever)
        node.send(pid, "t", 1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_soon, node, pid)
            with pytest.raises(NoSuchProcess):
                await node.send_wait(pid, "t", 2)


async def _terminate_soon(node: Any, pid: Pid) -> None:
    await trio.testing.wait_all_tasks_blocked()
    node.terminate(pid)


async def test_receive_is_a_cancel_point_even_with_messages_ready() -> None:
    async def main() -> None:
        process.send(process.pid(), "t", 1)
        ch = process.listen("t")
        with trio.CancelScope() as scope:
            scope.cancel()
            await ch.receive()
        assert scope.cancelled_caught
        assert ch.receive_nowait() == 1  # nothing was taken
        with pytest.raises(trio.WouldBlock):
            ch.receive_nowait()

    async with open_node() as node:
        await node.run(main)


async def test_a_receive_loop_yields_to_other_tasks() -> None:
    async def main() -> int:
        me = process.pid()
        process.send(me, "t", *range(500))
        ch = process.listen("t")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            before = ticks
            for _ in range(500):
                await ch.receive()
            nursery.cancel_scope.cancel()
        return ticks - before

    async with open_node() as node:
        # a schedule point at least every 64 receives (one tick may fall either side)
        assert await node.run(main) >= 500 // 64 - 1


# -- events: monitors -------------------------------------------------------------------


async def _exit_of(node: Any, pid: Pid) -> Any:
    """Wait for ``pid`` to exit (through a monitoring process); its result."""

    async def watch() -> Any:
        process.monitor(pid)
        event = await process.events().receive()
        if event.error is not None:
            raise event.error
        return event.result

    return await node.run(watch)


async def test_spawn_monitored_gives_an_exit_event_with_the_result() -> None:
    async def main() -> ExitEvent:
        child = process.spawn_monitored(answer, None, 5)
        event = await process.events().receive()
        assert event.sender == child
        return event  # type: ignore[no-any-return]

    async with open_node() as node:
        event = await node.run(main)
    assert event.kind == EXIT == "pid.exit"
    assert (event.result, event.error, event.ok) == (10, None, True)
    assert isinstance(event.at, float)


async def test_an_exit_event_carries_the_error_of_a_failed_process() -> None:
    async def main() -> ExitEvent:
        process.spawn_monitored(fail, None, "bad")
        return await process.events().receive()  # type: ignore[no-any-return]

    async with open_node() as node:
        event = await node.run(main)
    assert isinstance(event.error, RuntimeError) and str(event.error) == "bad"
    assert event.result is None and not event.ok


async def test_explicit_monitor_and_unmonitor(autojump_clock: trio.testing.MockClock) -> None:
    async def long_worker() -> str:
        await trio.sleep(10)
        return "done"

    async def main() -> list[Any]:
        events = process.events()
        a = process.spawn(long_worker)
        b = process.spawn(long_worker)
        process.monitor(a)
        process.monitor(b)
        process.unmonitor(b)
        event = await events.receive()
        await trio.sleep(1)  # b has exited too by now
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()
        return [event.sender == a, event.result]

    async with open_node() as node:
        assert await node.run(main) == [True, "done"]
        assert node.stats() == NOTHING


async def test_monitoring_a_process_that_is_gone_raises_no_such_process() -> None:
    async def main() -> None:
        child = process.spawn(answer, None, 1)
        await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NoSuchProcess):
            process.monitor(child)
        with pytest.raises(NoSuchProcess):
            process.link(child)

    async with open_node() as node:
        await node.run(main)


async def test_monitored_pool_of_five_collects_every_exit_with_results(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reference's "Complete Example: Monitored Worker Pool"."""

    async def task_worker(task: dict[str, int]) -> int:
        await trio.sleep(0.1)
        return task["value"] * 2

    async def main() -> dict[int, int]:
        events_ch = process.events()
        workers = {}
        for i in range(1, 6):
            pid = process.spawn_monitored(task_worker, None, {"task_id": i, "value": i * 10})
            workers[pid] = i
        results: dict[int, int] = {}
        with trio.fail_after(10):
            while len(results) < 5:
                event = await events_ch.receive()
                if event.kind == EXIT and event.sender in workers:
                    assert event.error is None
                    results[workers[event.sender]] = event.result
        return results

    async with open_node() as node:
        assert await node.run(main) == {1: 20, 2: 40, 3: 60, 4: 80, 5: 100}


# -- links ------------------------------------------------------------------------------


async def test_trap_links_turns_a_linked_failure_into_link_down() -> None:
    """The reference's "Handling LINK_DOWN Events"."""

    async def error_exit_worker() -> None:
        await trio.lowlevel.checkpoint()
        raise ValueError("worker failed")

    async def main() -> Any:
        process.set_options(trap_links=True)
        assert process.get_options().trap_links
        events_ch = process.events()
        error_pid = process.spawn_linked(error_exit_worker)
        event = await events_ch.receive()
        assert event.kind == LINK_DOWN == "pid.link.down"
        assert event.sender == error_pid
        return event.error

    async with open_node() as node:
        error = await node.run(main)
    assert isinstance(error, ValueError)


async def test_a_linked_failure_takes_the_parent_down_without_trap_links() -> None:
    async def main() -> None:
        process.spawn_linked(fail, None, "child broke")
        await trio.sleep_forever()

    async with open_node() as node:
        with pytest.raises(LinkedFailure, match="child broke") as info:
            await node.run(main)
    assert isinstance(info.value.reason, RuntimeError)


async def test_a_linked_failure_travels_down_a_chain_of_links() -> None:
    async def middle() -> None:
        process.spawn_linked(fail, None, "at the end")
        await trio.sleep_forever()

    async def top() -> None:
        process.spawn_linked(middle)
        await trio.sleep_forever()

    async def main() -> ExitEvent:
        process.spawn_monitored(top)
        return await process.events().receive()  # type: ignore[no-any-return]

    async with open_node() as node:
        event = await node.run(main)
        assert node.stats() == NOTHING
    # top died of middle, which died of the failing end
    assert isinstance(event.error, LinkedFailure)
    assert isinstance(event.error.reason, LinkedFailure)
    assert isinstance(event.error.reason.reason, RuntimeError)


async def test_the_parent_crash_takes_a_linked_child_down() -> None:
    async def child() -> None:
        await trio.sleep_forever()

    async def parent() -> None:
        process.spawn_linked(child)
        await trio.lowlevel.checkpoint()
        raise RuntimeError("parent broke")

    async def main() -> list[Any]:
        events = process.events()
        process.spawn_monitored(parent)
        event = await events.receive()
        return [type(event.error)]

    async with open_node() as node:
        assert await node.run(main) == [RuntimeError]
        await trio.testing.wait_all_tasks_blocked()
        assert node.stats() == NOTHING


async def test_a_normal_exit_does_not_take_links_down() -> None:
    async def main() -> str:
        process.spawn_linked(answer, None, 1)
        await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        return "alive"

    async with open_node() as node:
        assert await node.run(main) == "alive"


async def test_unlink_removes_the_link() -> None:
    async def main() -> str:
        child = process.spawn_linked(forever)
        process.unlink(child)
        process.terminate(child)
        await trio.testing.wait_all_tasks_blocked()
        return "alive"

    async with open_node() as node:
        assert await node.run(main) == "alive"


async def test_link_to_a_running_process_propagates_its_failure() -> None:
    async def doomed() -> None:
        await process.listen("die").receive()
        raise RuntimeError("told to")

    async def main() -> None:
        pid = process.spawn(doomed)
        process.link(pid)
        process.send(pid, "die", 1)
        await trio.sleep_forever()

    async with open_node() as node:
        with pytest.raises(LinkedFailure):
            await node.run(main)


async def test_set_options_rejects_a_non_bool() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="trap_links"):
            process.set_options(trap_links="yes")  # type: ignore[arg-type]

    async with open_node() as node:
        await node.run(main)


# -- registry ---------------------------------------------------------------------------


async def test_registry_register_lookup_unregister() -> None:
    """The reference's "Registering Names" and "Unregistering Names"."""

    async def main() -> None:
        registry.register("my_service")
        assert registry.lookup("my_service") == process.pid()
        assert registry.unregister("my_service") is True
        assert registry.unregister("my_service") is False
        with pytest.raises(NoSuchProcess):
            registry.lookup("my_service")

    async with open_node() as node:
        await node.run(main)


async def test_names_are_released_when_their_process_exits() -> None:
    async def named() -> None:
        registry.register("worker1")
        registry.register("also")
        await process.listen("stop").receive()

    async def main() -> None:
        pid = process.spawn_monitored(named)
        await trio.testing.wait_all_tasks_blocked()
        assert registry.lookup("worker1") == pid == registry.lookup("also")
        process.send("worker1", "stop", None)
        await process.events().receive()
        with pytest.raises(NoSuchProcess):
            registry.lookup("worker1")
        registry.register("worker1")  # free again

    async with open_node() as node:
        await node.run(main)
        assert node.stats() == NOTHING


async def test_register_another_pid_and_a_taken_name() -> None:
    async def main() -> None:
        other = process.spawn(forever)
        registry.register("backup_worker", other)
        assert registry.lookup("backup_worker") == other
        registry.register("backup_worker", other)  # again: no-op
        with pytest.raises(NameTaken, match="taken"):
            registry.register("backup_worker")
        process.terminate(other)

    async with open_node() as node:
        await node.run(main)


@pytest.mark.parametrize(("name", "error"), [("", ValueError), ("{x", ValueError), (3, TypeError)])
async def test_a_bad_name_is_refused(name: Any, error: type[Exception]) -> None:
    async def main() -> None:
        with pytest.raises(error, match="name"):
            registry.register(name)

    async with open_node() as node:
        await node.run(main)


# -- terminate and cancel ---------------------------------------------------------------


async def test_terminate_stops_a_process_with_terminated() -> None:
    async def main() -> Any:
        pid = process.spawn_monitored(forever)
        process.terminate(pid)
        event = await process.events().receive()
        return event.error

    async with open_node() as node:
        error = await node.run(main)
    assert isinstance(error, Terminated) and error.reason == "terminated"


async def test_terminate_stops_a_process_already_waiting() -> None:
    async def main() -> Any:
        pid = process.spawn_monitored(forever)
        await trio.testing.wait_all_tasks_blocked()  # its task started and waits
        process.terminate(pid)
        event = await process.events().receive()
        return event.error

    async with open_node() as node:
        error = await node.run(main)
    assert isinstance(error, Terminated) and error.reason == "terminated"


async def test_cancel_forces_a_process_already_waiting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def main() -> Any:
        pid = process.spawn_monitored(forever)
        await trio.testing.wait_all_tasks_blocked()
        process.cancel(pid, "1s")
        event = await process.events().receive()
        return event.error

    async with open_node() as node:
        error = await node.run(main)
    assert isinstance(error, Terminated) and error.reason == "cancel deadline passed"


async def test_cancel_delivers_cancel_and_the_process_may_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def worker() -> str:
        event = await process.events().receive()
        assert event.kind == CANCEL == "pid.cancel"
        assert event.deadline == pytest.approx(event.at + 5)
        await trio.sleep(1)  # some clean-up, well within the deadline
        return "finished cleanly"

    async def main() -> Any:
        pid = process.spawn_monitored(worker)
        process.cancel(pid, "5s")
        event = await process.events().receive()
        return event.result

    async with open_node() as node:
        assert await node.run(main) == "finished cleanly"


async def test_cancel_forces_the_process_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def stubborn() -> str:
        await process.events().receive()
        await trio.sleep(60)  # ignores the request
        return "never"

    async def main() -> tuple[Any, float]:
        pid = process.spawn_monitored(stubborn)
        start = trio.current_time()
        process.cancel(pid, "100ms")
        event = await process.events().receive()
        return event.error, event.at - start

    async with open_node() as node:
        error, took = await node.run(main)
    assert isinstance(error, Terminated) and error.reason == "cancel deadline passed"
    assert took == pytest.approx(0.1)


async def test_cancel_takes_seconds_as_a_number(autojump_clock: trio.testing.MockClock) -> None:
    async def main() -> float:
        pid = process.spawn_monitored(forever)
        start = trio.current_time()
        process.cancel(pid, 2)
        await process.events().receive()
        return trio.current_time() - start

    async with open_node() as node:
        assert await node.run(main) == pytest.approx(2)


async def test_cancelling_node_run_terminates_its_process() -> None:
    async with open_node() as node:
        with trio.move_on_after(0.01):
            await node.run(forever)
        await trio.testing.wait_all_tasks_blocked()
        assert node.stats() == NOTHING


# -- nothing left behind ----------------------------------------------------------------


async def test_ten_thousand_actors_exchange_a_message_and_leave_nothing() -> None:
    import gc
    import sys

    async def worker(parent: Pid) -> None:
        registry.register(f"w{process.pid().proc}")
        msg = await process.listen("ping", message=True).receive()
        process.send(parent, "pong", msg.payload + 1)

    async def main(n: int) -> int:
        me = process.pid()
        pongs = process.listen("pong")
        pids = [process.spawn_monitored(worker, None, me) for _ in range(n)]
        for i, pid in enumerate(pids):
            process.send(pid, "ping", i)
        total = 0
        for _ in range(n):
            total += await pongs.receive()
        events = process.events()
        for _ in range(n):
            assert (await events.receive()).kind == EXIT
        return total

    n = 10_000
    async with open_node(mailbox_size=20_000) as node:
        # The first round grows what keeps its peak size (trio's task sets, the
        # interpreter's free lists): the second must leave nothing more behind.
        await node.run(main, n)
        gc.collect()
        before = sys.getallocatedblocks()
        tasks_before = all_tasks()
        assert await node.run(main, n) == n * (n + 1) // 2
        await trio.testing.wait_all_tasks_blocked()
        assert all_tasks() == tasks_before
        gc.collect()
        after = sys.getallocatedblocks()
        assert node.stats() == NOTHING
    # 10,000 processes hold ~30 blocks each while they run: what is left is noise
    assert after - before < 1000, f"{after - before} memory blocks left behind"


# -- bad input and quiet failures ---------------------------------------------------------


async def test_open_node_refuses_a_bad_name_or_mailbox_size() -> None:
    with pytest.raises(ValueError, match="node name"):
        async with open_node("a|b"):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="mailbox_size"):
        async with open_node(mailbox_size=0):
            pass  # pragma: no cover


async def test_add_entry_refuses_a_bad_name_or_a_non_callable() -> None:
    async with open_node() as node:
        with pytest.raises(ValueError, match="entry name"):
            node.add_entry("a|b", answer)
        with pytest.raises(TypeError, match="callable"):
            node.add_entry("app:x", 42)  # type: ignore[arg-type]


def test_pid_parse_of_a_non_string_raises_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        Pid.parse(42)  # type: ignore[arg-type]


async def test_registering_a_dead_pid_raises_no_such_process() -> None:
    async with open_node() as node:
        pid = node.spawn(answer, None, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(NoSuchProcess):
            node.registry.register("late", pid)
        assert node.registry.names() == {}


async def test_a_cancel_from_outside_any_actor_has_no_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def worker() -> Any:
        registry.register("w")
        event = await process.events().receive()
        return event.sender, event.deadline - event.at

    results: list[Any] = []
    async with open_node() as node:

        async def go() -> None:
            results.append(await node.run(worker))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(go)
            await trio.testing.wait_all_tasks_blocked()
            node.cancel("w", "250ms")
    assert results[0][0] is None and results[0][1] == pytest.approx(0.25)


async def test_a_failure_nobody_watches_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with open_node() as node:
        node.spawn(fail, None, "unseen")
        await trio.testing.wait_all_tasks_blocked()
    assert any("unseen" in r.getMessage() for r in caplog.records if r.name == "pipekit.actors")


async def test_options_report_trap_links() -> None:
    async def main() -> list[bool]:
        before = process.get_options().trap_links
        after = process.set_options(trap_links=True).trap_links
        return [before, after, process.get_options().trap_links]

    async with open_node() as node:
        assert await node.run(main) == [False, True, True]


async def test_a_process_spawned_plainly_holds_nothing_beyond_its_slots() -> None:
    import gc

    async def wait() -> None:
        await trio.sleep_forever()

    async with open_node("n") as node:
        pid = node.spawn(wait)
        proc = node.find(pid)
        await trio.testing.wait_all_tasks_blocked()  # started: its scope made
        # (A spawn burst is GC-bound: links, monitors, names, options stay class
        # defaults, no dict of its own, until a process has some.)
        own = [r for r in gc.get_referents(proc) if type(r) is dict and r is not proc.listeners]
        assert own == []
