"""The ``"process"`` host: a child node over the stdio adapter, started on first use,
reused, and gone when the parent node closes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from node_entries import crash, echo, os_pid

from pipekit.actors import EXIT, LinkedFailure, RemoteFailure, open_node, process

GUARD = 20


@pytest.fixture(autouse=True)
def child_imports_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child node imports the entries from this directory."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, *sys.path]))


async def test_ping_pong_with_the_process_host() -> None:
    with trio.fail_after(GUARD):
        async with open_node("main") as node:

            async def client() -> list[int]:
                server = process.spawn(echo, "process")
                for i in range(50):
                    process.send(server, "echo", i)
                replies = process.listen("reply")
                return [await replies.receive() for _ in range(50)]

            assert await node.run(client) == list(range(50))
            assert node.connected() == ["main.process"]


async def test_the_child_node_is_reused_and_exits_with_the_parent() -> None:
    with trio.fail_after(GUARD):
        async with open_node("main") as node:

            async def parent() -> list[Any]:
                pids = []
                for _ in range(2):
                    process.spawn_monitored(os_pid, "process")
                    pids.append((await process.events().receive()).result)
                return pids

            first, second = await node.run(parent)
            assert first == second != os.getpid()
        with pytest.raises(ProcessLookupError):  # reaped: no orphan, no zombie
            os.kill(first, 0)


async def test_a_crash_in_the_process_host_reaches_a_linked_parent() -> None:
    with trio.fail_after(GUARD):
        async with open_node("main") as node:

            async def parent() -> None:
                process.spawn_linked(crash, "process")
                await trio.sleep_forever()

            with pytest.raises(LinkedFailure) as info:
                await node.run(parent)
            assert isinstance(info.value.reason, RemoteFailure)


async def test_monitor_of_a_process_host_child_sees_exit() -> None:
    with trio.fail_after(GUARD):
        async with open_node("main") as node:

            async def parent() -> Any:
                child = process.spawn_monitored(os_pid, "process")
                event = await process.events().receive()
                return event.kind, event.sender == child

            assert await node.run(parent) == (EXIT, True)
