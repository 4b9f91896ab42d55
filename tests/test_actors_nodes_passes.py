"""How a node link meets the scheduler: one message at a time across nodes wakes
neither the link's writer task (a lone send goes to the pipe from the sender) nor its
reader task (the pipe's reader acts on what arrives while the link's reader waits)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.lowlevel
from sched_helpers import StepCounter

from pipekit.actors import open_node, process

ROUND_TRIPS = 100


async def echo() -> None:
    msgs = process.listen("echo", message=True)
    while True:
        msg = await msgs.receive()
        process.send(msg.sender, "reply", msg.payload)


async def test_a_ping_pong_across_nodes_wakes_no_link_task_per_message(tmp_path: Path) -> None:
    counter = StepCounter()
    with trio.fail_after(10):
        async with open_node("a") as a, open_node("b") as b:
            await b.connect(await a.listen(str(tmp_path / "a.sock")))
            server = a.spawn(echo)

            async def client() -> list[Any]:
                replies = process.listen("reply")
                got = []
                for i in range(-5, ROUND_TRIPS):  # (the first ones open the way)
                    if i == 0:
                        trio.lowlevel.add_instrument(counter)
                    process.send(server, "echo", i)
                    got.append(await replies.receive())
                trio.lowlevel.remove_instrument(counter)
                return got

            assert await b.run(client) == list(range(-5, ROUND_TRIPS))
    steps = counter.by_last_name()
    # Per round trip: each node's pipe reader and each actor run; the links' own tasks
    # (2 writers, 2 readers) stay parked.
    assert steps["_writer"] + steps["read_then_stop"] < 10, steps
    assert steps["_reader"] >= 2 * ROUND_TRIPS  # (what the counter sees: the pipe readers)
