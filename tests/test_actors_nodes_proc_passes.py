"""How the ``"process"`` host's link meets the scheduler: a ping-pong with a process
on the child node wakes neither of the parent's link tasks per message (the process
pipe hands its framed pipe's ``send_nowait`` and ``receive_with`` to the link)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from node_entries import echo
from sched_helpers import StepCounter

from pipekit.actors import open_node, process

ROUND_TRIPS = 100


@pytest.fixture(autouse=True)
def child_imports_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child node imports the entries from this directory."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, *sys.path]))


async def ping_pong_steps() -> Counter[str]:
    """Steps of the parent's tasks over ``ROUND_TRIPS`` round trips with an echo
    process on the child node."""
    counter = StepCounter()
    with trio.fail_after(20):
        async with open_node("main") as node:

            async def client() -> list[Any]:
                server = process.spawn(echo, "process")
                replies = process.listen("reply")
                got = []
                for i in range(-5, ROUND_TRIPS):  # (the first ones open the way)
                    if i == 0:
                        trio.lowlevel.add_instrument(counter)
                    process.send(server, "echo", i)
                    got.append(await replies.receive())
                trio.lowlevel.remove_instrument(counter)
                return got

            assert await node.run(client) == list(range(-5, ROUND_TRIPS))
    return counter.steps


async def test_a_ping_pong_with_the_process_host_wakes_no_link_task_per_message() -> None:
    steps = await ping_pong_steps()
    # The process pipe's reader acts on each reply and the send goes to the pipe from
    # the sender: the link's writer and reader stay parked.
    link_steps = steps["pipekit.actors._link.Link._writer"]
    link_steps += steps["pipekit.actors._link.Link.run.<locals>.read_then_stop"]
    assert link_steps < 10, steps
    assert steps["pipekit.kernel._framedriver.FramedDriver._reader"] >= ROUND_TRIPS


async def test_a_send_to_the_process_host_writes_to_the_child_without_the_pipe_writer() -> None:
    steps = await ping_pong_steps()
    # Written to the child's stdin by the send itself (as on a socket), not handed to
    # the framed pipe's writer task.
    assert steps["pipekit.kernel._framedriver.FramedDriver._writer"] < 10, steps
