"""How a one-item call meets the parent's scheduler: a warm pool's ``map([x])`` or
``submit(x)``, and ``Worker.call``, cost two task steps per call (the pipe's reader and
the caller); the pool's own tasks for the worker (its receive loop, its send loop) stay
parked, the reader handing the answer to the waiting run itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
from pool_workers import square
from sched_helpers import StepCounter

import pipekit as pk

CALLS = 100
WARM = 10


async def count_steps(call: Callable[[int], Awaitable[Any]]) -> Counter[str]:
    """The task steps of ``CALLS`` calls in a row, after ``WARM`` uncounted ones."""
    counter = StepCounter()
    for i in range(-WARM, CALLS):
        if i == 0:
            trio.lowlevel.add_instrument(counter)
        await call(i)
    trio.lowlevel.remove_instrument(counter)
    return counter.by_last_name()


@pytest.mark.parametrize("how", ["map", "submit"])
async def test_a_one_item_pool_call_steps_only_the_pipe_reader_and_the_caller(how: str) -> None:
    with trio.fail_after(30):
        async with pk.WorkerPool(square, 1) as pool:

            async def call(i: int) -> None:
                if how == "map":
                    assert await pool.map([i]) == [i * i]
                else:
                    assert await pool.submit(i) == i * i

            steps = await count_steps(call)
    caller = trio.lowlevel.current_task().name.rpartition(".")[2]
    assert steps["_reader"] <= CALLS + 5, steps
    assert steps[caller] <= CALLS + 5, steps
    # Nothing else runs per call: not the worker's receive loop (before receive_with:
    # one step per call), nor its send loop.
    assert sum(steps.values()) - steps["_reader"] - steps[caller] < 10, steps


ASYNC_ECHO = """
async def main(inp, out):
    async for batch in inp.batches():
        await out.send_batch(batch)
"""


async def test_worker_call_steps_only_the_pipe_reader_and_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "echo.py"
    path.write_text(ASYNC_ECHO)
    with trio.fail_after(30):
        async with pk.run(f"{path}:main") as worker:

            async def call(i: int) -> None:
                assert await worker.call({"i": i}) == {"i": i}

            steps = await count_steps(call)
    caller = trio.lowlevel.current_task().name.rpartition(".")[2]
    assert steps["_reader"] <= CALLS + 5, steps
    assert steps[caller] <= CALLS + 5, steps
    assert sum(steps.values()) - steps["_reader"] - steps[caller] < 10, steps
