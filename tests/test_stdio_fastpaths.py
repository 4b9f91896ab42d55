"""A process pipe's ``send_nowait`` and ``receive_with``: its framed pipe's, on a framed
channel; on a raw one ``send_nowait`` refuses and ``receive_with`` is ``receive_batch``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from pipekit.adapters.stdio import ProcessSpec, open_process

GUARD = 20
ECHO_WORKER = """
def main(messages):
    yield from messages
"""


class Refused(Exception):
    pass


@pytest.fixture
def echo_spec(tmp_path: Path) -> ProcessSpec:
    path = tmp_path / "echo_worker.py"
    path.write_text(ECHO_WORKER)
    env = {k: v for k, v in os.environ.items() if k != "PIPEKIT_FD"}
    return ProcessSpec(
        (sys.executable, "-m", "pipekit", "worker", str(path)), mode="frames", env=env
    )


async def test_send_nowait_and_receive_with_round_trip_on_a_framed_process(
    echo_spec: ProcessSpec,
) -> None:
    got: list[Any] = []

    def take(messages: list[Any]) -> int:
        """Takes each message up to "last", which it leaves."""
        for at, message in enumerate(messages):
            if message == "last":
                return at
            got.append(message)
        return len(messages)

    with trio.fail_after(GUARD):
        async with open_process(echo_spec) as pipe:
            await pipe.send("hello")  # (the handshake first: send_nowait needs it done)
            assert await pipe.receive() == "hello"
            assert pipe.send_nowait({"i": 1})
            assert pipe.send_nowait({"i": 2})
            await pipe.send("last")
            for _ in range(3):  # (what arrived before a call is returned by it)
                got.extend(await pipe.receive_with(take))
                if "last" in got:
                    break
            assert got == [{"i": 1}, {"i": 2}, "last"]


async def test_a_receive_with_handler_error_is_raised_as_it_is(echo_spec: ProcessSpec) -> None:
    def refuse(messages: list[Any]) -> int:
        raise Refused("no")

    with trio.fail_after(GUARD):
        async with open_process(echo_spec) as pipe:
            await pipe.send("hello")
            assert await pipe.receive() == "hello"
            await pipe.send("again")
            with pytest.raises(Refused):
                await pipe.receive_with(refuse)


async def test_a_raw_process_refuses_send_nowait_and_receives_batches() -> None:
    with trio.fail_after(GUARD):
        async with open_process(["cat"], mode="lines") as pipe:
            assert pipe.send_nowait("one") is False
            await pipe.send("two")
            assert await pipe.receive_with(lambda ms: pytest.fail("not called")) == ["two"]


async def test_send_nowait_on_a_closed_process_pipe_raises_closed() -> None:
    with trio.fail_after(GUARD):
        async with open_process(["cat"], mode="lines") as pipe:
            await pipe.aclose()
            with pytest.raises(trio.ClosedResourceError, match="closed"):
                pipe.send_nowait("one")
