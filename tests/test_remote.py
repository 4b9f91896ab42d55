"""A peer as a module: RemoteModule in a kernel and ``pk.remote`` in a pipeline."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NoReturn

import pytest
import trio
import trio.testing

import pipekit as pk
from pipekit.adapters import tcp
from pipekit.kernel import (
    ErrorKind,
    FramedPipe,
    ModuleError,
    Pipe,
    PipeStats,
    RemoteError,
    RemoteModule,
    framed_pipe,
    open_pipe_pair,
)

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
    assert exc.kind in ("module_failed", "cancelled"), exc.kind
    assert "upstream broke" in str(exc) or exc.kind == "cancelled"


# -- the sender is told of loss (closing waits for the peer's END or ERROR) -------------


async def test_a_sender_whose_peer_crashed_is_told_when_it_leaves_the_connect_block() -> None:
    # The client sends 5,000 messages and ENDs without reading anything; the server's
    # handler takes 100 and raises. Leaving the block must not succeed silently.
    taken = 0

    async def crashes_after_100(pipe: FramedPipe) -> None:
        nonlocal taken
        while taken < 100:  # a batch holds what has arrived: ask for no more than is left
            taken += len(await pipe.receive_batch(100 - taken))
        raise ValueError("handler crashed at message 100")

    async with tcp.listen(handler=crashes_after_100) as listener:
        host, port = listener.address
        with trio.fail_after(HANG_GUARD), pytest.raises(RemoteError) as info:
            async with tcp.connect(host, port) as pipe:
                for i in range(5000):
                    await pipe.send(i)
                await pipe.end()
    assert (info.value.kind, info.value.message) == ("ValueError", "handler crashed at message 100")
    assert taken == 100


async def test_a_sender_whose_peer_ended_after_taking_everything_leaves_quietly() -> None:
    got: list[int] = []

    async def takes_all(pipe: FramedPipe) -> None:
        async for batch in pipe.batches():
            got.extend(batch)

    async with tcp.listen(handler=takes_all) as listener:
        host, port = listener.address
        with trio.fail_after(HANG_GUARD):
            async with tcp.connect(host, port) as pipe:
                await pipe.send_batch(list(range(5000)))
    assert got == list(range(5000))


FAILING_SERVER = """
import sys, trio
from pipekit.adapters import tcp

async def failing(pipe):
    taken = 0
    async for batch in pipe.batches():
        taken += len(batch)
        if taken >= int(sys.argv[1]):
            raise ValueError("peer exploded")

async def main():
    async with tcp.listen("127.0.0.1", 0, handler=failing) as listener:
        print(listener.address[1], flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


@pytest.mark.parametrize(("taken", "size"), [(1, 10), (100, 1000)])
async def test_a_peers_exception_always_wins_over_the_reset_that_follows_it(
    taken: int, size: int
) -> None:
    # The peer (a process of its own, as in production) fails while the pipeline is
    # still sending to it: its ERROR, not the broken pipe or reset that follows, is what
    # the pipeline reports. Every time: the race was lost in 1-7 of 20 runs before.
    server = await trio.lowlevel.open_process(
        [sys.executable, "-c", FAILING_SERVER, str(taken)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        with trio.fail_after(HANG_GUARD):
            line = b""
            while not line.endswith(b"\n"):
                line += await server.stdout.receive_some(100)
        port = int(line)
        for run in range(20):
            pipeline = (
                pk.source(b"x" * size for _ in range(20_000))
                | pk.remote(lambda: tcp.connect("127.0.0.1", port), name="exploder")
                | pk.collect()
            )
            with trio.fail_after(HANG_GUARD), pytest.raises(ModuleError) as info:
                await pipeline.arun()
            cause = info.value.__cause__
            assert isinstance(cause, RemoteError), f"run {run}: {cause!r}"
            assert (cause.kind, cause.message) == ("ValueError", "peer exploded")
    finally:
        server.kill()
        await server.wait()


class _FailingBothWays(Pipe):
    """A peer whose ERROR surfaces in a send and a receive at the same moment."""

    name = "both-ways"

    def __init__(self) -> None:
        self.go = trio.Event()
        self.told: list[BaseException] = []

    async def _fail(self) -> NoReturn:
        await self.go.wait()
        raise RemoteError("ValueError", "peer exploded")

    async def send(self, value: object) -> None:
        await self._fail()

    async def receive(self) -> object:
        await self._fail()

    async def end(self) -> None:
        await trio.lowlevel.checkpoint()

    async def fail(self, exc: BaseException) -> None:
        self.told.append(exc)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    @property
    def stats(self) -> PipeStats:
        return PipeStats()


async def test_the_peers_error_met_by_both_the_sender_and_the_receiver_is_raised_once() -> None:
    peer = _FailingBothWays()
    inp_near, inp_far = open_pipe_pair()
    out_near, _out_far = open_pipe_pair()
    await inp_far.send("to the peer")
    async with trio.open_nursery() as nursery:
        errors: list[BaseException] = []

        async def run() -> None:
            try:
                await RemoteModule(peer).run({"inp": inp_near, "out": out_near})
            except BaseException as exc:
                errors.append(exc)

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        peer.go.set()
    [error] = errors
    assert isinstance(error, RemoteError) and error.message == "peer exploded"
    assert [type(e) for e in peer.told] == [RemoteError]


# -- the kinds pipekit sends on its own behalf are snake_case ---------------------------


async def test_a_peer_fed_by_a_failed_module_gets_an_error_of_kind_module_failed() -> None:
    # What RemoteModule (and a frames-mode process stage) do when their input fails:
    # fail the peer with the upstream's ModuleError.
    left, right = trio.testing.memory_stream_pair()
    upstream = ModuleError("map(parse)", "module 'map(parse)' failed: ValueError: bad row")
    assert upstream.kind == "module_failed"
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            async with framed_pipe(left, initiator=True) as pipe:
                await pipe.send(1)
                await pipe.fail(upstream)

        nursery.start_soon(sender)
        with trio.fail_after(HANG_GUARD):
            async with framed_pipe(right, initiator=False) as peer:
                assert await peer.receive() == 1
                with pytest.raises(RemoteError) as info:
                    await peer.receive()
    assert info.value.kind == "module_failed"
    assert info.value.message == "module 'map(parse)' failed: ValueError: bad row"


def test_every_kind_pipekit_sends_on_its_own_behalf_is_snake_case() -> None:
    kinds = [str(kind) for kind in ErrorKind] + [ModuleError("m").kind]
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", kind) for kind in kinds), kinds


def test_a_remote_error_pickles_with_its_fields() -> None:
    err = RemoteError("ValueError", "bad", {"traceback": "..."})
    err.__notes__ = ["from a worker"]
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is RemoteError
    assert (back.kind, back.message, back.details) == ("ValueError", "bad", {"traceback": "..."})
    assert str(back) == str(err) and back.__notes__ == ["from a worker"]
