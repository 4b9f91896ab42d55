"""pipekit from asyncio: a clear error where trio is needed, and the documented way
(a thread: ``asyncio.to_thread(pipeline.run)``, or iterating in one) works."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import pipekit as pk

ROOT = Path(__file__).resolve().parent.parent


def test_arun_under_asyncio_says_pipekit_runs_on_trio_and_what_to_do() -> None:
    p = pk.source(range(3)) | pk.map(str)
    with pytest.raises(RuntimeError) as info:
        asyncio.run(p.arun())
    message = str(info.value)
    assert "pipekit runs on trio" in message
    assert "asyncio.to_thread(pipeline.run)" in message


def test_async_for_under_asyncio_says_the_same() -> None:
    async def main() -> None:
        async for _ in pk.source(range(3)) | pk.map(str):
            pass

    with pytest.raises(RuntimeError, match="pipekit runs on trio"):
        asyncio.run(main())


def test_arun_outside_any_event_loop_points_to_run() -> None:
    coro = (pk.source(range(3)) | pk.map(str)).arun()
    with pytest.raises(RuntimeError, match=r"inside trio.*pipeline\.run\(\)"):
        coro.send(None)


def test_run_in_a_thread_from_asyncio() -> None:
    async def main() -> Any:
        p = pk.source(range(1000)) | pk.thread(lambda x: x + 1, workers=2)
        return await asyncio.to_thread(p.run)

    assert asyncio.run(main()) == list(range(1, 1001))


def test_iterating_in_a_thread_from_asyncio_and_stopping_early() -> None:
    p = pk.source(itertools.count()) | pk.map(lambda x: x * 2)

    async def main() -> list[int]:
        items = iter(p)
        try:
            return [await asyncio.to_thread(next, items) for _ in range(5)]
        finally:
            await asyncio.to_thread(items.close)

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    assert {str(st.state) for st in p.stats.values()} == {"done"}


def test_the_asyncio_example_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "asyncio_pipeline.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "whole: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n"
        "stream: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121]\n"
        "asyncio ran on: True\n"
    )
