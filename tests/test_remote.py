"""A peer as a module: RemoteModule in a kernel and ``pk.remote`` in a pipeline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

import pipekit as pk
from pipekit.adapters import tcp
from pipekit.kernel import FramedPipe, ModuleError, Pipe, RemoteError, RemoteModule, open_pipe_pair

HANG_GUARD = 10


async def doubler(pipe: Pipe) -> None:
    """A peer that doubles every number and ends when its input ends."""
    async for batch in pipe.batches():
        await pipe.send_batch([x * 2 for x in batch])
    await pipe.end()


async def test_remote_stage_sends_messages_to_the_peer_and_emits_its_replies_in_order() -> None:
    near, far = open_pipe_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(doubler, far)
        with trio.fail_after(HANG_GUARD):
            result = await (pk.source(range(50_000)) | pk.remote(near) | pk.collect()).arun()
    assert result == [x * 2 for x in range(50_000)]


async def test_remote_stage_over_tcp_with_a_connect_function() -> None:
    async with tcp.listen(handler=doubler) as listener:
        host, port = listener.address
        with trio.fail_after(HANG_GUARD):
            result = await (
                pk.source(range(20_000)) | pk.remote(lambda: tcp.connect(host, port)) | pk.collect()
            ).arun()
    assert result == [x * 2 for x in range(20_000)]


async def test_remote_leading_a_pipeline_is_a_source_and_its_input_is_ended_at_once() -> None:
    near, far = open_pipe_pair()
    ended = trio.Event()

    async def producer() -> None:
        await far.send_batch(["a", "b", "c"])
        await far.end()
        with pytest.raises(trio.EndOfChannel):
            await far.receive()
        ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        with trio.fail_after(HANG_GUARD):
            result = await (pk.remote(near) | pk.collect()).arun()
            await ended.wait()
    assert result == ["a", "b", "c"]


async def test_a_peers_error_fails_the_pipeline_naming_the_stage() -> None:
    async def failing(pipe: FramedPipe) -> None:
        await pipe.receive()
        raise ValueError("peer exploded")

    async with tcp.listen(handler=failing) as listener:
        host, port = listener.address
        pipeline = (
            pk.source(range(10))
            | pk.remote(lambda: tcp.connect(host, port), name="exploder")
            | pk.collect()
        )
        with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
            await pipeline.arun()
    assert "exploder" in info.value.module
    cause = info.value.__cause__
    assert isinstance(cause, RemoteError)
    assert "peer exploded" in str(cause)


async def test_an_upstream_failure_fails_the_peers_input_with_the_cause() -> None:
    near, far = open_pipe_pair()
    seen: list[BaseException] = []

    async def peer() -> None:
        try:
            async for _ in far.batches():
                pass
        except Exception as exc:
            seen.append(exc)
        await far.end()

    def explode(x: int) -> int:
        if x == 5:
            raise KeyError("upstream broke")
        return x

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError):
            await (pk.source(range(10)) | pk.map(explode) | pk.remote(near) | pk.collect()).arun()
    # The peer learns that its input failed: with the cause, or - when the kernel
    # cancelled the stage first - with kind "cancelled".
    assert len(seen) == 1
    assert "upstream broke" in str(seen[0]) or "cancelled" in str(seen[0])


async def test_restart_policy_reconnects_through_the_connect_function() -> None:
    connections = 0

    async def flaky(pipe: FramedPipe) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            raise RuntimeError("first connection dies")
        await doubler(pipe)

    async with tcp.listen(handler=flaky) as listener:
        host, port = listener.address
        with trio.fail_after(HANG_GUARD):
            result = await (
                pk.source(range(100_000))
                | pk.remote(lambda: tcp.connect(host, port), restart="on-failure", backoff=0.01)
                | pk.collect()
            ).arun()
    assert connections == 2
    # Messages the dead peer had taken are lost with it, and that loss was reported as a
    # failure (which the policy restarted); everything after the reconnect arrives.
    assert result == sorted(result)
    assert set(result) <= {x * 2 for x in range(100_000)}
    assert len(result) > 50_000
    assert result[-1] == 199_998


async def test_a_module_over_an_open_pipe_refuses_to_run_twice() -> None:
    near, _far = open_pipe_pair()
    module = RemoteModule(near, source=True)
    out_near, _out_far = open_pipe_pair()
    await near.end()
    with pytest.raises(RuntimeError, match="cannot run twice"):
        for _ in range(2):
            with trio.move_on_after(0.5):
                await module.run({"out": out_near})


@asynccontextmanager
async def _never_used() -> AsyncIterator[Pipe]:  # pragma: no cover - a typing check only
    near, _ = open_pipe_pair()
    yield near


def test_remote_accepts_any_pipe_opener() -> None:
    stage = pk.remote(_never_used, name="typed")
    assert stage.label == "remote(typed)"


async def test_a_peer_over_a_connection_learns_that_the_stage_was_stopped() -> None:
    # An upstream failure cancels the stage, and with it the connection it opened: the
    # peer must still get the ERROR (kind "cancelled", or the cause), not a bare close.
    got_first = trio.Event()
    seen: list[BaseException] = []
    done = trio.Event()

    async def peer(pipe: FramedPipe) -> None:
        try:
            async for _ in pipe.batches():
                got_first.set()
        except Exception as exc:
            seen.append(exc)
        done.set()

    async def numbers() -> AsyncIterator[int]:
        yield 1
        await got_first.wait()  # the peer is connected and reading
        yield 2

    def explode(x: int) -> int:
        if x == 2:
            raise KeyError("upstream broke")
        return x

    async with tcp.listen(handler=peer) as listener:
        host, port = listener.address
        pipeline = (
            pk.source(numbers)
            | pk.map(explode)
            | pk.remote(lambda: tcp.connect(host, port))
            | pk.collect()
        )
        with trio.fail_after(HANG_GUARD):
            with pytest.raises(ModuleError):
                await pipeline.arun()
            await done.wait()
    [exc] = seen
    assert isinstance(exc, RemoteError), repr(exc)
    assert "upstream broke" in str(exc) or exc.kind == "cancelled"
