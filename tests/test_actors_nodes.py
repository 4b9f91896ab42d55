"""Nodes joined over real sockets in one trio loop: the link, pids on the wire, links,
monitors and exits across nodes, remote spawn, names, and undeliverable reports."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from pipekit.actors import (
    EXIT,
    LINK_DOWN,
    UNDELIVERED,
    LinkedFailure,
    LinkFull,
    MailboxFull,
    NameTaken,
    NoConnection,
    Node,
    NodeError,
    NoSuchProcess,
    Pid,
    RemoteFailure,
    SpawnError,
    Terminated,
    open_node,
    process,
)
from pipekit.kernel import RemoteError

GUARD = 10  # seconds: a guard against hangs, never used to synchronise


@asynccontextmanager
async def pair(
    tmp_path: Path, kind: str = "unix", **options: Any
) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes "a" (listening) and "b" (connected to it)."""
    address = str(tmp_path / "a.sock") if kind == "unix" else "127.0.0.1:0"
    if kind == "ws":
        address = "ws://127.0.0.1:0/nodes"
    with trio.fail_after(GUARD):
        async with open_node("a", **options) as a, open_node("b", **options) as b:
            where = await a.listen(address)
            assert await b.connect(where) == "a"
            assert a.connected() == ["b"]  # the acceptor took the link before its HELLO
            yield a, b


# Barriers, never polls: a node handles what comes over a link in the order it was sent
# (one queue per link), so a round trip through a process on the far node proves that
# node has handled everything this node sent it before (links, monitors, names, sends).


async def ping(server: Pid) -> None:
    """Inside a process: a round trip to the ``echo`` process ``server``."""
    process.send(server, "echo", "sync")
    assert await process.listen("reply").receive() == "sync"


async def synced(near: Node, far: Node) -> None:
    """Return once ``far`` has handled every node message ``near`` queued to it before."""
    server = far.spawn(echo)
    await near.run(ping, server)
    far.send(server, "echo", "stop")


async def stop_echo(node: Node, server: Pid) -> None:
    """Stop the local ``echo`` ``server`` of ``node`` and wait until it has exited (its
    names released: the UNREG is queued to every peer by then)."""

    async def stopper() -> None:
        process.monitor(server)
        process.send(server, "echo", "stop")
        assert (await process.events().receive()).kind == EXIT

    await node.run(stopper)


async def echo() -> None:
    msgs = process.listen("echo", message=True)
    while True:
        msg = await msgs.receive()
        if msg.payload == "stop":
            return
        process.send(msg.sender, "reply", msg.payload)


async def crash() -> None:
    raise KeyError("boom")


async def wait_forever() -> None:
    await trio.sleep_forever()


async def returns(value: Any) -> Any:
    return value


# -- the link ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["unix", "tcp", "ws"])
async def test_ping_pong_across_nodes(tmp_path: Path, kind: str) -> None:
    async with pair(tmp_path, kind) as (a, b):
        server = a.spawn(echo)

        async def client() -> list[Any]:
            for i in range(5):
                process.send(server, "echo", i)
            replies = process.listen("reply")
            return [await replies.receive() for _ in range(5)]

        assert await b.run(client) == [0, 1, 2, 3, 4]


async def test_connect_returns_the_peer_name_and_both_sides_see_it(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        assert b.connected() == ["a"] and a.connected() == ["b"]


async def test_order_is_kept_per_sender_receiver_pair(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):

        async def collect() -> list[int]:
            ch = process.listen("n")
            return [await ch.receive() for _ in range(3000)]

        done = trio.Event()
        got: list[list[int]] = []

        async def sink() -> None:
            got.append(await collect())
            done.set()

        target = a.spawn(sink)

        async def source() -> None:
            for i in range(3000):
                await process.send_wait(target, "n", i)

        await b.run(source)
        await done.wait()
        assert got[0] == list(range(3000))


async def test_duplicate_node_name_is_a_node_error(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with (
            open_node("a") as a,
            open_node("b") as b,
            open_node("b") as b2,
        ):
            where = await a.listen(str(tmp_path / "a.sock"))
            await b.connect(where)
            with pytest.raises(NodeError, match="already connected"):
                await b2.connect(where)
            with pytest.raises(NodeError, match="already connected"):
                await b.connect(where)
            assert a.connected() == ["b"] and b2.connected() == []


async def test_a_node_cannot_join_itself(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a:
            where = await a.listen(str(tmp_path / "a.sock"))
            with pytest.raises(NodeError, match="like this node"):
                await a.connect(where)


async def test_wrong_token_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            where = await a.listen("127.0.0.1:0", token="right")
            with pytest.raises((NodeError, RemoteError), match="token"):
                await b.connect(where, token="wrong")
            assert b.connected() == [] and a.connected() == []
            assert await b.connect(where, token="right") == "a"


async def test_bad_address_is_a_value_error() -> None:
    async with open_node("a") as a:
        with pytest.raises(ValueError, match="not an address"):
            await a.connect("nowhere")


async def test_send_to_a_pid_of_an_unconnected_node_raises() -> None:
    async with open_node("a") as a:
        with pytest.raises(NoSuchProcess, match="not connected"):
            a.send(Pid("zz", "local", "m:f", "1"), "t", 1)


async def test_full_link_queue_raises_link_full_and_send_wait_waits(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            where = await a.listen(str(tmp_path / "q.sock"))
            await b.connect(where, link_queue=4)
            sink = a.spawn(wait_forever)
            with pytest.raises(LinkFull, match="link to node 'a'") as info:
                for i in range(6):  # the first may go to the pipe at once; 4 queue
                    b.send(sink, "t", i)
            assert isinstance(info.value, MailboxFull)
            await b.send_wait(sink, "t", 5)  # waits for the writer to take the queue


# -- pids on the wire -------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "cbor", "json"])
async def test_pids_inside_payloads_stay_valid(tmp_path: Path, codec: str) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            where = await a.listen(str(tmp_path / "a.sock"))
            await b.connect(where, codecs=[codec])

            async def server() -> None:
                msg = await process.listen("req").receive()
                process.send(msg["reply_to"][0], "rep", {"me": process.pid(), "n": msg["n"]})

            srv = a.spawn(server)

            async def client() -> Any:
                me = process.pid()
                process.send(srv, "req", {"reply_to": [me], "n": 7, "$pid": "not a pid"})
                return await process.listen("rep").receive()

            got = await b.run(client)
            assert got == {"me": srv, "n": 7}
            assert type(got["me"]) is Pid


async def test_application_maps_that_look_like_pids_travel_unchanged(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        odd = [{"$pid": "{x|y|z}"}, {"$map": 1}, {"$pid": 1, "k": 2}, (1, 2)]

        async def server() -> None:
            msg = await process.listen("x", message=True).receive()
            process.send(msg.sender, "back", msg.payload)

        srv = a.spawn(server)

        async def client() -> Any:
            process.send(srv, "x", odd)
            return await process.listen("back").receive()

        assert await b.run(client) == [
            {"$pid": "{x|y|z}"},
            {"$map": 1},
            {"$pid": 1, "k": 2},
            [1, 2],
        ]


# -- links, monitors, exits across nodes ------------------------------------------------


async def test_monitor_a_remote_process_gets_its_result(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        gate = trio.Event()

        async def worker() -> str:
            await gate.wait()
            return "done"

        remote = a.spawn(worker)
        server = a.spawn(echo)

        async def watcher() -> Any:
            process.monitor(remote)
            await ping(server)
            assert a.stats().monitors == 1
            gate.set()
            event = await process.events().receive()
            return event.kind, event.sender, event.result

        assert await b.run(watcher) == (EXIT, remote, "done")
        assert a.stats().monitors == 0 and b.stats().monitors == 0


async def test_monitor_of_a_dead_remote_pid_gets_exit_noproc(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):
        gone = Pid("a", "local", "m:f", "999")

        async def watcher() -> Any:
            process.monitor(gone)
            return await process.events().receive()

        event = await b.run(watcher)
        assert event.kind == EXIT and isinstance(event.error, NoSuchProcess)


async def test_remote_failure_kills_a_linked_process(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):

        async def parent() -> None:
            process.spawn_linked(crash, "a")
            await trio.sleep_forever()

        with pytest.raises(LinkedFailure) as info:
            await b.run(parent)
        assert isinstance(info.value.reason, RemoteFailure)
        assert info.value.reason.type == "KeyError"


async def test_trapping_parent_gets_link_down_from_a_remote_crash(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):

        async def parent() -> Any:
            process.set_options(trap_links=True)
            child = process.spawn_linked(crash, "a")
            event = await process.events().receive()
            return event.kind, event.sender == child, event.error.type

        assert await b.run(parent) == (LINK_DOWN, True, "KeyError")


async def test_local_crash_takes_a_linked_remote_process_down(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        remote = a.spawn(wait_forever)
        server = a.spawn(echo)
        exits: list[Any] = []
        watching, exited = trio.Event(), trio.Event()

        async def watcher() -> None:
            process.monitor(remote)
            watching.set()
            exits.append(await process.events().receive())
            exited.set()

        a.spawn(watcher)
        await watching.wait()

        async def doomed() -> None:
            process.link(remote)
            await ping(server)
            assert a.stats().links == 1
            raise ValueError("down")

        with pytest.raises(ValueError):
            await b.run(doomed)
        await exited.wait()
        assert isinstance(exits[0].error, LinkedFailure)


async def test_unlink_and_unmonitor_across_nodes(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        remote = a.spawn(wait_forever)
        server = a.spawn(echo)

        async def fickle() -> None:
            process.link(remote)
            process.monitor(remote)
            await ping(server)
            assert a.stats().links == 1 and a.stats().monitors == 1
            process.unlink(remote)
            process.unmonitor(remote)
            await ping(server)
            assert a.stats().links == 0 and a.stats().monitors == 0
            raise ValueError("unlinked, so the remote lives")

        with pytest.raises(ValueError):
            await b.run(fickle)
        a.send(remote, "t", 1)  # still alive
        assert a.find(remote).alive


async def test_terminate_and_cancel_a_remote_process(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        one = a.spawn(wait_forever)
        two = a.spawn(wait_forever)

        async def boss() -> list[Any]:
            process.monitor(one)
            process.monitor(two)
            process.terminate(one)
            process.cancel(two, "10ms")
            ev = process.events()
            return sorted([(await ev.receive()).error.reason for _ in range(2)])

        assert await b.run(boss) == ["cancel deadline passed", "terminated"]


async def test_remote_process_sees_cancel_event_with_deadline(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):

        async def polite() -> str:
            event = await process.events().receive()
            return f"{event.kind} {event.deadline > event.at}"

        pid = a.spawn(polite)
        results: list[Any] = []

        async def boss() -> None:
            process.monitor(pid)
            process.cancel(pid, "5s")
            results.append((await process.events().receive()).result)

        await b.run(boss)
        assert results == ["pid.cancel True"]


async def test_peer_node_closing_gives_noconnection(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("b") as b:
            seen: list[Any] = []
            ready, done = trio.Event(), trio.Event()
            async with open_node("a") as a:
                where = await a.listen(str(tmp_path / "a.sock"))
                await b.connect(where)
                remote = a.spawn(wait_forever)
                server = a.spawn(echo)

                async def watcher() -> None:
                    process.set_options(trap_links=True)
                    process.monitor(remote)
                    process.link(remote)
                    await ping(server)
                    ready.set()
                    ev = process.events()
                    seen.extend([await ev.receive(), await ev.receive()])
                    done.set()

                b.spawn(watcher)
                await ready.wait()
                assert a.stats().links == 1 and a.stats().monitors == 1
            await done.wait()
            kinds = sorted(e.kind for e in seen)
            assert kinds == [EXIT, LINK_DOWN]
            assert all(isinstance(e.error, NoConnection) for e in seen)
            assert seen[0].error.reason == "noconnection"
            assert b.connected() == []


# -- remote spawn ------------------------------------------------------------------------


async def test_spawn_on_a_connected_node_runs_there(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):

        async def parent() -> Any:
            child = process.spawn_monitored(returns, "a", {"x": 1})
            event = await process.events().receive()
            return child, event.sender, event.result

        child, sender, result = await b.run(parent)
        assert child.node == "a" and child.proc.startswith("b.") and sender == child
        assert result == {"x": 1}


async def test_failed_remote_spawn_is_an_exit_with_spawn_error(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):

        async def parent() -> Any:
            process.spawn_monitored("no.such.module:main", "a")
            return (await process.events().receive()).error

        assert isinstance(await b.run(parent), SpawnError)


async def test_a_remote_entry_whose_module_fails_as_it_imports_is_a_spawn_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Its IndexError used to pass for a malformed node message: no answer, a caller
    # waiting for ever.)
    (tmp_path / "breaks_on_import.py").write_text("[][0]\n\nasync def main() -> None: ...\n")
    (tmp_path / "exits_on_import.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    async with pair(tmp_path) as (_a, b):

        async def parent(entry: str) -> Any:
            process.spawn_monitored(entry, "a")
            return (await process.events().receive()).error

        for module, kind in (("breaks_on_import", "IndexError"), ("exits_on_import", "SystemExit")):
            error = await b.run(parent, f"{module}:main")
            assert isinstance(error, SpawnError)
            assert f"{module}:main" in str(error) and kind in str(error)


async def test_failed_plain_remote_spawn_is_an_undelivered_event(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):

        async def parent() -> Any:
            pid = process.spawn("no.such.module:main", "a")
            return pid, await process.events().receive()

        pid, event = await b.run(parent)
        assert event.kind == UNDELIVERED and event.dest == pid
        assert isinstance(event.error, SpawnError)


# -- names -------------------------------------------------------------------------------


async def test_a_name_registered_on_a_peer_is_found_and_routed(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        server = a.spawn(echo)
        a.registry.register("echo", server)
        await synced(a, b)
        assert b.registry.lookup("echo") == server

        async def client() -> Any:
            process.send("echo", "echo", "hi")
            return await process.listen("reply").receive()

        assert await b.run(client) == "hi"
        await stop_echo(a, server)
        await synced(a, b)
        assert "echo" not in b._cluster.names  # type: ignore[union-attr]
        with pytest.raises(NoSuchProcess):
            b.registry.lookup("echo")


async def test_names_are_exchanged_at_connect(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            a.registry.register("db", a.spawn(wait_forever))
            where = await a.listen(str(tmp_path / "a.sock"))
            await b.connect(where)
            assert b.registry.lookup("db").node == "a"


async def test_registering_a_name_a_peer_holds_is_name_taken(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        a.registry.register("db", a.spawn(wait_forever))
        await synced(a, b)
        with pytest.raises(NameTaken, match="on node 'a'"):
            b.registry.register("db", b.spawn(wait_forever))


async def test_a_name_clash_resolves_to_the_first_node_everywhere(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            pa, pb = a.spawn(wait_forever), b.spawn(wait_forever)
            a.registry.register("db", pa)
            b.registry.register("db", pb)
            where = await a.listen(str(tmp_path / "a.sock"))
            await b.connect(where)
            await synced(b, a)  # a adds b's names from its HELLO before it reads on
            assert a.registry.lookup("db") == pa and b.registry.lookup("db") == pa
            assert ("db", ["a", "b"]) in b._cluster.clashes  # type: ignore[union-attr]


# -- undeliverable is never silent -------------------------------------------------------


async def test_send_to_a_dead_remote_pid_is_reported_undelivered(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):
        gone = Pid("a", "local", "m:f", "999")

        async def sender() -> Any:
            process.send(gone, "t", 1)
            return await process.events().receive()

        event = await b.run(sender)
        assert event.kind == UNDELIVERED and event.dest == gone and event.topic == "t"
        assert isinstance(event.error, NoSuchProcess)


async def test_remote_full_mailbox_is_reported_undelivered(tmp_path: Path) -> None:
    async with pair(tmp_path, mailbox_size=2) as (a, b):
        sink = a.spawn(wait_forever)

        async def sender() -> Any:
            process.send(sink, "t", 1, 2, 3)
            return await process.events().receive()

        event = await b.run(sender)
        assert event.kind == UNDELIVERED and isinstance(event.error, MailboxFull)
        assert event.count == 1


async def test_unencodable_payload_is_reported_undelivered(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        sink = a.spawn(wait_forever)

        async def sender() -> Any:
            process.send(sink, "t", object())
            return await process.events().receive()

        event = await b.run(sender)
        assert event.kind == UNDELIVERED and event.dest == sink


async def test_terminate_of_a_dead_remote_pid_is_reported(tmp_path: Path) -> None:
    async with pair(tmp_path) as (_a, b):
        gone = Pid("a", "local", "m:f", "999")

        async def boss() -> Any:
            process.terminate(gone)
            return await process.events().receive()

        event = await b.run(boss)
        assert event.kind == UNDELIVERED and event.topic is None


async def test_send_wait_waits_for_room_in_a_remote_mailbox(tmp_path: Path) -> None:
    async with pair(tmp_path, mailbox_size=2) as (a, b):
        got: list[int] = []
        all_in = trio.Event()

        async def slow() -> None:
            ch = process.listen("n")
            for _ in range(20):
                got.append(await ch.receive())
                await trio.lowlevel.checkpoint()
            all_in.set()

        sink = a.spawn(slow)

        async def source() -> Any:
            for i in range(20):
                await process.send_wait(sink, "n", i)

        await b.run(source)
        await all_in.wait()
        assert got == list(range(20))


async def test_terminated_error_round_trips() -> None:
    from pipekit.actors import _wire as wire

    err = wire.decode_error(wire.encode_error(Terminated("x")))
    assert isinstance(err, Terminated) and err.reason == "x"


# -- the node layer by hand (docs/protocol.md section 15) --------------------------------


async def test_a_peer_speaking_the_node_protocol_by_hand_can_join(tmp_path: Path) -> None:
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a") as a:
            a.registry.register("greeter", a.spawn(echo))
            where = await a.listen(str(tmp_path / "a.sock"))
            async with unix.connect(where.removeprefix("unix:"), codecs=["json"]) as pipe:
                await pipe.send(["hello", 1, "raw", {}])
                hello = await pipe.receive()
                assert hello[:3] == ["hello", 1, "a"]
                greeter = hello[3]["greeter"]
                me = "{raw@local|by:hand|1}"
                await pipe.send(["s", "greeter", me, "echo", {"$pid": me}])
                assert await pipe.receive() == ["s", me, greeter, "reply", {"$pid": me}]
                await pipe.send(["mon", me, greeter])
                await pipe.send(["term", me, greeter])
                assert await pipe.receive() == ["unreg", "greeter"]  # released as it ends
                exit_ = await pipe.receive()
                assert exit_[:4] == ["exit", greeter, me, None]
                assert exit_[4]["type"] == "Terminated" and exit_[4]["reason"] == "terminated"
                await pipe.send(["s", greeter, me, "echo", 1])
                bounced = await pipe.receive()
                assert bounced[:5] == ["undelivered", me, greeter, "echo", 1]
                assert bounced[5]["type"] == "NoSuchProcess"


async def test_malformed_node_messages_are_ignored_and_the_link_stays_up(
    tmp_path: Path,
) -> None:
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a", mailbox_size=1) as a:
            started, drain = trio.Event(), trio.Event()

            async def stuck() -> None:  # its one-message mailbox is full until drain
                started.set()
                await drain.wait()
                async for _ in process.inbox():
                    pass

            full = a.spawn(stuck)
            a.registry.register("full", full)
            a.registry.register("greeter", a.spawn(echo))
            await started.wait()
            a.send(full, "x", 0)
            where = await a.listen(str(tmp_path / "a.sock"))
            async with unix.connect(where.removeprefix("unix:"), codecs=["json"]) as pipe:
                await pipe.send(["hello", 1, "raw", {}])
                greeter = (await pipe.receive())[3]["greeter"]
                me = "{raw@local|by:hand|1}"
                for lie in (
                    "not an array",
                    [],
                    ["link", me],  # too short
                    ["s", "greeter", "{not a pid", "echo", 1],
                    ["s", "greeter", me, "echo", {"$pid": "{broken"}],
                    ["sw", "full", "{not a pid", "t", 1],  # waits for room, then lies
                    ["sw", "full", me, "t", {"$pid": "{broken"}],
                ):
                    await pipe.send(lie)
                # Every task blocked: a's link reader waits for room on the first "sw"
                # (and meets its lie after the wait).
                await trio.testing.wait_all_tasks_blocked()
                drain.set()
                await pipe.send(["s", "greeter", me, "echo", "still here"])
                assert await pipe.receive() == ["s", me, greeter, "reply", "still here"]
            assert a.stats().processes == 2


async def test_a_send_wait_with_a_bad_topic_is_ignored_before_it_waits(tmp_path: Path) -> None:
    # It used to wait for room and meet its topic only when bouncing it (the process
    # exited meanwhile): the error escaped the link's reader and took the link down.
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a", mailbox_size=1) as a:
            started, leave = trio.Event(), trio.Event()

            async def stuck() -> None:  # its one-message mailbox stays full; then it exits
                started.set()
                await leave.wait()

            a.registry.register("full", a.spawn(stuck))
            a.registry.register("greeter", a.spawn(echo))
            await started.wait()
            a.send("full", "x", 0)
            where = await a.listen(str(tmp_path / "a.sock"))
            async with unix.connect(where.removeprefix("unix:"), codecs=["json"]) as pipe:
                await pipe.send(["hello", 1, "raw", {}])
                greeter = (await pipe.receive())[3]["greeter"]
                me = "{raw@local|by:hand|1}"
                await pipe.send(["sw", "full", me, ["not", "a", "str"], 1])
                await trio.testing.wait_all_tasks_blocked()
                leave.set()
                await trio.testing.wait_all_tasks_blocked()
                await pipe.send(["s", "greeter", me, "echo", "still here"])
                answers = [await pipe.receive() for _ in range(2)]
                assert ["unreg", "full"] in answers  # stuck exited; nothing was bounced
                assert ["s", me, greeter, "reply", "still here"] in answers
            assert a.connected() == []


async def test_a_peer_that_does_not_say_hello_is_refused(tmp_path: Path) -> None:
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a") as a:
            where = await a.listen(str(tmp_path / "a.sock"))
            async with unix.connect(where.removeprefix("unix:")) as pipe:
                await pipe.send(["s", "x", None, "t", 1])
                with pytest.raises(RemoteError, match="not a node") as info:
                    await pipe.receive()
                assert info.value.kind == "NodeError"
            assert a.connected() == []


# -- TLS, supervisors, leaks ------------------------------------------------------------


async def test_nodes_join_over_tls_with_the_adapters_options(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            where = await a.listen("tls://127.0.0.1:0", ssl_context=server_tls, token="t")
            assert where.startswith("tls://127.0.0.1:")
            assert await b.connect(where, ssl_context=client_tls, token="t") == "a"
            server = a.spawn(echo)

            async def client() -> Any:
                process.send(server, "echo", "secret")
                return await process.listen("reply").receive()

            assert await b.run(client) == "secret"


async def test_a_supervisor_restarts_a_child_on_another_node(tmp_path: Path) -> None:
    from pipekit.actors import ChildSpec, Supervisor

    async with pair(tmp_path) as (a, b):
        starts: list[Pid] = []
        third = trio.Event()

        async def flaky() -> None:
            starts.append(process.pid())
            if len(starts) < 3:
                raise KeyError("again")
            third.set()
            await trio.sleep_forever()

        a.add_entry("test:flaky", flaky)
        sup = b.spawn(Supervisor([ChildSpec("f", "test:flaky", host="a")], intensity=5, period=10))
        await third.wait()
        assert len(starts) == 3 and all(p.node == "a" for p in starts)

        async def stop() -> Any:
            process.monitor(starts[-1])  # queued to a before the supervisor's exit
            process.terminate(sup)
            return (await process.events().receive()).error

        assert isinstance(await b.run(stop), LinkedFailure)  # its link to the supervisor
        assert a.stats().processes == 0  # a's EXIT is sent once the child is gone


async def test_nothing_is_left_behind_when_linked_nodes_close(
    tmp_path: Path, no_leaks: Any
) -> None:
    with no_leaks(), trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b:
            where = await a.listen(str(tmp_path / "a.sock"))
            await b.connect(where)
            remote = a.spawn(wait_forever)
            server = a.spawn(echo)
            holding = trio.Event()

            async def holder() -> None:
                process.link(remote)
                process.monitor(remote)
                await ping(server)
                holding.set()
                await trio.sleep_forever()

            b.spawn(holder)
            await holding.wait()
            assert a.stats().links == 1 and a.stats().monitors == 1
        assert a.stats() == b.stats()
        assert a.stats().processes == 0


async def test_a_send_of_several_values_delivers_what_fits_and_reports_the_rest(
    tmp_path: Path,
) -> None:
    from pipekit.adapters import unix

    with trio.fail_after(GUARD):
        async with open_node("a", mailbox_size=2) as a:
            sink = a.spawn(wait_forever)
            where = await a.listen(str(tmp_path / "a.sock"))
            async with unix.connect(where.removeprefix("unix:"), codecs=["cbor"]) as pipe:
                await pipe.send(["hello", 1, "raw", {}])
                await pipe.receive()
                me = "{raw@local|by:hand|1}"
                await pipe.send(["s", str(sink), me, "t", 1, 2, 3])
                bounced = await pipe.receive()
                assert bounced[:5] == ["undelivered", me, str(sink), "t", 1]
                assert bounced[5]["type"] == "MailboxFull"
                assert a.find(sink).queued == 2


async def test_two_nodes_of_one_name_joining_at_once_one_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with open_node("a") as a, open_node("b") as b1, open_node("b") as b2:
            where = await a.listen(str(tmp_path / "a.sock"))
            outcomes: list[str] = []

            async def join(node: Node) -> None:
                try:
                    outcomes.append(await node.connect(where))
                except NodeError:
                    outcomes.append("refused")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(join, b1)
                nursery.start_soon(join, b2)
            assert sorted(outcomes) == ["a", "refused"]
            assert a.connected() == ["b"]


def test_wire_values_round_trip_and_plain_ones_are_not_copied() -> None:
    from pipekit.actors import _wire as wire

    pid = Pid("a", "local", "m:f", "1")
    value = {"to": [pid, (1, {"p": pid})], "x": {"$pid": "text"}, "n": None}
    encoded = wire.encode_value(value)
    assert encoded["to"][0] == {"$pid": str(pid)} and encoded["x"] == {"$map": {"$pid": "text"}}
    assert wire.decode_value(encoded) == {
        "to": [pid, [1, {"p": pid}]],
        "x": {"$pid": "text"},
        "n": None,
    }
    plain = {"i": 1, "v": "x", "b": b"\0"}
    assert wire.encode_value(plain) is plain and wire.decode_value(plain) is plain
    flat = [1, 2.0, "three"]
    assert wire.encode_value(flat) is flat and wire.decode_value(flat) is flat


async def test_a_bad_link_queue_is_a_value_error(tmp_path: Path) -> None:
    async with open_node("a") as a:
        with pytest.raises(ValueError, match="link_queue must be an int >= 1"):
            await a.listen(str(tmp_path / "a.sock"), link_queue=0)
