"""Nodes in separate OS processes (``tests/node_peer.py``): ping-pong over unix, tcp
and websocket, a name looked up from the other node, a link across nodes, and a peer
killed with SIGKILL giving ``noconnection`` within a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from pipekit.actors import EXIT, LINK_DOWN, NoConnection, Node, open_node, process

HELPER = str(Path(__file__).with_name("node_peer.py"))
GUARD = 20  # seconds: a guard against hangs, never used to synchronise


@asynccontextmanager
async def peer_process(*args: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """``node_peer.py ARGS`` and the first line it prints; killed and reaped on exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, HELPER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                raise AssertionError(f"node_peer.py {args} exited: {await proc.wait()}")
            line += chunk
        yield proc, line.decode().strip()
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


def _address(kind: str, tmp_path: Path) -> str:
    return {
        "unix": str(tmp_path / "peer.sock"),
        "tcp": "127.0.0.1:0",
        "ws": "ws://127.0.0.1:0/nodes",
    }[kind]


async def _ping_pong(node: Node, name: str) -> list[int]:
    async def client() -> list[int]:
        for i in range(100):
            process.send(name, "echo", i)
        replies = process.listen("reply")
        return [await replies.receive() for _ in range(100)]

    result: list[int] = await node.run(client)
    return result


@pytest.mark.parametrize("kind", ["unix", "tcp", "ws"])
async def test_ping_pong_with_a_node_in_another_process(tmp_path: Path, kind: str) -> None:
    with trio.fail_after(GUARD):
        async with (
            peer_process("far", "listen", _address(kind, tmp_path)) as (_, where),
            open_node("near") as node,
        ):
            assert await node.connect(where) == "far"
            assert node.registry.lookup("far-echo").node == "far"
            assert await _ping_pong(node, "far-echo") == list(range(100))


async def test_a_node_in_another_process_connects_to_this_one(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("near") as node:
            where = await node.listen(str(tmp_path / "near.sock"))
            async with peer_process("far", "connect", where) as (_, line):
                assert line == "joined near"
                assert await _ping_pong(node, "far-echo") == list(range(100))


@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_kill_9_of_the_peer_gives_noconnection_within_a_second(
    tmp_path: Path, kind: str
) -> None:
    with trio.fail_after(GUARD):
        async with (
            peer_process("far", "listen", _address(kind, tmp_path)) as (proc, where),
            open_node("near") as node,
        ):
            await node.connect(where)
            far = node.registry.lookup("far-idle")
            seen: list[Any] = []
            ready, got_both, got_exit = trio.Event(), trio.Event(), trio.Event()

            async def watcher() -> None:
                process.set_options(trap_links=True)
                process.link(far)
                process.monitor(far)
                assert await _ping_pong_inside("far-echo") == [0]  # the link is set up
                ready.set()
                ev = process.events()
                seen.extend([await ev.receive(), await ev.receive()])
                got_both.set()

            async def doomed() -> None:  # not trapping: killed by the link
                process.link(far)
                await trio.sleep_forever()

            pid = node.spawn(watcher)
            victim = node.spawn(doomed)
            exits: list[Any] = []

            async def observe() -> None:
                process.monitor(victim)
                exits.append(await process.events().receive())
                got_exit.set()

            node.spawn(observe)
            await ready.wait()
            os.kill(proc.pid, signal.SIGKILL)
            with trio.fail_after(1.0):  # the bound: noconnection within a second
                await got_both.wait()
                await got_exit.wait()
            assert sorted(e.kind for e in seen) == [EXIT, LINK_DOWN]
            assert all(isinstance(e.error, NoConnection) for e in seen)
            assert exits[0].error.reason.reason == "noconnection"
            assert node.connected() == [] and pid is not None


async def _ping_pong_inside(name: str) -> list[int]:
    process.send(name, "echo", 0)
    return [await process.listen("reply").receive()]
