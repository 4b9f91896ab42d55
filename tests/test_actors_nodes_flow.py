"""The node links' hot paths: what a stream of sends becomes on the wire (merged SENDs,
encoded like one value at a time), and what the far side makes of a merged SEND."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from pipekit.actors import NoConnection, Pid
from pipekit.actors import _wire as wire
from pipekit.actors._cluster import _values
from pipekit.actors._link import Link, RemoteProc

PID = Pid("a", "local", "m:f", "1")
SENDER = Pid("b", "local", "m:g", "2")
PAYLOADS: list[Any] = [
    1,
    "text",
    None,
    b"\0",
    {"i": 1, "v": "x"},
    {"p": PID, "n": 2},
    {"$pid": "not a pid"},
    {"$map": 1},
    {"only": 1},
    [1, 2],
    [PID],
    (1, {"p": PID}),
    PID,
    {"deep": {"p": PID}},
]


def _queued(payloads: list[Any]) -> list[list[Any]]:
    link = Link(None, None, "a", 1000)  # type: ignore[arg-type]
    for payload in payloads:
        link.put(wire.SEND, str(PID), SENDER, "t", (payload,))
    return list(link.out)


def test_a_stream_of_sends_merges_into_one_send_encoded_value_by_value() -> None:
    [message] = _queued(PAYLOADS)
    assert message[:4] == [wire.SEND, str(PID), str(SENDER), "t"]
    assert message[4:] == [wire.encode_value(p) for p in PAYLOADS]


def test_a_merged_send_counts_every_value_against_the_link_limit() -> None:
    link = Link(None, None, "a", 1000)  # type: ignore[arg-type]
    link.put(wire.SEND, str(PID), SENDER, "t", (1, 2))
    link.put(wire.SEND, str(PID), SENDER, "t", (3,))
    assert link.queued == 3 and len(link.out) == 1


def test_sends_on_another_topic_or_from_another_sender_start_a_new_send() -> None:
    link = Link(None, None, "a", 1000)  # type: ignore[arg-type]
    dest = str(PID)
    link.put(wire.SEND, dest, SENDER, "t", (1,))
    link.put(wire.SEND, dest, SENDER, "u", (2,))
    link.put(wire.SEND, dest, None, "u", (3,))
    link.put(wire.SEND_WAIT, dest, None, "u", (4,))
    assert [m[2:] for m in link.out] == [
        [str(SENDER), "t", 1],
        [str(SENDER), "u", 2],
        [None, "u", 3],
        [None, "u", 4],
    ]


def test_the_far_side_decodes_a_merged_send_like_one_value_at_a_time() -> None:
    [message] = _queued(PAYLOADS)
    assert _values(message, 4, len(PAYLOADS)) == tuple(
        wire.decode_value(wire.encode_value(p)) for p in PAYLOADS
    )


def test_plain_maps_cross_without_a_copy() -> None:
    plain = {"i": 1, "v": "x"}
    [message] = _queued([plain])
    assert message[4] is plain
    assert _values(message, 4, 1)[0] is plain


def test_joining_over_unix_or_tcp_does_not_import_the_websocket_adapter() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipekit.actors._cluster import listen_address, open_address\n"
        "open_address('unix:/nowhere', token=None)\n"
        "open_address('127.0.0.1:1', token=None)\n"
        "listen_address('127.0.0.1:0', print, token=None)\n"
        "print('pipekit.adapters.websocket' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


async def test_send_wait_with_room_on_the_link_queues_at_once_as_send_wait() -> None:
    link = Link(None, None, "a", 2)  # type: ignore[arg-type]
    await RemoteProc(link, PID).deliver_wait(SENDER, "t", (1, 2))
    assert link.queued == 2
    assert [m[0] for m in link.out] == [wire.SEND_WAIT]


async def test_send_wait_over_a_closed_link_is_noconnection_even_with_room() -> None:
    link = Link(None, None, "a", 2)  # type: ignore[arg-type]
    link.closed = True
    with pytest.raises(NoConnection, match="noconnection"):
        await RemoteProc(link, PID).deliver_wait(SENDER, "t", (1,))
    assert not link.out


async def test_send_wait_over_a_full_link_waits_until_the_link_closes() -> None:
    link = Link(None, None, "a", 2)  # type: ignore[arg-type]
    proxy = RemoteProc(link, PID)
    await proxy.deliver_wait(SENDER, "t", (1, 2))
    outcome: list[BaseException] = []

    async def third() -> None:
        try:
            await proxy.deliver_wait(SENDER, "t", (3,))
        except NoConnection as exc:
            outcome.append(exc)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert link.queued == 2 and not outcome  # waiting for room
            link.closed = True
            room, link._room = link._room, []
            for wake in room:  # what the link does as it ends
                wake()
    assert len(outcome) == 1 and link.queued == 2
