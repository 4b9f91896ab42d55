"""Processes on the "thread" host: blocking code with the same process API (issue 15)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.actors import (
    EXIT,
    LinkedFailure,
    NodeStats,
    Pid,
    SpawnError,
    Terminated,
    open_node,
    process,
    registry,
)

NOTHING = NodeStats(processes=0, names=0, links=0, monitors=0)


def blocking_echo() -> str:
    """A plain function: receives by blocking its own thread."""
    assert threading.current_thread() is not threading.main_thread()
    msg = process.listen("echo", message=True).receive_blocking()
    process.send(msg.sender, "reply", msg.payload.upper())
    return "echoed"


async def test_a_thread_process_receives_replies_and_returns() -> None:
    async def main() -> tuple[Any, Any, Pid]:
        pid = process.spawn_monitored(blocking_echo, "thread")
        process.send(pid, "echo", "hello")
        reply = await process.listen("reply").receive()
        event = await process.events().receive()
        assert event.kind == EXIT and event.sender == pid
        return reply, event.result, pid

    async with open_node("app") as node:
        reply, result, pid = await node.run(main)
        assert node.stats() == NOTHING
    assert (reply, result, pid.host) == ("HELLO", "echoed", "thread")


async def test_the_process_api_works_from_the_thread() -> None:
    async def local_child(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x + 1

    def worker() -> list[Any]:
        me = process.pid()
        registry.register("threaded")
        child = process.spawn_monitored(local_child, None, 41)
        event = process.events().receive_blocking()
        return [registry.lookup("threaded") == me, event.sender == child, event.result]

    async def main() -> Any:
        process.spawn_monitored(worker, "thread")
        return (await process.events().receive()).result

    async with open_node() as node:
        assert await node.run(main) == [True, True, 42]
        assert node.stats() == NOTHING


async def test_a_failing_thread_process_takes_its_link_down() -> None:
    def broken() -> None:
        raise OSError("disk gone")

    async def main() -> None:
        process.spawn_linked(broken, "thread")
        await trio.sleep_forever()

    async with open_node() as node:
        with pytest.raises(LinkedFailure, match="disk gone"):
            await node.run(main)


async def test_terminate_wakes_a_thread_blocked_in_receive() -> None:
    def waiter(parent: Pid) -> None:
        never = process.listen("never")
        process.send(parent, "ready")
        never.receive_blocking()  # terminated before or while it blocks: both raise

    async def main() -> Any:
        pid = process.spawn_monitored(waiter, "thread", process.pid())
        await process.listen("ready").receive()
        process.terminate(pid)
        return (await process.events().receive()).error

    async with open_node() as node:
        with trio.fail_after(10):
            error = await node.run(main)
    assert isinstance(error, Terminated)


async def test_a_terminated_thread_process_stops_at_its_next_call() -> None:
    go = threading.Event()
    after_terminate: list[BaseException] = []

    def busy() -> None:
        go.wait(10)  # blocking code the runtime cannot interrupt
        try:
            process.send(process.pid(), "t", 1)
        except Terminated as exc:
            after_terminate.append(exc)
            raise

    async def main() -> Any:
        pid = process.spawn_monitored(busy, "thread")
        process.terminate(pid)
        go.set()
        return (await process.events().receive()).error

    async with open_node() as node:
        with trio.fail_after(10):
            error = await node.run(main)
    assert isinstance(error, Terminated) and len(after_terminate) == 1


async def test_closing_the_node_stops_a_thread_blocked_in_receive() -> None:
    ready = threading.Event()

    def waiter() -> None:
        inbox = process.inbox()
        ready.set()
        inbox.receive_blocking()

    with trio.fail_after(10):
        async with open_node() as node:
            node.spawn(waiter, "thread")
            await trio.to_thread.run_sync(ready.wait)
    assert node.stats() == NOTHING


async def test_an_async_entry_on_the_thread_host_raises_spawn_error() -> None:
    async def coro() -> None:
        pass

    async with open_node() as node:
        with pytest.raises(SpawnError, match="async function"):
            node.spawn(coro, "thread")


async def test_receive_blocking_in_trio_raises_runtime_error() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="await receive"):
            process.listen("t").receive_blocking()

    async with open_node() as node:
        await node.run(main)
