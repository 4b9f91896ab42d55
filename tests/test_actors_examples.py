"""The worked examples of the actor references, as tests (issue 15): each follows the
reference's program, with ``select`` and ``after`` where it uses them."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from pipekit.actors import (
    CANCEL,
    EXIT,
    LINK_DOWN,
    ActorError,
    Message,
    Pid,
    after,
    channel,
    open_node,
    process,
    registry,
    select,
)

# -- helpers: the reference's worker entries ---------------------------------------------


async def echo_worker() -> bool:
    ch = process.listen("echo", message=True)
    msg = await ch.receive()
    sender = msg.sender
    if sender is not None:
        process.send(sender, "reply", msg.payload)
    return True


async def events_exit_worker() -> str:
    await trio.sleep(0.1)
    return "exited"


async def error_exit_worker() -> None:
    await trio.sleep(0.1)
    raise RuntimeError("error_exit_worker failed")


async def long_worker() -> str:
    await trio.sleep(60)
    return "late"


# -- the examples --------------------------------------------------------------------------


async def test_echo_via_message_mode_and_reply(autojump_clock: trio.testing.MockClock) -> None:
    async def main() -> Any:
        replies = process.listen("reply")
        pid = process.spawn_monitored(echo_worker)
        process.send(pid, "echo", "hello from parent")
        got = await select([replies.case_receive(), after("3s").case_receive()])
        assert got.channel is replies
        exit_event = await process.events().receive()
        assert exit_event.kind == EXIT and exit_event.result is True
        return got.value

    async with open_node() as node:
        assert await node.run(main) == "hello from parent"


async def test_a_topic_listener_receives_the_payload_directly() -> None:
    async def worker() -> bool:
        msg = await process.listen("messages").receive()
        return bool(msg == "hello from parent")

    async def main() -> Any:
        pid = process.spawn_monitored(worker)
        process.send(pid, "messages", "hello from parent")
        return (await process.events().receive()).result

    async with open_node() as node:
        assert await node.run(main) is True


async def test_inbox_and_a_topic_listener_under_select() -> None:
    """The reference's "Receiving via Inbox": select over a topic and the inbox."""

    async def main() -> list[tuple[str, Any]]:
        inbox_ch = process.inbox()
        specific_ch = process.listen("specific_topic")
        me = process.pid()
        process.send(me, "specific_topic", "s1")
        process.send(me, "anything", "i1")
        process.send(me, "else", "i2")
        process.send(me, "specific_topic", "s2")
        seen: list[tuple[str, Any]] = []
        for _ in range(4):
            result = await select([specific_ch.case_receive(), inbox_ch.case_receive()])
            if result.channel is specific_ch:
                seen.append(("specific", result.value))
            elif result.channel is inbox_ch:
                msg: Message = result.value
                seen.append((msg.topic, msg.payload))
        return seen

    async with open_node() as node:
        seen = await node.run(main)
    assert sorted(seen) == [
        ("anything", "i1"),
        ("else", "i2"),
        ("specific", "s1"),
        ("specific", "s2"),
    ]
    # each channel kept its order
    assert [v for k, v in seen if k == "specific"] == ["s1", "s2"]


async def test_spawn_monitored_with_a_timeout_gets_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reference's "Spawn with Monitoring"."""

    async def main() -> Any:
        events_ch = process.events()
        worker_pid = process.spawn_monitored(events_exit_worker)
        timeout = after("3s")
        result = await select([events_ch.case_receive(), timeout.case_receive()])
        if result.channel is timeout:
            return "timeout waiting for EXIT event"
        event = result.value
        assert event.kind == EXIT and event.sender == worker_pid and event.error is None
        return event.result

    async with open_node() as node:
        assert await node.run(main) == "exited"


async def test_trap_links_with_a_timeout_gets_link_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reference's "Handling LINK_DOWN Events", timeout included."""

    async def main() -> Any:
        process.set_options(trap_links=True)
        if not process.get_options().trap_links:
            return "trap_links should be true"
        events_ch = process.events()
        error_pid = process.spawn_linked(error_exit_worker)
        timeout = after("2s")
        result = await select([events_ch.case_receive(), timeout.case_receive()])
        if result.channel is timeout:
            return "timeout waiting for LINK_DOWN"
        event = result.value
        if event.kind == LINK_DOWN:
            assert event.sender == error_pid
            return True
        return f"expected LINK_DOWN, got: {event.kind}"

    async with open_node() as node:
        assert await node.run(main) is True


async def test_a_request_without_response_times_out_with_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reference's request-response pattern, when the responder stays silent."""

    async def silent() -> None:
        await process.listen("request").receive()
        await trio.sleep_forever()

    async def send_request(target: Pid, data: Any) -> Any:
        inbox = process.inbox()
        process.send(target, "request", {"data": data, "reply_to": process.pid()})
        timeout = after("5s")
        result = await select([inbox.case_receive(), timeout.case_receive()])
        if result.channel is timeout:
            return "timeout"
        return result.value.payload

    async def main() -> tuple[Any, float]:
        start = trio.current_time()
        answer = await send_request(process.spawn(silent), 42)
        return answer, trio.current_time() - start

    async with open_node() as node:
        answer, took = await node.run(main)
    assert answer == "timeout" and took == pytest.approx(5)


async def test_request_response_with_reply_to(autojump_clock: trio.testing.MockClock) -> None:
    async def responder() -> None:
        msg = await process.listen("request").receive()
        process.send(msg["reply_to"], "response", msg["data"] * 2)

    async def main() -> Any:
        inbox = process.inbox()
        process.send(process.spawn(responder), "request", {"data": 21, "reply_to": process.pid()})
        result = await select([inbox.case_receive(), after("5s").case_receive()])
        assert result.channel is inbox
        assert result.value.topic == "response"
        return result.value.payload

    async with open_node() as node:
        assert await node.run(main) == 42


async def test_a_select_that_did_not_fire_took_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def main() -> list[Any]:
        me = process.pid()
        a = process.listen("a")
        timeout = after("1s")
        got = await select([a.case_receive(), timeout.case_receive()])
        assert got.channel is timeout
        process.send(me, "a", "later")
        nothing = await select([timeout.case_receive()], default=True)
        return [nothing.default, await a.receive()]

    async with open_node() as node:
        assert await node.run(main) == [True, "later"]


async def test_select_default_returns_at_once_when_no_message_is_there() -> None:
    async def main() -> bool:
        got = await select([process.listen("t").case_receive()], default=True)
        return bool(got.default)

    async with open_node() as node:
        assert await node.run(main) is True


async def test_a_blocked_select_gets_a_message_sent_later() -> None:
    async def main() -> Any:
        ch = process.listen("late")
        me = process.pid()

        async def later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            process.send(me, "late", "here")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            got = await select([ch.case_receive(), process.events().case_receive()])
        return got.channel is ch, got.value

    async with open_node() as node:
        assert await node.run(main) == (True, "here")


async def test_a_process_channel_cannot_be_closed_or_sent_into() -> None:
    async def main() -> None:
        ch = process.listen("t")
        with pytest.raises(ActorError, match="cannot be closed"):
            ch.close()
        with pytest.raises(TypeError, match="process's"):
            ch.send_nowait(1)
        with pytest.raises(TypeError, match="process's"):
            ch.case_send(1)

    async with open_node() as node:
        await node.run(main)


async def test_the_event_loop_pattern(autojump_clock: trio.testing.MockClock) -> None:
    """The reference's "Event Loop Pattern": select over tasks, inbox and events until
    CANCEL, then return what was processed."""

    processed: list[Any] = []
    inbox_seen: list[tuple[str, Any]] = []

    async def run() -> dict[str, int]:
        tasks = process.listen("tasks")
        inbox = process.inbox()
        events = process.events()
        state = {"running": True, "tasks_processed": 0}
        while state["running"]:
            result = await select(
                [tasks.case_receive(), inbox.case_receive(), events.case_receive()]
            )
            if result.channel is tasks:
                processed.append(result.value)
                state["tasks_processed"] += 1
            elif result.channel is inbox:
                msg = result.value
                inbox_seen.append((msg.topic, msg.payload))
            elif result.channel is events and result.value.kind == CANCEL:
                state["running"] = False
        return {"processed": state["tasks_processed"]}

    async def main() -> Any:
        pid = process.spawn_monitored(run)
        for i in range(5):
            process.send(pid, "tasks", i)
            await trio.sleep(0.1)
        process.send(pid, "status", "ping")
        await trio.sleep(0.1)
        process.cancel(pid, "5s")
        event = await process.events().receive()
        return event.result

    async with open_node() as node:
        assert await node.run(main) == {"processed": 5}
    assert processed == [0, 1, 2, 3, 4] and inbox_seen == [("status", "ping")]


async def test_work_distribution_pattern(autojump_clock: trio.testing.MockClock) -> None:
    """The reference's "Work Distribution Pattern": monitored workers take items in
    turn; the manager collects their EXITs."""

    async def worker(worker_id: int, count: int) -> list[int]:
        work = process.listen("work")
        return [await work.receive() * 10 + worker_id for _ in range(count)]

    async def manager(items: list[int], worker_count: int) -> list[int]:
        per = len(items) // worker_count
        workers = [process.spawn_monitored(worker, None, i, per) for i in range(worker_count)]
        for index, item in enumerate(items):
            process.send(workers[index % worker_count], "work", item)
        results: list[int] = []
        events = process.events()
        for _ in workers:
            event = await events.receive()
            assert event.kind == EXIT
            results.extend(event.result)
        return sorted(results)

    async with open_node() as node:
        got = await node.run(manager, list(range(12)), 3)
    assert got == sorted(item * 10 + item % 3 for item in range(12))


async def test_supervision_tree_with_links_and_monitors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The reference's "Supervision Tree with Links and Monitors": a hand-written
    supervisor restarts monitored children on EXIT and, trapping links, hears of its
    linked database going down."""

    starts: list[int] = []

    async def app_worker(args: dict[str, int]) -> None:
        starts.append(args["id"])
        await trio.sleep(1 + args["id"])
        raise RuntimeError(f"worker {args['id']} failed")

    async def database() -> None:
        registry.register("database")
        await trio.sleep(2.5)
        raise RuntimeError("database lost")

    async def supervisor() -> list[Any]:
        process.set_options(trap_links=True)
        children: dict[int, Pid] = {}
        events = process.events()

        def start_child(child_id: int) -> None:
            children[child_id] = process.spawn_monitored(app_worker, None, {"id": child_id})

        for i in range(1, 4):
            start_child(i)
        database_pid = registry.lookup("database")
        process.link(database_pid)
        seen: list[Any] = []
        timeout = after("4.5s")
        while True:
            result = await select([events.case_receive(), timeout.case_receive()])
            if result.channel is timeout:
                return seen
            event = result.value
            if event.kind == EXIT:
                for child_id, pid in list(children.items()):
                    if pid == event.sender:
                        start_child(child_id)
                        seen.append(("restarted", child_id))
            elif event.kind == LINK_DOWN:
                seen.append(("link down", event.sender == database_pid))

    async with open_node() as node:
        node.spawn(database)
        await trio.testing.wait_all_tasks_blocked()
        seen = await node.run(supervisor)
    # worker i fails every 1 + i seconds: 1 at 2 s and 4 s, 2 at 3 s, 3 at 4 s; the
    # database at 2.5 s
    restarts = [("restarted", 1), ("restarted", 1), ("restarted", 2), ("restarted", 3)]
    assert sorted(seen) == sorted([*restarts, ("link down", True)])
    assert sorted(starts) == [1, 1, 1, 2, 2, 3, 3]


async def test_a_pipekit_channel_works_between_the_tasks_of_one_process() -> None:
    async def main() -> list[int]:
        ch = channel(2)
        got: list[int] = []
        async with trio.open_nursery() as nursery:

            async def produce() -> None:
                for i in range(5):
                    await ch.send(i)
                ch.close()

            nursery.start_soon(produce)
            async for item in ch:
                got.append(item)
        return got

    async with open_node() as node:
        assert await node.run(main) == [0, 1, 2, 3, 4]
