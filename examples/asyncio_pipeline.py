"""Drive a pipekit pipeline from an asyncio program: ``python examples/asyncio_pipeline.py``.

pipekit runs on trio, and one thread runs one event loop. From asyncio, give the
pipeline a thread of its own: ``Pipeline.run()`` starts a trio loop there and returns
the result, and iterating a pipeline (``for x in pipeline``) hands its output over as
it comes; ``close()`` on the iterator stops every stage, from any thread.
"""

from __future__ import annotations

import asyncio
import itertools

import pipekit as pk


def square(x: int) -> int:
    return x * x


async def whole_result() -> list[int]:
    """The whole result at once: run() in a worker thread; the asyncio loop goes on."""
    pipeline = pk.source(range(10)) | pk.map(square)
    result: list[int] = await asyncio.to_thread(pipeline.run)
    return result


async def stream() -> list[int]:
    """An endless stream, a batch at a time (one thread hop per batch, not per item)."""
    items = iter(pk.source(itertools.count()) | pk.map(square) | pk.batch(4))
    got: list[int] = []
    try:
        while len(got) < 12:
            batch = await asyncio.to_thread(next, items)
            got.extend(batch)
    finally:
        await asyncio.to_thread(items.close)  # stops every stage, waits for the run
    return got


async def main() -> None:
    ticks = 0

    async def ticker() -> None:  # the asyncio loop keeps running meanwhile
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    print("whole:", await whole_result())
    print("stream:", await stream())
    tick_task.cancel()
    print("asyncio ran on:", ticks > 0)


if __name__ == "__main__":
    asyncio.run(main())
