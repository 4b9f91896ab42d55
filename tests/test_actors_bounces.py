"""Reports a peer provokes while it does not read (``undelivered``, answers to its
``link``, ``mon`` and ``spawn``) stay bounded on the link: merged while queued, and the
link dropped past a cap of distinct ones (docs/protocol.md 15.8)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from pipekit.actors import (
    UNDELIVERED,
    MailboxFull,
    NoConnection,
    Node,
    Pid,
    _link,
    open_node,
    process,
)
from pipekit.kernel import FramedPipe, RemoteError

GUARD = 10  # seconds: a guard against hangs, never used to synchronise
ME = "{raw@local|by:hand|1}"


async def echo() -> None:
    msgs = process.listen("echo", message=True)
    while True:
        msg = await msgs.receive()
        process.send(msg.sender, "reply", msg.payload)


@asynccontextmanager
async def flooded(tmp_path: Path) -> AsyncIterator[tuple[Node, FramedPipe, str]]:
    """Node "a" with a process registered as "full" whose one-message mailbox stays
    full, an echo registered as "greeter", and a peer "raw" speaking by hand that has
    said hello and reads nothing more until the test does (its pipe PAUSEs "a" after
    one message)."""
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a", mailbox_size=1) as a:
            started = trio.Event()

            async def stuck() -> None:
                started.set()
                await trio.sleep_forever()

            a.registry.register("full", a.spawn(stuck))
            a.registry.register("greeter", a.spawn(echo))
            await started.wait()
            a.send("full", "x", 0)
            where = await a.listen(str(tmp_path / "a.sock"))
            path = where.removeprefix("unix:")
            async with unix.connect(path, codecs=["json"], high_water=1) as pipe:
                await pipe.send(["hello", 1, "raw", {}])
                hello = await pipe.receive()
                yield a, pipe, hello[3]["greeter"]


def queued(node: Node, op: str) -> list[list[Any]]:
    """The messages ``op`` queued on ``node``'s link to "raw", not yet written."""
    assert node._cluster is not None
    return [m for m in node._cluster.links["raw"].out if m[0] == op]


async def read_until_reply(pipe: FramedPipe, greeter: str) -> list[list[Any]]:
    """Ask the greeter for a reply and read until it comes: everything "a" queued for
    the peer before it (the link keeps order)."""
    await pipe.send(["s", "greeter", ME, "echo", "sync"])
    got: list[list[Any]] = []
    for _ in range(100_000):  # bounded: far more than any test queues
        message = await pipe.receive()
        if message == ["s", ME, greeter, "reply", "sync"]:
            return got
        got.append(message)
    raise AssertionError("no reply")


async def test_refused_sends_from_a_peer_that_does_not_read_merge_into_one_report(
    tmp_path: Path,
) -> None:
    async with flooded(tmp_path) as (a, pipe, greeter):
        for chunk in range(10):
            for i in range(100):
                await pipe.send(["s", "full", ME, "t", chunk * 100 + i])
            await trio.testing.wait_all_tasks_blocked()
            assert len(queued(a, "undelivered")) <= 1
        reports = [m for m in await read_until_reply(pipe, greeter) if m[0] == "undelivered"]
        assert {(m[1], m[2], m[3], m[5]["type"]) for m in reports} == {
            (ME, "full", "t", "MailboxFull")
        }
        assert sum(m[4] for m in reports) == 1000
        assert len(reports) < 1000


async def test_refusals_merge_per_sender_destination_topic_and_error(tmp_path: Path) -> None:
    async with flooded(tmp_path) as (a, pipe, greeter):
        gone = "{a@local|x:gone|99}"
        for i in range(300):
            await pipe.send(["s", "full", ME, f"t{i % 3}", i])
            await pipe.send(["s", gone, ME, "t0", i])
        await trio.testing.wait_all_tasks_blocked()
        assert len(queued(a, "undelivered")) <= 4
        totals: dict[tuple[str, str, str], int] = {}
        for m in await read_until_reply(pipe, greeter):
            if m[0] == "undelivered":
                key = (m[2], m[3], m[5]["type"])
                totals[key] = totals.get(key, 0) + m[4]
        assert totals == {
            ("full", "t0", "MailboxFull"): 100,
            ("full", "t1", "MailboxFull"): 100,
            ("full", "t2", "MailboxFull"): 100,
            (gone, "t0", "NoSuchProcess"): 300,
        }


async def test_repeated_link_and_monitor_requests_for_a_dead_process_are_answered_once_queued(
    tmp_path: Path,
) -> None:
    async with flooded(tmp_path) as (a, pipe, greeter):
        gone = "{a@local|x:gone|99}"
        for _ in range(300):
            await pipe.send(["link", ME, gone])
            await pipe.send(["mon", ME, gone])
            await pipe.send(["term", ME, gone])
        await trio.testing.wait_all_tasks_blocked()
        assert len(queued(a, "down")) <= 1
        assert len(queued(a, "exit")) <= 1
        assert len(queued(a, "undelivered")) <= 1
        answers = await read_until_reply(pipe, greeter)
        assert {m[0] for m in answers} == {"down", "exit", "undelivered"}
        for m in answers:
            assert m[1:3] == ([gone, ME] if m[0] != "undelivered" else [ME, gone])
        assert all(m[4] == 0 for m in answers if m[0] == "undelivered")  # term: count 0


async def test_a_failed_spawn_is_answered_even_while_the_peer_does_not_read(
    tmp_path: Path,
) -> None:
    async with flooded(tmp_path) as (_, pipe, greeter):
        pids = [f"{{a@local|no.such:entry|raw.{n}}}" for n in range(3)]
        await pipe.send(["spawn", ME, pids[0], "no.such:entry", [], True, False])
        await pipe.send(["spawn", ME, pids[1], "no.such:entry", [], False, True])
        await pipe.send(["spawn", ME, pids[2], "no.such:entry", [], False, False])
        answers = await read_until_reply(pipe, greeter)
        assert [m[:3] for m in answers] == [
            ["down", pids[0], ME],
            ["exit", pids[1], ME],
            ["undelivered", ME, pids[2]],
        ]
        assert {(m[-1]["type"]) for m in answers} == {"SpawnError"}


@pytest.mark.parametrize("flood", ["topics", "destinations", "spawns"])
async def test_a_peer_that_provokes_too_many_distinct_reports_unread_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, flood: str
) -> None:
    monkeypatch.setattr(_link, "REPORTS", 8)
    caplog.set_level(logging.WARNING, "pipekit.actors")
    async with flooded(tmp_path) as (a, pipe, _):
        watched = trio.Event()

        async def watcher() -> Any:
            process.monitor(Pid.parse(ME))
            watched.set()
            return (await process.events().receive()).error

        async with trio.open_nursery() as nursery:
            errors: list[Any] = []

            async def watch() -> None:
                errors.append(await a.run(watcher))

            nursery.start_soon(watch)
            await watched.wait()
            for i in range(20):
                if flood == "topics":
                    message: list[Any] = ["s", "full", ME, f"t{i}", i]
                elif flood == "destinations":
                    message = ["s", f"{{a@local|x:gone|{i}}}", ME, "t", i]
                else:
                    pid = f"{{a@local|no.such:entry|raw.{i}}}"
                    message = ["spawn", ME, pid, "no.such:entry", [], False, i % 2 == 0]
                await pipe.send(message)
            await trio.testing.wait_all_tasks_blocked()
            assert a.connected() == []
        assert isinstance(errors[0], NoConnection)
        assert "was dropped" in str(errors[0]) and "does not read" in str(errors[0])
        warnings = [r.getMessage() for r in caplog.records if "is dropped" in r.getMessage()]
        assert len(warnings) == 1 and "8 reports" in warnings[0], warnings
        with pytest.raises((RemoteError, trio.BrokenResourceError, trio.EndOfChannel)):
            for _ in range(100):  # what "a" wrote before it dropped the link, then its end
                await pipe.receive()


async def test_two_nodes_flooding_full_mailboxes_of_each_other_both_get_every_report(
    tmp_path: Path,
) -> None:
    n = 3000
    with trio.fail_after(GUARD):
        async with open_node("a", mailbox_size=1) as a, open_node("b", mailbox_size=1) as b:

            async def stuck() -> None:
                await trio.sleep_forever()

            a.registry.register("full-a", a.spawn(stuck))
            b.registry.register("full-b", b.spawn(stuck))
            await b.connect(await a.listen(str(tmp_path / "a.sock")))  # names in the hellos

            async def flood(dest: str) -> int:
                events = process.events()
                for i in range(n):
                    try:
                        process.send(dest, "t", i)
                    except MailboxFull:  # the link's queue (LinkFull): wait for room
                        await process.send_wait(dest, "t", i)
                refused = 0
                for _ in range(n):  # bounded: one event per report at most
                    if refused >= n - 1:  # the first one filled the mailbox
                        break
                    event = await events.receive()
                    assert event.kind == UNDELIVERED and isinstance(event.error, MailboxFull)
                    refused += event.count
                return refused

            results: dict[str, int] = {}

            async def run(node: Node, dest: str) -> None:
                results[node.name] = await node.run(flood, dest)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, a, "full-b")
                nursery.start_soon(run, b, "full-a")
            assert results == {"a": n - 1, "b": n - 1}
