"""Tests of the pipekit/1 state machine (``pipekit.kernel.protocol``).

Everything here is sans-I/O: two :class:`Connection` objects are wired by hand, or a
connection is fed hand-made bytes. ``docs/protocol.md`` is checked against the code at
the end of this file (its hex examples are rendered by :func:`dump_frame`).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekit.kernel.codecs import CODEC_NAMES, get_codec
from pipekit.kernel.errors import (
    CodecError,
    ErrorKind,
    FlowControlError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from pipekit.kernel.options import PipeSettings
from pipekit.kernel.protocol import (
    DEFAULT_COALESCE_BYTES,
    DEFAULT_HIGH_WATER,
    DEFAULT_MAX_FRAME,
    DEFAULT_PAUSE_SLACK,
    FLAG_JSON,
    HEADER,
    HEADER_SIZE,
    HELLO_MAX_FRAME,
    LARGE_HEAD,
    PROTOCOL,
    TAKE_MAX,
    Connection,
    Direction,
    EndReceived,
    ErrorReceived,
    Event,
    FrameType,
    HandshakeComplete,
    MessagesReceived,
    PauseReceived,
    PingReceived,
    PongReceived,
    ProtocolViolation,
    ResumeReceived,
    encode_frame,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"

Frame = tuple[int, int, bytes]
"""A parsed frame: (type, flags, payload)."""


# --- helpers ------------------------------------------------------------------------


def parse_frames(data: bytes) -> list[Frame]:
    """Split a byte string that holds whole frames only."""
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        length, ftype, flags = HEADER.unpack_from(data, pos)
        frames.append((ftype, flags, data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    assert pos == len(data), "trailing partial frame"
    return frames


def frame_types(data: bytes) -> list[int]:
    return [ftype for ftype, _, _ in parse_frames(data)]


def connect(
    initiator: dict[str, Any] | None = None, acceptor: dict[str, Any] | None = None
) -> tuple[Connection, Connection]:
    """Return an (initiator, acceptor) pair that completed the handshake."""
    i = Connection(initiator=True, **(initiator or {}))
    a = Connection(initiator=False, **(acceptor or {}))
    a.receive_data(i.data_to_send())
    i.receive_data(a.data_to_send())
    assert i.handshake_complete and a.handshake_complete
    return i, a


def hello_frame(*, drop: Iterable[str] = (), flags: int = FLAG_JSON, **fields: Any) -> bytes:
    """An initiator's HELLO with ``fields`` overriding (and ``drop`` removing) keys."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL,
        "codecs": ["msgpack"],
        "name": "peer",
        "max_frame": DEFAULT_MAX_FRAME,
        "high_water": DEFAULT_HIGH_WATER,
    }
    body.update(fields)
    for key in drop:
        del body[key]
    payload = json.dumps(body).encode()
    return HEADER.pack(len(payload), FrameType.HELLO, flags) + payload


def answer_frame(**fields: Any) -> bytes:
    """An acceptor's HELLO answer with ``fields`` overriding keys."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL,
        "codec": "msgpack",
        "name": "peer",
        "max_frame": DEFAULT_MAX_FRAME,
        "high_water": DEFAULT_HIGH_WATER,
    }
    body.update(fields)
    return encode_frame(FrameType.HELLO, json.dumps(body).encode(), json_flag=True)


def error_frame(**body: Any) -> bytes:
    return encode_frame(FrameType.ERROR, json.dumps(body).encode(), json_flag=True)


def data_frame(*messages: Any) -> bytes:
    return encode_frame(FrameType.DATA, b"".join(msgpack.packb(m) for m in messages))


def messages_of(events: Iterable[Event]) -> list[Any]:
    return [m for e in events if isinstance(e, MessagesReceived) for m in e.messages]


def fresh(side: str) -> Connection:
    """A connection before the handshake, or (``connected``) an acceptor after it."""
    if side == "initiator":
        conn = Connection(initiator=True)
        conn.data_to_send()  # the HELLO went out
        return conn
    if side == "acceptor":
        return Connection(initiator=False)
    _, a = connect()
    return a


def assert_violation(
    conn: Connection,
    data: bytes,
    kind: str,
    error_type: type[ProtocolError] = RemoteProtocolError,
) -> ProtocolError:
    """Feed ``data``: it must end in a ProtocolViolation of ``kind`` (the peer's fault: a
    RemoteProtocolError), queue exactly one ERROR frame carrying that kind, and keep
    reporting the violation afterwards."""
    events = conn.receive_data(data)
    assert events and isinstance(events[-1], ProtocolViolation), events
    assert not any(isinstance(e, ProtocolViolation) for e in events[:-1])
    error = events[-1].error
    assert isinstance(error, error_type)
    assert error.kind == kind, error
    errors = [f for f in parse_frames(conn.data_to_send()) if f[0] == FrameType.ERROR]
    assert len(errors) == 1
    _, flags, payload = errors[0]
    assert flags == FLAG_JSON
    body = json.loads(payload)
    assert body == {"kind": kind, "message": error.message}
    assert conn.receive_data(data_frame(1)) == [ProtocolViolation(error)]
    assert conn.receive_data(b"") == [ProtocolViolation(error)]
    return error


# --- frames -------------------------------------------------------------------------


def test_frame_types_have_their_wire_numbers() -> None:
    assert {t.name: int(t) for t in FrameType} == {
        "DATA": 1,
        "END": 2,
        "ERROR": 3,
        "PING": 4,
        "PONG": 5,
        "PAUSE": 6,
        "RESUME": 7,
        "HELLO": 8,
    }


def test_encode_frame_writes_big_endian_length_type_flags_then_payload() -> None:
    assert encode_frame(FrameType.PING, b"abc") == bytes.fromhex("00000003 0004 0000") + b"abc"


def test_encode_frame_json_flag_is_bit_0() -> None:
    assert encode_frame(FrameType.DATA, b"1", json_flag=True)[6:8] == b"\x00\x01"
    assert HEADER_SIZE == 8


def test_defaults_match_the_spec() -> None:
    assert DEFAULT_MAX_FRAME == 8 * 1024 * 1024
    assert HELLO_MAX_FRAME == 64 * 1024
    assert DEFAULT_HIGH_WATER == 8192
    assert DEFAULT_PAUSE_SLACK == 16 * 1024 * 1024
    assert DEFAULT_COALESCE_BYTES == 64 * 1024
    assert CODEC_NAMES == ("msgpack", "cbor", "json")
    assert Connection(initiator=False).low_water == DEFAULT_HIGH_WATER // 2


# --- handshake ----------------------------------------------------------------------


def test_initiator_queues_its_hello_on_construction() -> None:
    conn = Connection(initiator=True, name="src", codecs=["cbor", "json"], max_frame=4096)
    [(ftype, flags, payload)] = parse_frames(conn.data_to_send())
    assert (ftype, flags) == (FrameType.HELLO, FLAG_JSON)
    assert json.loads(payload) == {
        "protocol": "pipekit/1",
        "codecs": ["cbor", "json"],
        "name": "src",
        "max_frame": 4096,
        "high_water": DEFAULT_HIGH_WATER,
    }


def test_initiator_hello_carries_the_token() -> None:
    conn = Connection(initiator=True, token="s3cret")
    [(_, _, payload)] = parse_frames(conn.data_to_send())
    assert json.loads(payload)["token"] == "s3cret"


def test_acceptor_sends_nothing_before_the_initiators_hello() -> None:
    assert Connection(initiator=False).data_to_send() == b""


def test_acceptor_answers_with_the_chosen_codec() -> None:
    i = Connection(initiator=True)
    a = Connection(initiator=False, name="sink", high_water=10, max_frame=2048)
    a.receive_data(i.data_to_send())
    [(ftype, flags, payload)] = parse_frames(a.data_to_send())
    assert (ftype, flags) == (FrameType.HELLO, FLAG_JSON)
    assert json.loads(payload) == {
        "protocol": "pipekit/1",
        "codec": "msgpack",
        "name": "sink",
        "max_frame": 2048,
        "high_water": 10,
    }


def test_handshake_complete_reports_the_peer_hello_and_codec_on_both_sides() -> None:
    i = Connection(initiator=True, name="src")
    a = Connection(initiator=False, name="sink", max_frame=2048)
    [a_event] = a.receive_data(i.data_to_send())
    [i_event] = i.receive_data(a.data_to_send())
    assert isinstance(a_event, HandshakeComplete) and isinstance(i_event, HandshakeComplete)
    assert (a_event.codec, a_event.peer["name"]) == ("msgpack", "src")
    assert (i_event.codec, i_event.peer["name"]) == ("msgpack", "sink")
    assert i.peer_max_frame == 2048 and a.peer_max_frame == DEFAULT_MAX_FRAME
    assert i.codec_name == a.codec_name == "msgpack"


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        (["cbor", "msgpack", "json"], ["json", "msgpack"], "msgpack"),
        (["json", "cbor"], ["msgpack", "cbor", "json"], "json"),
        (["msgpack", "cbor", "json"], ["cbor"], "cbor"),
    ],
)
def test_codec_negotiation_picks_the_initiators_first_choice_the_acceptor_supports(
    offered: list[str], supported: list[str], chosen: str
) -> None:
    i, a = connect({"codecs": offered}, {"codecs": supported})
    assert i.codec_name == a.codec_name == chosen


def test_acceptor_skips_offered_codecs_it_does_not_know() -> None:
    a = Connection(initiator=False)
    [event] = a.receive_data(hello_frame(codecs=["zstd-msgpack", "cbor"]))
    assert isinstance(event, HandshakeComplete) and event.codec == "cbor"


def test_no_common_codec_is_codec_mismatch_and_the_initiator_receives_the_error() -> None:
    i = Connection(initiator=True, codecs=["json"])
    a = Connection(initiator=False, codecs=["msgpack", "cbor"])
    hello = i.data_to_send()
    events = a.receive_data(hello)
    assert isinstance(events[-1], ProtocolViolation)
    assert events[-1].error.kind == "codec_mismatch"
    reply = a.data_to_send()
    assert frame_types(reply) == [FrameType.ERROR]  # an ERROR and no HELLO answer
    [event] = i.receive_data(reply)
    assert isinstance(event, ErrorReceived) and event.kind == "codec_mismatch"
    assert not i.handshake_complete


def test_no_common_codec_queues_an_error_of_kind_codec_mismatch() -> None:
    i = Connection(initiator=True, codecs=["json"])
    a = Connection(initiator=False, codecs=["msgpack"])
    assert_violation(a, i.data_to_send(), "codec_mismatch")


def test_initiator_refuses_an_answer_choosing_a_codec_it_did_not_offer() -> None:
    i = Connection(initiator=True, codecs=["cbor"])
    i.data_to_send()
    assert_violation(i, answer_frame(codec="msgpack"), "codec_mismatch")


@pytest.mark.parametrize("protocol", ["pipekit/2", "pipekit/0", 1, None])
def test_other_protocol_version_is_version_mismatch(protocol: Any) -> None:
    a = Connection(initiator=False)
    assert_violation(a, hello_frame(protocol=protocol), "version_mismatch")


def test_missing_protocol_field_is_version_mismatch() -> None:
    a = Connection(initiator=False)
    assert_violation(a, hello_frame(drop=["protocol"]), "version_mismatch")


def test_initiator_refuses_an_answer_of_another_version() -> None:
    i = fresh("initiator")
    assert_violation(i, answer_frame(protocol="pipekit/2"), "version_mismatch")


def test_wrong_token_is_auth_failed() -> None:
    a = Connection(initiator=False, expected_token="s3cret")
    assert_violation(a, hello_frame(token="guess"), "auth_failed")


def test_missing_token_is_auth_failed() -> None:
    a = Connection(initiator=False, expected_token="s3cret")
    assert_violation(a, hello_frame(), "auth_failed")


def test_non_string_token_is_auth_failed() -> None:
    a = Connection(initiator=False, expected_token="s3cret")
    assert_violation(a, hello_frame(token=12345), "auth_failed")


def test_correct_token_completes_the_handshake() -> None:
    i, a = connect({"token": "s3cret"}, {"expected_token": "s3cret"})
    assert i.handshake_complete and a.handshake_complete


def test_token_is_not_exposed_in_peer() -> None:
    i = Connection(initiator=True, token="s3cret")
    a = Connection(initiator=False, expected_token="s3cret")
    [event] = a.receive_data(i.data_to_send())
    assert isinstance(event, HandshakeComplete)
    assert a.peer is not None and "token" not in a.peer
    assert "token" not in event.peer


def test_token_is_ignored_by_an_acceptor_that_expects_none() -> None:
    _, a = connect({"token": "s3cret"})
    assert a.peer is not None and "token" not in a.peer


def test_send_before_the_handshake_raises_protocol_error() -> None:
    i = Connection(initiator=True)
    i.data_to_send()
    with pytest.raises(LocalProtocolError) as info:
        i.send({"i": 1})
    assert info.value.kind == "state"
    assert i.data_to_send() == b""


def test_send_many_before_the_handshake_raises_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        Connection(initiator=False).send_many([1, 2])


@pytest.mark.parametrize(
    "fields",
    [
        {"max_frame": 1023},
        {"max_frame": 2**32},
        {"max_frame": "big"},
        {"max_frame": True},
        {"high_water": 0},
        {"high_water": 1.5},
        {"name": 5},
        {"codecs": "msgpack"},
        {"codecs": ["msgpack", 1]},
    ],
    ids=repr,
)
def test_hello_with_an_invalid_field_is_malformed(fields: dict[str, Any]) -> None:
    assert_violation(Connection(initiator=False), hello_frame(**fields), "malformed")


@pytest.mark.parametrize("field", ["max_frame", "high_water", "name", "codecs"])
def test_hello_missing_a_required_field_is_malformed(field: str) -> None:
    assert_violation(Connection(initiator=False), hello_frame(drop=[field]), "malformed")


def test_hello_twice_is_malformed() -> None:
    _, a = connect()
    assert_violation(a, hello_frame(), "malformed")


def test_hello_without_the_json_flag_is_malformed() -> None:
    assert_violation(Connection(initiator=False), hello_frame(flags=0), "malformed")


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"{not json", b""], ids=["utf8", "json", "empty"])
def test_hello_payload_that_is_not_json_is_malformed(payload: bytes) -> None:
    frame = encode_frame(FrameType.HELLO, payload, json_flag=True)
    assert_violation(Connection(initiator=False), frame, "malformed")


@pytest.mark.parametrize("payload", [b"[1,2]", b'"pipekit/1"', b"null"])
def test_hello_payload_that_is_not_a_json_object_is_malformed(payload: bytes) -> None:
    frame = encode_frame(FrameType.HELLO, payload, json_flag=True)
    assert_violation(Connection(initiator=False), frame, "malformed")


def test_hello_above_64_kib_before_the_handshake_is_oversize() -> None:
    header = HEADER.pack(HELLO_MAX_FRAME + 1, FrameType.HELLO, FLAG_JSON)
    assert_violation(Connection(initiator=False), header, "oversize")


def test_hello_of_exactly_64_kib_is_accepted() -> None:
    frame = hello_frame(pad="")
    frame = hello_frame(pad="x" * (HEADER_SIZE + HELLO_MAX_FRAME - len(frame)))
    assert len(frame) == HEADER_SIZE + HELLO_MAX_FRAME
    [event] = Connection(initiator=False).receive_data(frame)
    assert isinstance(event, HandshakeComplete)


def test_acceptor_end_and_ping_queued_before_the_handshake_follow_its_hello_answer() -> None:
    i = Connection(initiator=True)
    a = Connection(initiator=False)
    a.ping(b"p")
    a.end()
    assert a.data_to_send() == b""
    a.receive_data(i.data_to_send())
    reply = a.data_to_send()
    assert frame_types(reply) == [FrameType.HELLO, FrameType.PING, FrameType.END]
    events = i.receive_data(reply)
    assert [type(e) for e in events] == [HandshakeComplete, PingReceived, EndReceived]


def test_initiator_may_send_end_before_the_answer() -> None:
    i = Connection(initiator=True)
    a = Connection(initiator=False)
    i.end()
    events = a.receive_data(i.data_to_send())
    assert [type(e) for e in events] == [HandshakeComplete, EndReceived]


# --- frames out of order ------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        data_frame(1),
        encode_frame(FrameType.END),
        encode_frame(FrameType.PING),
        encode_frame(FrameType.PONG),
        encode_frame(FrameType.PAUSE),
        encode_frame(FrameType.RESUME),
    ],
    ids=["DATA", "END", "PING", "PONG", "PAUSE", "RESUME"],
)
def test_frame_before_hello_is_malformed(frame: bytes) -> None:
    assert_violation(Connection(initiator=False), frame, "malformed")


def test_data_before_the_hello_answer_is_malformed() -> None:
    assert_violation(fresh("initiator"), data_frame(1), "malformed")


def test_error_before_the_handshake_is_reported() -> None:
    [event] = Connection(initiator=False).receive_data(error_frame(kind="busy", message="later"))
    assert event == ErrorReceived("busy", "later", {})


@pytest.mark.parametrize(
    "frame",
    [data_frame(1), encode_frame(FrameType.END), error_frame(kind="x", message="y")],
    ids=["DATA", "END", "ERROR"],
)
def test_frame_after_end_is_malformed(frame: bytes) -> None:
    _, a = connect()
    assert a.receive_data(encode_frame(FrameType.END)) == [EndReceived()]
    assert_violation(a, frame, "malformed")


@pytest.mark.parametrize(
    "frame",
    [data_frame(1), encode_frame(FrameType.END), error_frame(kind="x", message="y")],
    ids=["DATA", "END", "ERROR"],
)
def test_frame_after_error_is_malformed(frame: bytes) -> None:
    _, a = connect()
    [event] = a.receive_data(error_frame(kind="x", message="y"))
    assert isinstance(event, ErrorReceived)
    assert_violation(a, frame, "malformed")


def test_control_frames_after_end_are_accepted() -> None:
    _, a = connect()
    events = a.receive_data(
        encode_frame(FrameType.END)
        + encode_frame(FrameType.PING, b"x")
        + encode_frame(FrameType.PAUSE)
        + encode_frame(FrameType.RESUME)
    )
    assert [type(e) for e in events] == [EndReceived, PingReceived, PauseReceived, ResumeReceived]


# --- header checks ------------------------------------------------------------------


@pytest.mark.parametrize("flags", [0x0002, 0x0003, 0x8000, 0xFFFF], ids=hex)
def test_reserved_flag_bits_are_malformed(flags: int) -> None:
    _, a = connect()
    assert_violation(a, HEADER.pack(0, FrameType.END, flags), "malformed")


@pytest.mark.parametrize("ftype", [0, 9, 0x0100, 0xFFFF])
def test_unknown_frame_type_is_malformed(ftype: int) -> None:
    _, a = connect()
    assert_violation(a, HEADER.pack(0, ftype, 0), "malformed")


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    _, a = connect(acceptor={"max_frame": 1024})
    assert_violation(a, HEADER.pack(1025, FrameType.DATA, 0), "oversize")


def test_length_above_max_frame_is_refused_for_every_frame_type() -> None:
    _, a = connect(acceptor={"max_frame": 1024})
    assert_violation(a, HEADER.pack(1025, FrameType.PING, 0), "oversize")


def test_max_u32_length_is_refused_at_once() -> None:
    _, a = connect()
    assert_violation(a, HEADER.pack(0xFFFFFFFF, FrameType.DATA, 0), "oversize")


def test_oversize_header_allocates_far_less_than_the_declared_length() -> None:
    _, a = connect()
    header = HEADER.pack(0xFFFFFFFF, FrameType.DATA, 0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        events = a.receive_data(header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(events[-1], ProtocolViolation)
    assert events[-1].error.kind == "oversize"
    assert peak < 64 * 1024  # the frame claimed 4 GiB


def test_frame_of_exactly_max_frame_is_accepted() -> None:
    i, a = connect(acceptor={"max_frame": 1024})
    message = "x" * (1024 - 3)  # msgpack str 16: 0xda + u16 length + the bytes
    i.send(message)
    assert messages_of(a.receive_data(i.data_to_send())) == [message]


def test_header_of_an_allowed_length_waits_for_the_payload() -> None:
    _, a = connect()
    assert a.receive_data(HEADER.pack(DEFAULT_MAX_FRAME, FrameType.DATA, 0)) == []


def test_header_checks_run_before_the_payload_is_complete() -> None:
    _, a = connect()
    assert_violation(a, HEADER.pack(100, 42, 0) + b"\x00" * 10, "malformed")


# --- payload checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "payload"),
    [
        ("msgpack", b"\xc1"),
        ("msgpack", b"\x92\x01"),
        ("cbor", b"\xff"),
        ("cbor", b"\x82\x01"),
        ("json", b"{"),
        ("json", b'"\xff"'),
        ("json", b"1 2"),
        ("msgpack", bytes.fromhex("818000")),
        ("msgpack", bytes.fromhex("819000")),
        ("msgpack", bytes.fromhex("d6ff00000001")),
        ("cbor", bytes.fromhex("d81c81d81d00")),
        ("cbor", bytes.fromhex("a1810100")),
        ("cbor", b"\x81" * 2000 + b"\x00"),
        ("json", b"NaN"),
        ("json", b"[1e400]"),
    ],
    ids=[
        "msgpack-never-used",
        "msgpack-truncated",
        "cbor-break",
        "cbor-truncated",
        "json-truncated",
        "json-utf8",
        "json-two-values-one-line",
        "msgpack-map-key-is-a-map",
        "msgpack-map-key-is-an-array",
        "msgpack-timestamp-ext",
        "cbor-shared-reference-cycle",
        "cbor-map-key-is-an-array",
        "cbor-nested-too-deep",
        "json-nan",
        "json-out-of-double-range",
    ],
)
def test_undecodable_data_payload_is_undecodable(codec: str, payload: bytes) -> None:
    _, a = connect({"codecs": [codec]})
    assert_violation(a, encode_frame(FrameType.DATA, payload), "undecodable")


def test_undecodable_json_flagged_data_is_undecodable() -> None:
    _, a = connect()
    frame = encode_frame(FrameType.DATA, b"\x81\xa1i\x01", json_flag=True)  # msgpack bytes
    assert_violation(a, frame, "undecodable")


def test_json_flagged_data_is_json_whatever_the_codec() -> None:
    _, a = connect({"codecs": ["cbor"]})
    frame = encode_frame(FrameType.DATA, b'{"i":1}\n[2]\n\n"three"\n', json_flag=True)
    assert a.receive_data(frame) == [MessagesReceived([{"i": 1}, [2], "three"])]


@pytest.mark.parametrize(
    "ftype", [FrameType.END, FrameType.PAUSE, FrameType.RESUME], ids=lambda t: t.name
)
def test_non_empty_payload_on_end_pause_resume_is_malformed(ftype: FrameType) -> None:
    _, a = connect()
    assert_violation(a, encode_frame(ftype, b"\x00"), "malformed")


def test_error_without_the_json_flag_is_malformed() -> None:
    _, a = connect()
    frame = encode_frame(FrameType.ERROR, b'{"kind":"x","message":"y"}')
    assert_violation(a, frame, "malformed")


@pytest.mark.parametrize("payload", [b"not json", b'["x","y"]', b"\xff"])
def test_error_payload_that_is_not_a_json_object_is_malformed(payload: bytes) -> None:
    _, a = connect()
    assert_violation(a, encode_frame(FrameType.ERROR, payload, json_flag=True), "malformed")


@pytest.mark.parametrize(
    "body", [{"message": "y"}, {"kind": "x"}, {"kind": 1, "message": "y"}], ids=repr
)
def test_error_without_string_kind_and_message_is_malformed(body: dict[str, Any]) -> None:
    _, a = connect()
    assert_violation(a, error_frame(**body), "malformed")


# --- transport EOF ------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 7, 8, 12], ids=lambda n: f"{n}-bytes")
def test_eof_inside_a_frame_is_malformed(cut: int) -> None:
    _, a = connect()
    assert a.receive_data(data_frame("x" * 10)[:cut]) == []
    [event] = a.receive_eof()
    assert isinstance(event, ProtocolViolation) and event.error.kind == "malformed"
    [(ftype, _, payload)] = parse_frames(a.data_to_send())
    assert ftype == FrameType.ERROR and json.loads(payload)["kind"] == "malformed"


def test_eof_between_frames_reports_nothing() -> None:
    _, a = connect()
    a.receive_data(data_frame(1))
    assert a.receive_eof() == []


def test_eof_after_a_violation_reports_nothing_more() -> None:
    _, a = connect()
    a.receive_data(HEADER.pack(0, 99, 0) + b"\x00\x00")
    assert a.receive_eof() == []


# --- what a violation does ----------------------------------------------------------


def test_events_before_a_violation_are_still_returned() -> None:
    _, a = connect()
    events = a.receive_data(data_frame(1, 2) + HEADER.pack(0, 99, 0))
    assert events[0] == MessagesReceived([1, 2])
    assert isinstance(events[1], ProtocolViolation)


def test_violation_drops_queued_data_and_sends_only_the_error() -> None:
    _, a = connect()
    a.send("queued")
    a.receive_data(HEADER.pack(0, 99, 0))
    assert frame_types(a.data_to_send()) == [FrameType.ERROR]


def test_violation_fails_both_directions() -> None:
    _, a = connect()
    a.receive_data(HEADER.pack(0, 99, 0))
    with pytest.raises(ProtocolError):
        a.send(1)
    assert a.failure is not None and not a.can_send


def test_violation_after_our_own_end_queues_no_error_frame() -> None:
    _, a = connect()
    a.end()
    a.data_to_send()
    [event] = a.receive_data(HEADER.pack(0, 99, 0))
    assert isinstance(event, ProtocolViolation)
    assert a.data_to_send() == b""


def test_violation_error_goes_out_even_while_paused_by_the_peer() -> None:
    _, a = connect()
    a.receive_data(encode_frame(FrameType.PAUSE))
    a.receive_data(HEADER.pack(0, 99, 0))
    assert frame_types(a.data_to_send()) == [FrameType.ERROR]


# --- DATA ---------------------------------------------------------------------------


def test_data_frame_with_several_messages_delivers_them_in_order() -> None:
    _, a = connect()
    assert a.receive_data(data_frame({"i": 1}, {"i": 2}, "x")) == [
        MessagesReceived([{"i": 1}, {"i": 2}, "x"])
    ]


def test_data_frames_in_one_chunk_merge_into_one_messages_event() -> None:
    _, a = connect()
    assert a.receive_data(data_frame(1) + data_frame(2, 3)) == [MessagesReceived([1, 2, 3])]


def test_empty_data_frame_delivers_nothing() -> None:
    _, a = connect()
    assert a.receive_data(encode_frame(FrameType.DATA)) == []


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_messages_cross_with_each_codec(codec: str) -> None:
    i, a = connect({"codecs": [codec]})
    sent = [{"i": 1, "v": "x"}, [1, 2.5, None, True], "line\nbreak", 0, -(2**40)]
    for m in sent:
        i.send(m)
    assert messages_of(a.receive_data(i.data_to_send())) == sent


def test_json_messages_are_coalesced_with_newline_separators() -> None:
    i, _ = connect({"codecs": ["json"]})
    i.send(1)
    i.send(2)
    i.send({"x": 1})
    [(_, flags, payload)] = parse_frames(i.data_to_send())
    assert (flags, payload) == (0, b'1\n2\n{"x":1}')


def test_json_coalesced_frames_respect_the_peer_max_frame_with_separators() -> None:
    i, a = connect({"codecs": ["json"]}, {"max_frame": 1024})
    message = "x" * 100  # 102 bytes encoded, 103 with its separator
    for _ in range(50):
        i.send(message)
    data = i.data_to_send()
    assert max(len(p) for _, _, p in parse_frames(data)) == 9 * 103 - 1  # 10 would be 1029
    assert messages_of(a.receive_data(data)) == [message] * 50


def test_send_many_queues_every_message() -> None:
    i, a = connect()
    i.send_many([1, 2, 3])
    assert messages_of(a.receive_data(i.data_to_send())) == [1, 2, 3]


def test_send_many_queues_nothing_if_one_message_is_too_large() -> None:
    i, _ = connect(acceptor={"max_frame": 1024})
    with pytest.raises(ProtocolError) as info:
        i.send_many([1, "x" * 2000, 3])
    assert info.value.kind == "oversize"
    assert i.data_to_send() == b"" and i.messages_sent == 0


def test_send_after_end_raises_protocol_error() -> None:
    i, _ = connect()
    i.end()
    with pytest.raises(LocalProtocolError) as info:
        i.send(1)
    assert info.value.kind == "state"


def test_end_twice_raises_protocol_error() -> None:
    i, _ = connect()
    i.end()
    with pytest.raises(LocalProtocolError):
        i.end()


def test_end_is_queued_after_the_data_sent_before_it() -> None:
    i, a = connect()
    i.send(1)
    i.end()
    assert a.receive_data(i.data_to_send()) == [MessagesReceived([1]), EndReceived()]


# --- coalescing ---------------------------------------------------------------------


def test_a_lone_message_is_returned_at_once() -> None:
    i, _ = connect()
    i.send({"i": 1, "v": "x"})
    assert i.data_to_send() == encode_frame(FrameType.DATA, msgpack.packb({"i": 1, "v": "x"}))


def test_many_sends_coalesce_into_frames_of_about_coalesce_bytes() -> None:
    i, a = connect()
    sent = [{"i": n, "v": "x" * 50} for n in range(5000)]
    for m in sent:
        i.send(m)
    data = i.data_to_send()
    frames = parse_frames(data)
    largest = max(len(msgpack.packb(m)) for m in sent)
    assert len(frames) > 1
    assert all(t == FrameType.DATA for t, _, _ in frames)
    assert all(len(p) <= DEFAULT_COALESCE_BYTES for _, _, p in frames)
    assert all(len(p) > DEFAULT_COALESCE_BYTES - largest for _, _, p in frames[:-1])
    assert messages_of(a.receive_data(data)) == sent


def test_coalesce_bytes_is_configurable() -> None:
    i, _ = connect({"coalesce_bytes": 100})
    for n in range(100):
        i.send(n)  # one byte each
    frames = parse_frames(i.data_to_send())
    assert [len(p) for _, _, p in frames] == [100]
    for n in range(150):
        i.send(n + 1000)  # three bytes each
    assert [len(p) for _, _, p in parse_frames(i.data_to_send())] == [99, 99, 99, 99, 54]


def test_coalesced_frames_never_exceed_the_peer_max_frame() -> None:
    i, a = connect(acceptor={"max_frame": 1024})
    sent = ["y" * n for n in range(0, 1000, 7)]
    for m in sent:
        i.send(m)
    data = i.data_to_send()
    assert all(len(p) <= 1024 for _, _, p in parse_frames(data))
    assert messages_of(a.receive_data(data)) == sent


def test_a_message_larger_than_the_coalesce_target_gets_its_own_frame() -> None:
    i, _ = connect({"coalesce_bytes": 16})
    i.send(1)
    i.send("z" * 100)
    i.send(2)
    assert [len(p) for _, _, p in parse_frames(i.data_to_send())] == [1, 102, 1]


def test_a_message_larger_than_the_peer_max_frame_raises_oversize_and_queues_nothing() -> None:
    i, _ = connect(acceptor={"max_frame": 1024})
    with pytest.raises(ProtocolError) as info:
        i.send("x" * 1024)
    assert info.value.kind == "oversize"
    assert i.buffered_bytes == 0 and i.messages_sent == 0
    assert i.data_to_send() == b""


def test_data_to_send_is_empty_when_nothing_is_queued() -> None:
    i, _ = connect()
    assert i.data_to_send() == b""


# --- flow control -------------------------------------------------------------------


def test_pause_is_queued_when_unconsumed_reaches_high_water() -> None:
    i, a = connect(acceptor={"high_water": 4})
    i.send_many([1, 2, 3])
    a.receive_data(i.data_to_send())
    assert a.data_to_send() == b""
    i.send(4)
    a.receive_data(i.data_to_send())
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)


def test_pause_is_sent_once_while_the_peer_stays_paused() -> None:
    _, a = connect(acceptor={"high_water": 1})
    a.receive_data(data_frame(1) + data_frame(2) + data_frame(3))
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)


def test_resume_is_queued_when_consumed_drops_to_low_water() -> None:
    _, a = connect(acceptor={"high_water": 4, "low_water": 1})
    a.receive_data(data_frame(1, 2, 3, 4))
    a.data_to_send()
    a.consumed(2)
    assert a.data_to_send() == b""
    a.consumed(1)
    assert a.data_to_send() == encode_frame(FrameType.RESUME)


def test_resume_waits_for_half_the_high_water_by_default() -> None:
    _, a = connect(acceptor={"high_water": 10})
    a.receive_data(data_frame(*range(10)))
    a.data_to_send()
    a.consumed(4)
    assert a.data_to_send() == b""
    a.consumed(1)
    assert a.data_to_send() == encode_frame(FrameType.RESUME)


def test_pause_is_queued_when_unconsumed_bytes_reach_high_water_bytes() -> None:
    _, a = connect(acceptor={"high_water_bytes": 100})
    a.receive_data(data_frame("x" * 60))  # 62 payload bytes, 1 message
    assert a.data_to_send() == b""
    a.receive_data(data_frame("y" * 60))  # 124 bytes: far below 8192 messages
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)
    assert a.unconsumed == 2 and a.unconsumed_bytes == 124


def test_resume_waits_for_both_the_message_and_the_byte_low_water_marks() -> None:
    _, a = connect(
        acceptor={"high_water": 4, "low_water": 2, "high_water_bytes": 100, "low_water_bytes": 50}
    )
    a.receive_data(data_frame("a" * 60) + data_frame("b" * 60) + data_frame("c" * 60))
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)  # 186 bytes, 3 messages
    a.consumed(1)  # 2 messages (at low water) but 124 bytes
    assert a.data_to_send() == b""
    a.consumed(1)  # 62 bytes
    assert a.data_to_send() == b""
    a.consumed(1)
    assert a.data_to_send() == encode_frame(FrameType.RESUME)


def test_consuming_part_of_a_frame_releases_its_share_of_the_bytes() -> None:
    _, a = connect()
    a.receive_data(data_frame(*["x" * 48] * 4))  # 4 messages of 50 bytes in one frame
    assert a.unconsumed_bytes == 200
    a.consumed(1)
    assert a.unconsumed_bytes == 150
    a.consumed(2)
    assert a.unconsumed_bytes == 50
    a.receive_data(data_frame("y" * 98))  # a second frame of 100 bytes
    a.consumed(2)  # the first frame's last message and the second frame
    assert (a.unconsumed, a.unconsumed_bytes) == (0, 0)


def test_a_message_larger_than_high_water_bytes_pauses_until_it_is_consumed() -> None:
    _, a = connect(acceptor={"high_water_bytes": 10})
    a.receive_data(data_frame("z" * 60))
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)
    a.consumed(1)
    assert a.data_to_send() == encode_frame(FrameType.RESUME)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"high_water_bytes": 0}, "high_water_bytes must be at least 1"),
        ({"high_water_bytes": 100, "low_water_bytes": 100}, "low_water_bytes must be in"),
        ({"low_water_bytes": -1}, "low_water_bytes must be in"),
    ],
)
def test_byte_watermarks_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Connection(initiator=True, **options)


def test_no_resume_after_the_peer_ended() -> None:
    _, a = connect(acceptor={"high_water": 1})
    a.receive_data(data_frame(1) + encode_frame(FrameType.END))
    a.data_to_send()
    a.consumed(1)
    assert a.data_to_send() == b""


def test_pause_from_the_peer_is_reported_and_blocks_sending() -> None:
    i, _ = connect()
    assert i.receive_data(encode_frame(FrameType.PAUSE)) == [PauseReceived()]
    assert i.peer_paused and not i.can_send


def test_resume_from_the_peer_is_reported_and_unblocks_sending() -> None:
    i, _ = connect()
    i.receive_data(encode_frame(FrameType.PAUSE))
    assert i.receive_data(encode_frame(FrameType.RESUME)) == [ResumeReceived()]
    assert i.can_send


def test_paused_sender_holds_back_data_and_end_but_lets_pong_through() -> None:
    i, _ = connect()
    i.receive_data(encode_frame(FrameType.PAUSE))
    i.send(1)
    i.end()
    i.receive_data(encode_frame(FrameType.PING, b"hi"))
    assert i.data_to_send() == encode_frame(FrameType.PONG, b"hi")
    i.receive_data(encode_frame(FrameType.RESUME))
    assert frame_types(i.data_to_send()) == [FrameType.DATA, FrameType.END]


def test_paused_sender_holds_back_error_behind_data() -> None:
    i, _ = connect()
    i.receive_data(encode_frame(FrameType.PAUSE))
    i.send(1)
    i.fail("boom", "it broke")
    assert i.data_to_send() == b""
    i.receive_data(encode_frame(FrameType.RESUME))
    assert frame_types(i.data_to_send()) == [FrameType.DATA, FrameType.ERROR]


def test_paused_sender_still_sends_ping() -> None:
    i, _ = connect()
    i.receive_data(encode_frame(FrameType.PAUSE))
    i.send(1)
    i.ping(b"t")
    assert i.data_to_send() == encode_frame(FrameType.PING, b"t")


def test_end_sent_while_paused_is_delivered_after_all_data_once_resumed() -> None:
    i, a = connect(acceptor={"high_water": 2})
    events: list[Event] = []
    for n in range(6):
        i.send(n)
        events += a.receive_data(i.data_to_send())
        i.receive_data(a.data_to_send())  # the PAUSE, once 2 messages are unconsumed
    i.end()
    assert i.peer_paused and i.data_to_send() == b""  # messages 2..5 and END wait
    a.consumed(2)
    i.receive_data(a.data_to_send())  # RESUME
    events += a.receive_data(i.data_to_send())
    assert events == [
        MessagesReceived([0]),
        MessagesReceived([1]),
        MessagesReceived([2, 3, 4, 5]),
        EndReceived(),
    ]


def test_data_past_pause_slack_after_pause_is_a_flow_control_error() -> None:
    i, a = connect(acceptor={"high_water": 1, "pause_slack": 100})
    i.send("first")
    a.receive_data(i.data_to_send())
    assert a.data_to_send() == encode_frame(FrameType.PAUSE)  # never delivered to i
    i.send("x" * 60)
    assert a.receive_data(i.data_to_send()) == [MessagesReceived(["x" * 60])]
    i.send("y" * 60)
    error = assert_violation(a, i.data_to_send(), "flow_control", FlowControlError)
    assert "flow control violated" in error.message


def test_data_of_exactly_pause_slack_after_pause_is_accepted() -> None:
    _, a = connect(acceptor={"high_water": 1, "pause_slack": 14})
    a.receive_data(data_frame(1))
    frame = data_frame("xxxxx")  # 14 bytes: its header and 6 payload bytes
    assert a.receive_data(frame) == [MessagesReceived(["xxxxx"])]
    assert_violation(a, data_frame(), "flow_control", FlowControlError)


def test_pause_slack_counts_the_headers_of_data_frames_even_empty_ones() -> None:
    _, a = connect(acceptor={"high_water": 1, "pause_slack": 80})
    a.receive_data(data_frame(1))
    assert a.receive_data(data_frame() * 10) == []  # 80 bytes of empty DATA frames
    assert_violation(a, data_frame(), "flow_control", FlowControlError)


def test_pause_slack_counts_again_from_zero_after_a_new_pause() -> None:
    _, a = connect(acceptor={"high_water": 1, "low_water": 0, "pause_slack": 14})
    a.receive_data(data_frame(1) + data_frame("xxxxx"))
    a.consumed(2)
    a.receive_data(data_frame(2))  # pauses again
    assert a.receive_data(data_frame("yyyyy")) == [MessagesReceived(["yyyyy"])]


def test_the_flow_control_error_reaches_the_peer_as_error_received() -> None:
    i, a = connect(acceptor={"high_water": 1, "pause_slack": 0})
    a.receive_data(data_frame(1) + data_frame(2))
    events = i.receive_data(a.data_to_send())
    assert [type(e) for e in events] == [PauseReceived, ErrorReceived]
    assert isinstance(events[1], ErrorReceived) and events[1].kind == "flow_control"


# --- PING, PONG, ERROR --------------------------------------------------------------


def test_ping_is_answered_by_a_pong_echoing_its_payload() -> None:
    _, a = connect()
    assert a.receive_data(encode_frame(FrameType.PING, b"\x00\x01abc")) == [
        PingReceived(b"\x00\x01abc")
    ]
    assert a.data_to_send() == encode_frame(FrameType.PONG, b"\x00\x01abc")


def test_ping_round_trip_reports_pong() -> None:
    i, a = connect()
    i.ping(b"42")
    a.receive_data(i.data_to_send())
    assert i.receive_data(a.data_to_send()) == [PongReceived(b"42")]


def test_a_ping_while_the_last_pong_is_still_queued_replaces_that_pong() -> None:
    _, a = connect()
    events = a.receive_data(b"".join(encode_frame(FrameType.PING, p) for p in (b"1", b"2", b"3")))
    assert events == [PingReceived(b"1"), PingReceived(b"2"), PingReceived(b"3")]
    assert a.buffered_bytes == HEADER_SIZE + 1
    assert a.data_to_send() == encode_frame(FrameType.PONG, b"3")  # only the latest
    a.receive_data(encode_frame(FrameType.PING, b"4"))
    assert a.data_to_send() == encode_frame(FrameType.PONG, b"4")  # the last one went out


def test_a_pong_goes_out_with_the_control_frames_queued_before_it() -> None:
    _, a = connect(acceptor={"high_water": 1})
    a.receive_data(data_frame(1) + encode_frame(FrameType.PING, b"p"))
    assert frame_types(a.data_to_send()) == [FrameType.PAUSE, FrameType.PONG]


def test_pings_past_pause_slack_while_a_pong_is_owed_are_a_flow_control_error() -> None:
    _, a = connect(acceptor={"pause_slack": 100})
    ping = encode_frame(FrameType.PING, b"p" * 42)  # 50 bytes with its header
    a.receive_data(ping * 3)  # 100 bytes arrive while a PONG is owed: tolerated
    assert a.failure is None
    error = assert_violation(a, ping, "flow_control", FlowControlError)
    assert "flow control violated" in error.message and "PING" in error.message


def test_pings_owed_count_from_zero_once_the_pong_is_taken() -> None:
    _, a = connect(acceptor={"pause_slack": 100})
    ping = encode_frame(FrameType.PING, b"p" * 42)
    for _ in range(10):
        a.receive_data(ping * 3)
        assert frame_types(a.data_to_send()) == [FrameType.PONG]
    assert a.failure is None


def test_a_peer_flooding_1_mib_pings_without_reading_is_cut_off_in_bounded_memory() -> None:
    """Issue 13, item 1: a peer that sends 1 MiB PINGs and never reads its PONGs."""
    _, a = connect()
    ping = encode_frame(FrameType.PING, b"\xa5" * (1 << 20))
    most = 0
    for _ in range(1024):  # up to 1 GiB of PINGs
        events = a.receive_data(ping)
        most = max(most, a.buffered_bytes)
        if a.failure is not None:
            break
    assert most <= 2 * len(ping) < 64 * 1024 * 1024
    assert isinstance(events[-1], ProtocolViolation)
    assert isinstance(a.failure, FlowControlError)
    assert DEFAULT_PAUSE_SLACK < a.bytes_received <= DEFAULT_PAUSE_SLACK + 2 * len(ping)


def test_error_from_the_peer_becomes_error_received_with_details() -> None:
    i, a = connect()
    i.fail("bad_input", "field 'v' missing", module="parse", line=3)
    assert a.receive_data(i.data_to_send()) == [
        ErrorReceived("bad_input", "field 'v' missing", {"module": "parse", "line": 3})
    ]


def test_fail_queues_error_after_the_data_sent_before_it() -> None:
    i, a = connect()
    i.send(1)
    i.fail("boom", "it broke")
    events = a.receive_data(i.data_to_send())
    assert events == [MessagesReceived([1]), ErrorReceived("boom", "it broke", {})]


def test_fail_after_end_is_a_no_op() -> None:
    i, _ = connect()
    i.end()
    i.data_to_send()
    i.fail("boom", "too late")
    assert i.data_to_send() == b""


def test_the_other_direction_stays_open_after_end() -> None:
    i, a = connect()
    i.end()
    a.receive_data(i.data_to_send())
    a.send("reply")
    assert messages_of(i.receive_data(a.data_to_send())) == ["reply"]


# --- any chunking decodes the same ---------------------------------------------------

Normalized = list[tuple[str, Any]]


def normalize(events: Iterable[Event]) -> Normalized:
    """Events with message batching erased: one entry per message or frame."""
    out: Normalized = []
    for e in events:
        if isinstance(e, MessagesReceived):
            out.extend(("message", m) for m in e.messages)
        elif isinstance(e, HandshakeComplete):
            out.append(("handshake", e.codec))
        elif isinstance(e, PingReceived):
            out.append(("ping", e.payload))
        elif isinstance(e, PongReceived):
            out.append(("pong", e.payload))
        elif isinstance(e, PauseReceived):
            out.append(("pause", None))
        elif isinstance(e, ResumeReceived):
            out.append(("resume", None))
        elif isinstance(e, EndReceived):
            out.append(("end", None))
        else:
            out.append(("unexpected", e))
    return out


def message_values(*, binary: bool) -> st.SearchStrategy[Any]:
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=20),
        *([st.binary(max_size=20)] if binary else []),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=8,
    )


@st.composite
def valid_streams(draw: st.DrawFn) -> tuple[bytes, Normalized]:
    """A byte stream written by a real initiator, and the events it must decode to.

    It starts with the initiator's HELLO and ends with END; in between: DATA (sent
    messages, coalesced), PING, PONG (the initiator answering a PING), PAUSE and RESUME
    (the initiator's own receive flow control, driven by feeding it DATA)."""
    codec = draw(st.sampled_from(CODEC_NAMES))
    values = message_values(binary=codec != "json")
    ops: list[tuple[str, Any]] = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("send"), st.lists(values, min_size=1, max_size=6)),
                st.tuples(st.just("ping"), st.binary(max_size=8)),
                st.tuples(st.just("pong"), st.binary(max_size=8)),
                st.tuples(st.just("flow"), st.none()),
            ),
            max_size=10,
        )
    )
    coalesce = draw(st.sampled_from([8, 64, DEFAULT_COALESCE_BYTES]))
    initiator = Connection(initiator=True, codecs=[codec], high_water=1, coalesce_bytes=coalesce)
    acceptor = Connection(initiator=False)
    stream = bytearray(initiator.data_to_send())
    acceptor.receive_data(bytes(stream))
    initiator.receive_data(acceptor.data_to_send())
    expected: Normalized = [("handshake", codec)]
    for op, arg in ops:
        if op == "send":
            for message in arg:
                initiator.send(message)
            expected.extend(("message", m) for m in arg)
        elif op == "ping":
            initiator.ping(arg)
            expected.append(("ping", arg))
        elif op == "pong":
            initiator.receive_data(encode_frame(FrameType.PING, arg))
            expected.append(("pong", arg))
        elif not initiator.paused_peer:
            initiator.receive_data(encode_frame(FrameType.DATA, get_codec(codec).encode(0)))
            expected.append(("pause", None))
        else:
            initiator.consumed(initiator.unconsumed)
            expected.append(("resume", None))
        stream += initiator.data_to_send()
    initiator.end()
    stream += initiator.data_to_send()
    expected.append(("end", None))
    return bytes(stream), expected


def decode_in_chunks(
    stream: bytes, cuts: Iterable[int], high_water: int | None = None
) -> Normalized:
    """Feed ``stream`` cut at ``cuts``. With ``high_water``, the acceptor decodes on
    demand and its application consumes everything after each chunk."""
    if high_water is None:
        acceptor = Connection(initiator=False, high_water=10**9)
    else:
        acceptor = Connection(initiator=False, high_water=high_water, decode_on_demand=True)
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        chunk = acceptor.receive_data(stream[start:cut])
        events.extend(chunk if high_water is None else drain(acceptor, chunk))
        start = max(start, cut)
    events.extend(acceptor.receive_eof())
    return normalize(events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=valid_streams(), data=st.data())
def test_any_split_of_a_valid_stream_decodes_to_the_same_events(
    case: tuple[bytes, Normalized], data: st.DataObject
) -> None:
    stream, expected = case
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=40))
    whole = decode_in_chunks(stream, [])
    assert whole == expected
    assert decode_in_chunks(stream, cuts) == whole
    assert decode_in_chunks(stream, range(1, len(stream))) == whole  # one byte at a time
    high_water = data.draw(st.integers(min_value=1, max_value=4))
    on_demand = decode_in_chunks(stream, cuts, high_water)
    # Decoding on demand holds DATA back, not control frames: the same messages in the
    # same order, and the same control frames, possibly earlier than held messages.
    assert [e for e in on_demand if e[0] == "message"] == [e for e in whole if e[0] == "message"]
    assert sorted(map(repr, on_demand)) == sorted(map(repr, whole))
    assert on_demand[-1] == whole[-1] == ("end", None)


# --- docs/protocol.md is generated from this code ------------------------------------


def dump_frame(frame: bytes) -> str:
    """Render one frame the way docs/protocol.md shows it."""
    length, ftype, flags = HEADER.unpack_from(frame)
    name = FrameType(ftype).name
    head = " ".join(f"{b:02x}" for b in frame[:HEADER_SIZE])
    flag_note = " (JSON)" if flags & FLAG_JSON else ""
    lines = [f"{head}   {name}, length {length}, flags 0x{flags:04x}{flag_note}"]
    payload = frame[HEADER_SIZE:]
    for offset in range(0, len(payload), 16):
        chunk = payload[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"    {hexes:<47}  |{text}|")
    return "\n".join(lines)


def dump(data: bytes) -> str:
    """Render every frame of ``data``, one after the other."""
    out = []
    pos = 0
    while pos < len(data):
        length = HEADER.unpack_from(data, pos)[0]
        out.append(dump_frame(data[pos : pos + HEADER_SIZE + length]))
        pos += HEADER_SIZE + length
    return "\n".join(out)


def spec_frame_examples() -> list[tuple[str, bytes]]:
    """One example of every frame type, as docs/protocol.md section 9 shows them."""
    offer = Connection(initiator=True, name="producer", codecs=["msgpack", "json"], token="s3cret")
    answer = Connection(initiator=False, name="consumer", high_water=1000)
    hello_offer = offer.data_to_send()
    answer.receive_data(hello_offer)
    hello_answer = answer.data_to_send()
    offer.receive_data(hello_answer)
    offer.send({"i": 1, "v": "x"})
    data = offer.data_to_send()
    offer.fail("bad_input", "field 'v' missing", module="parse")
    error = offer.data_to_send()
    refuse = Connection(initiator=False)
    refuse.receive_data(hello_frame(protocol="pipekit/2"))
    json_lines = b'{"i":1,"v":"x"}\n{"i":2,"v":"y"}'
    return [
        ("HELLO (offer)", hello_offer),
        ("HELLO (answer)", hello_answer),
        ("DATA", data),
        ("DATA (JSON flag)", encode_frame(FrameType.DATA, json_lines, json_flag=True)),
        ("END", encode_frame(FrameType.END)),
        ("ERROR", error),
        ("ERROR (refusing a handshake)", refuse.data_to_send()),
        ("PING", encode_frame(FrameType.PING, b"t1")),
        ("PONG", encode_frame(FrameType.PONG, b"t1")),
        ("PAUSE", encode_frame(FrameType.PAUSE)),
        ("RESUME", encode_frame(FrameType.RESUME)),
    ]


def spec_session() -> list[tuple[str, bytes, list[Event]]]:
    """The sample session of docs/protocol.md: (direction, bytes written, events the
    other side's receive_data returned)."""
    producer = Connection(initiator=True, name="producer")
    consumer = Connection(initiator=False, name="consumer", high_water=2)
    steps: list[tuple[str, bytes, list[Event]]] = []

    def write(source: Connection, sink: Connection) -> None:
        data = source.data_to_send()
        direction = "P -> C" if source is producer else "C -> P"
        steps.append((direction, data, sink.receive_data(data)))

    write(producer, consumer)  # HELLO
    write(consumer, producer)  # HELLO answer
    producer.send({"i": 1, "v": "x"})
    producer.send({"i": 2, "v": "y"})
    write(producer, consumer)  # DATA with two messages
    write(consumer, producer)  # PAUSE: 2 unconsumed messages = high water
    producer.send({"i": 3, "v": "z"})
    producer.end()
    producer.ping(b"t1")
    write(producer, consumer)  # only the PING: DATA and END wait for RESUME
    write(consumer, producer)  # PONG
    consumer.consumed(2)
    write(consumer, producer)  # RESUME
    write(producer, consumer)  # DATA + END
    consumer.consumed(1)
    consumer.end()
    write(consumer, producer)  # END
    return steps


def test_spec_sample_session_produces_the_documented_events() -> None:
    events = [[type(e).__name__ for e in step[2]] for step in spec_session()]
    assert events == [
        ["HandshakeComplete"],
        ["HandshakeComplete"],
        ["MessagesReceived"],
        ["PauseReceived"],
        ["PingReceived"],
        ["PongReceived"],
        ["ResumeReceived"],
        ["MessagesReceived", "EndReceived"],
        ["EndReceived"],
    ]


def test_spec_frame_examples_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for title, frame in spec_frame_examples():
        assert dump(frame) in text, f"docs/protocol.md: example {title!r} is out of date"


def hex_lines(data: bytes) -> str:
    """Plain hex, 32 bytes per line: the test vectors of docs/protocol.md."""
    return "\n".join(data[n : n + 32].hex() for n in range(0, len(data), 32))


def spec_test_vectors() -> dict[str, bytes]:
    """Everything each side of the sample session wrote, concatenated."""
    streams = {"P -> C": b"", "C -> P": b""}
    for direction, data, _ in spec_session():
        streams[direction] += data
    return streams


def test_spec_test_vectors_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for direction, stream in spec_test_vectors().items():
        assert hex_lines(stream) in text, f"docs/protocol.md: {direction} vector is out of date"


def test_spec_test_vectors_decode_to_the_session_events() -> None:
    vectors = spec_test_vectors()
    acceptor = Connection(initiator=False, high_water=2)
    initiator = Connection(initiator=True)
    assert normalize(acceptor.receive_data(vectors["P -> C"])) == [
        ("handshake", "msgpack"),
        ("message", {"i": 1, "v": "x"}),
        ("message", {"i": 2, "v": "y"}),
        ("ping", b"t1"),
        ("message", {"i": 3, "v": "z"}),
        ("end", None),
    ]
    assert normalize(initiator.receive_data(vectors["C -> P"])) == [
        ("handshake", "msgpack"),
        ("pause", None),
        ("pong", b"t1"),
        ("resume", None),
        ("end", None),
    ]


def test_spec_sample_session_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    position = text.index("Sample session\n")
    for number, (direction, data, _) in enumerate(spec_session(), 1):
        block = f"{direction}\n{dump(data)}"
        found = text.find(block, position)
        assert found >= 0, f"docs/protocol.md: session write {number} is out of date"
        position = found + len(block)


# -- message transports: one frame per message -------------------------------------------


def assert_refused(events: list[Event], conn: Connection, kind: str) -> None:
    """``events`` end in a violation of ``kind`` and one ERROR frame of it is queued."""
    assert events and isinstance(events[-1], ProtocolViolation), events
    assert events[-1].error.kind == kind, events[-1].error
    errors = [f for f in parse_frames(conn.data_to_send()) if f[0] == FrameType.ERROR]
    assert len(errors) == 1
    assert json.loads(errors[0][2])["kind"] == kind


def test_frames_to_send_returns_one_bytes_per_frame() -> None:
    a, _ = connect()
    a.send("x")
    a.end()
    frames = a.frames_to_send()
    assert [HEADER.unpack_from(f)[1] for f in frames] == [FrameType.DATA, FrameType.END]
    assert all(len(f) == HEADER_SIZE + HEADER.unpack_from(f)[0] for f in frames)


def test_frames_to_send_counts_bytes_sent_like_data_to_send() -> None:
    a, _ = connect()
    before = a.bytes_sent
    a.send(b"payload")
    frames = a.frames_to_send()
    assert a.bytes_sent - before == sum(len(f) for f in frames)


def test_receive_frame_accepts_exactly_one_frame() -> None:
    a, b = connect()
    a.send_many([1, 2, 3])
    (frame,) = a.frames_to_send()
    assert messages_of(b.receive_frame(frame)) == [1, 2, 3]


def test_receive_frame_refuses_two_frames_in_one_message() -> None:
    a, b = connect()
    a.send(1)
    a.end()
    data = a.data_to_send()
    assert_refused(b.receive_frame(data), b, "malformed")


def test_receive_frame_refuses_a_partial_frame() -> None:
    a, b = connect()
    a.send("hello")
    (frame,) = a.frames_to_send()
    assert_refused(b.receive_frame(frame[:-1]), b, "malformed")


def test_receive_frame_refuses_a_message_shorter_than_a_header() -> None:
    _, b = connect()
    assert_refused(b.receive_frame(b"\x00\x01"), b, "malformed")


@pytest.mark.parametrize("size", [1, HEADER_SIZE - 1])
def test_receive_frame_refuses_a_message_one_byte_short_of_a_header(size: int) -> None:
    _, b = connect()
    assert_refused(b.receive_frame(encode_frame(FrameType.END)[:size]), b, "malformed")


def test_receive_frame_never_joins_two_short_messages_into_a_frame() -> None:
    _, b = connect()
    end = encode_frame(FrameType.END)
    assert_refused(b.receive_frame(end[:7]), b, "malformed")
    assert not any(isinstance(e, EndReceived) for e in b.receive_frame(end[7:]))
    assert b.receive_state is Direction.FAILED


def test_receive_frame_reports_an_oversize_length_as_oversize() -> None:
    _, b = connect()
    header = HEADER.pack(b.max_frame + 1, FrameType.DATA, 0)
    assert_refused(b.receive_frame(header), b, "oversize")


def test_reject_queues_an_error_with_the_kind_and_fails_the_connection() -> None:
    _, b = connect()
    events = b.reject("text message", "malformed")
    assert_refused(events, b, "malformed")
    assert b.failure is not None
    assert b.reject("again") == [ProtocolViolation(b.failure)]


# -- large bytes travel by reference ---------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "cbor"])
def test_a_large_bytes_message_is_handed_to_the_transport_uncopied(codec: str) -> None:
    a, b = connect({"codecs": [codec]})
    blob = bytes(range(256)) * 1024  # 256 KiB
    a.send("before")
    a.send(blob)
    a.send("after")
    pieces = a.data_to_send_pieces()
    assert any(piece is blob for piece in pieces)
    assert messages_of(b.receive_data(b"".join(pieces))) == ["before", blob, "after"]


def test_a_large_message_in_a_batch_is_its_own_frame_and_not_joined_to_its_header() -> None:
    a, b = connect()
    big = {"blob": "q" * 100_000}
    a.send_many(["before", big, "after", b"r" * 70_000])
    pieces = a.data_to_send_pieces()
    encoded = a.codec.encode(big)  # type: ignore[union-attr]
    assert encoded in pieces  # a piece of its own: a 100 KB message is not copied again
    assert max(map(len, pieces)) == len(encoded)
    assert messages_of(b.receive_data(b"".join(pieces))) == [
        "before",
        big,
        "after",
        b"r" * 70_000,
    ]


def test_a_lone_large_message_is_not_joined_to_its_header() -> None:
    a, b = connect()
    big = ["w" * 100_000]
    pieces = a.send_and_take(big)
    assert [len(p) for p in pieces] == [HEADER_SIZE, len(a.codec.encode(big))]  # type: ignore[union-attr]
    assert messages_of(b.receive_data(b"".join(pieces))) == [big]


def test_a_large_bytes_message_over_json_is_encoded_normally() -> None:
    a, _ = connect({"codecs": ["json"]})
    with pytest.raises(CodecError):
        a.send(b"x" * 100_000)


def test_data_to_send_joins_the_pieces() -> None:
    a, b = connect()
    blob = b"z" * 100_000
    a.send(blob)
    a.end()
    data = a.data_to_send()
    events = b.receive_data(data)
    assert messages_of(events) == [blob]
    assert isinstance(events[-1], EndReceived)


def test_frames_to_send_keeps_a_by_reference_frame_whole() -> None:
    a, b = connect()
    blob = b"w" * 100_000
    a.send(blob)
    (frame,) = a.frames_to_send()
    assert len(frame) == HEADER_SIZE + HEADER.unpack_from(frame)[0]
    assert messages_of(b.receive_frame(frame)) == [blob]


def test_an_unwritten_tail_goes_out_first_and_completes_the_frames() -> None:
    a, b = connect()
    blob = bytes(range(256)) * 512
    a.send(blob)
    a.send("next")
    pieces = a.data_to_send_pieces()
    wire = b"".join(pieces)
    a.unwritten(pieces, 1000)
    a.ping(b"later")
    a.send("after")
    rest = a.data_to_send()
    assert rest.startswith(wire[1000:])
    first, ping, last = b.receive_data(wire[:1000] + rest)
    assert messages_of([first]) == [blob, "next"]
    assert isinstance(ping, PingReceived)
    assert messages_of([last]) == ["after"]


def test_an_unwritten_tail_goes_out_while_the_peer_has_paused_us() -> None:
    a, b = connect()
    blob = b"p" * 100_000
    a.send(blob)
    pieces = a.data_to_send_pieces()
    a.unwritten(pieces, HEADER_SIZE + 10)
    a.receive_data(encode_frame(FrameType.PAUSE))
    a.send("held back")
    tail = a.data_to_send()
    assert len(tail) == HEADER_SIZE + 5 + len(blob) - (HEADER_SIZE + 10)
    assert messages_of(b.receive_data(b"".join(pieces)[: HEADER_SIZE + 10] + tail)) == [blob]
    assert a.buffered_bytes > 0  # "held back" waits for RESUME


def test_data_to_send_returns_everything_queued_however_large() -> None:
    a, b = connect()
    blob = b"d" * (64 * 1024)
    a.send_many([blob] * 64)  # 4 MiB
    assert messages_of(b.receive_data(a.data_to_send())) == [blob] * 64
    assert not a.has_data_to_send


def test_one_take_hands_out_about_take_max_bytes_and_a_pause_holds_the_rest() -> None:
    a, b = connect()
    blob = b"k" * (64 * 1024)
    a.send_many([blob] * 64)  # 4 MiB
    first = a.data_to_send_pieces()
    assert TAKE_MAX <= sum(map(len, first)) < TAKE_MAX + HEADER_SIZE + 5 + len(blob)
    a.receive_data(encode_frame(FrameType.PAUSE))
    assert a.data_to_send_pieces() == []  # the rest waits for RESUME
    a.receive_data(encode_frame(FrameType.RESUME))
    rest: list[bytes | memoryview] = []
    while a.has_data_to_send:
        rest += a.data_to_send_pieces()
    assert a.buffered_bytes == 0
    assert messages_of(b.receive_data(b"".join(first + rest))) == [blob] * 64


def test_a_frame_larger_than_take_max_is_taken_whole() -> None:
    a, b = connect()
    blob = b"w" * (2 * TAKE_MAX)
    a.send(blob)
    a.send("after")
    first = a.data_to_send_pieces()
    assert any(piece is blob for piece in first)
    assert a.has_data_to_send  # "after": the next take
    assert messages_of(b.receive_data(b"".join(first) + a.data_to_send())) == [blob, "after"]


def test_an_unwritten_tail_counts_as_buffered_and_not_as_sent() -> None:
    a, _ = connect()
    before = a.bytes_sent
    a.send(b"c" * 100_000)
    pieces = a.data_to_send_pieces()
    total = sum(map(len, pieces))
    a.unwritten(pieces, 4096)
    assert a.bytes_sent == before + 4096
    assert a.buffered_bytes == total - 4096
    assert a.has_data_to_send
    a.data_to_send()
    assert a.bytes_sent == before + total
    assert a.buffered_bytes == 0


def test_unwritten_refuses_a_count_beyond_the_pieces() -> None:
    a, _ = connect()
    a.send(b"c" * 100_000)
    pieces = a.data_to_send_pieces()
    with pytest.raises(ValueError, match="exceeds"):
        a.unwritten(pieces, sum(map(len, pieces)) + 1)


def test_a_violation_drops_queued_by_reference_frames_too() -> None:
    a, _ = connect()
    a.send(b"v" * 100_000)
    a.receive_data(b"\xff" * HEADER_SIZE)
    frames = parse_frames(a.data_to_send())
    assert [f[0] for f in frames] == [FrameType.ERROR]


# -- hostile JSON ------------------------------------------------------------------------


def test_token_that_is_not_valid_unicode_is_auth_failed() -> None:
    # JSON can carry a lone surrogate ("\ud800"), which str.encode("utf-8") refuses.
    a = Connection(initiator=False, expected_token="s3cret")
    assert_violation(a, hello_frame(token="\ud800"), "auth_failed")


NESTED_JSON = b"[" * 30_000 + b"]" * 30_000
"""Valid JSON nested deeper than Python's recursion limit (json.loads raises
RecursionError, which is not a ValueError)."""


def test_hello_nested_too_deep_is_malformed() -> None:
    frame = encode_frame(FrameType.HELLO, NESTED_JSON, json_flag=True)
    assert_violation(Connection(initiator=False), frame, "malformed")


def test_error_nested_too_deep_is_malformed() -> None:
    _, a = connect()
    frame = encode_frame(FrameType.ERROR, NESTED_JSON, json_flag=True)
    assert_violation(a, frame, "malformed")


@pytest.mark.parametrize("json_flag", [False, True], ids=["json-codec", "json-flag"])
def test_json_data_nested_too_deep_is_undecodable(json_flag: bool) -> None:
    _, a = connect({"codecs": ["json"]})
    frame = encode_frame(FrameType.DATA, NESTED_JSON, json_flag=json_flag)
    assert_violation(a, frame, "undecodable")


# -- decoding on demand: the receive window ---------------------------------------------------


def on_demand(**options: Any) -> tuple[Connection, Connection]:
    """A connected (initiator, acceptor) pair whose acceptor decodes on demand."""
    i = Connection(initiator=True)
    a = Connection(initiator=False, decode_on_demand=True, **options)
    a.receive_data(i.data_to_send())
    i.receive_data(a.data_to_send())
    return i, a


def drain(conn: Connection, events: list[Event]) -> list[Event]:
    """What a framed pipe does: its application consumes everything delivered, and it
    asks the machine for what it held back, until nothing is left."""
    out = list(events)
    for _ in range(10**6):
        conn.consumed(conn.unconsumed)
        more = conn.receive_held()
        if not more:
            return out
        out += more
    raise AssertionError("receive_held never ran dry")


def peak_allocated(action: Any) -> int:
    """Bytes allocated at the peak while ``action()`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        action()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_on_demand_decodes_no_more_than_the_high_water_mark() -> None:
    i, a = on_demand(high_water=10)
    i.send_many(range(25))
    events = a.receive_data(i.data_to_send())
    assert messages_of(events) == list(range(10))
    assert a.unconsumed == 10 and a.held_bytes > 0
    assert frame_types(a.data_to_send()) == [FrameType.PAUSE]


def test_on_demand_receive_held_waits_for_the_low_water_mark() -> None:
    i, a = on_demand(high_water=10)  # low water 5
    i.send_many(range(25))
    a.receive_data(i.data_to_send())
    a.consumed(4)
    assert a.receive_held() == []  # 6 unconsumed: above the low mark
    a.consumed(1)
    assert messages_of(a.receive_held()) == list(range(10, 15))  # up to high water again
    assert a.unconsumed == 10


def test_on_demand_delivers_everything_in_order_and_end_after_it() -> None:
    i, a = on_demand(high_water=7)
    sent: list[int] = []
    for n in range(100):
        batch = [n, *range(1000 + n, 1030 + n)] if n % 9 == 0 else [n]
        i.send_many(batch)
        sent += batch
    i.end()
    events = drain(a, a.receive_data(i.data_to_send()))
    assert messages_of(events) == sent
    assert isinstance(events[-1], EndReceived)
    assert a.held_bytes == 0 and a.unconsumed == 0


def test_on_demand_resumes_the_peer_only_once_nothing_is_held() -> None:
    i, a = on_demand(high_water=4, low_water=0)
    i.send_many(range(12))
    a.receive_data(i.data_to_send())
    assert frame_types(a.data_to_send()) == [FrameType.PAUSE]
    assert a.consumed(4) is False  # 8 messages are still held: no RESUME
    assert messages_of(a.receive_held()) == [4, 5, 6, 7]
    assert a.data_to_send() == b""
    a.consumed(4)
    assert messages_of(a.receive_held()) == [8, 9, 10, 11]
    assert a.held_bytes == 0
    assert a.consumed(4) is True
    assert frame_types(a.data_to_send()) == [FrameType.RESUME]


def test_on_demand_control_frames_are_not_held_behind_data() -> None:
    i, a = on_demand(high_water=2)
    i.send_many(range(5))
    data = i.data_to_send()
    i.ping(b"p")
    events = a.receive_data(data + i.data_to_send() + encode_frame(FrameType.PAUSE))
    assert events == [MessagesReceived([0, 1]), PingReceived(b"p"), PauseReceived()]
    assert frame_types(a.data_to_send()) == [FrameType.PAUSE, FrameType.PONG]


def test_on_demand_an_error_behind_held_data_comes_after_it() -> None:
    i, a = on_demand(high_water=2)
    i.send_many(range(5))
    i.fail("bad_input", "no more")
    events = drain(a, a.receive_data(i.data_to_send()))
    assert messages_of(events) == list(range(5))
    assert events[-1] == ErrorReceived("bad_input", "no more", {})
    assert a.receive_state is Direction.FAILED


@pytest.mark.parametrize("codec", CODEC_NAMES)
def test_on_demand_slices_frames_of_every_codec_and_json_flagged_ones(codec: str) -> None:
    i = Connection(initiator=True, codecs=[codec], coalesce_bytes=10**6)
    a = Connection(initiator=False, decode_on_demand=True, high_water=3)
    a.receive_data(i.data_to_send())
    i.receive_data(a.data_to_send())
    i.send_many([{"n": n} for n in range(20)])
    flagged = encode_frame(FrameType.DATA, b'{"j":1}\n\n{"j":2}\n', json_flag=True)
    events = drain(a, a.receive_data(i.data_to_send() + flagged))
    assert messages_of(events) == [{"n": n} for n in range(20)] + [{"j": 1}, {"j": 2}]


def test_on_demand_an_undecodable_message_deep_in_a_frame_is_found_when_reached() -> None:
    _, a = on_demand(high_water=2)
    payload = b"\x01\x02\x03\x04\xc1"
    events = a.receive_data(encode_frame(FrameType.DATA, payload))
    assert messages_of(events) == [1, 2]
    a.consumed(2)
    events = a.receive_held()
    assert messages_of(events) == [3, 4]
    a.consumed(2)
    events = a.receive_held()
    assert isinstance(events[-1], ProtocolViolation)
    assert events[-1].error.kind == "undecodable"
    assert json.loads(parse_frames(a.data_to_send())[-1][2])["kind"] == "undecodable"
    assert a.held_bytes == 0


def test_on_demand_a_violation_drops_what_was_held() -> None:
    i, a = on_demand(high_water=2)
    i.send_many(range(50))
    a.receive_data(i.data_to_send())
    events = a.receive_data(encode_frame(99))
    assert isinstance(events[-1], ProtocolViolation)
    assert a.held_bytes == 0 and a.receive_held() == []


def test_an_8_mib_frame_of_empty_maps_is_decoded_a_window_at_a_time_in_bounded_memory() -> None:
    """Issue 13, item 2: one legal 8 MiB DATA frame of empty msgpack maps."""
    _, a = on_demand()
    frame = encode_frame(FrameType.DATA, b"\x80" * DEFAULT_MAX_FRAME)
    got: list[int] = []

    def receive() -> None:
        events = a.receive_data(frame)
        got.append(len(messages_of(events)))
        for _ in range(3):  # the application takes some, more are decoded
            a.consumed(a.unconsumed)
            got.append(len(messages_of(a.receive_held())))

    peak = peak_allocated(receive)
    assert got == [DEFAULT_HIGH_WATER] * 4
    assert a.held_bytes == DEFAULT_MAX_FRAME - 4 * DEFAULT_HIGH_WATER
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_a_peer_ignoring_pause_with_1_byte_messages_is_cut_off_in_bounded_memory() -> None:
    """Issue 13, item 3: 64 KiB DATA frames of 1-byte messages, PAUSE ignored."""
    _, a = on_demand()
    frame = encode_frame(FrameType.DATA, b"\x01" * (64 * 1024))
    events: list[Event] = []

    def flood() -> None:
        for _ in range(16 * 1024):  # up to 1 GiB
            events[:] = a.receive_data(frame)
            if a.failure is not None:
                return

    peak = peak_allocated(flood)
    assert isinstance(a.failure, FlowControlError)
    assert a.unconsumed == DEFAULT_HIGH_WATER
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert DEFAULT_PAUSE_SLACK < a.bytes_received <= DEFAULT_PAUSE_SLACK + 2 * len(frame)


# -- reading in place ------------------------------------------------------------------------


def feed_in_place(conn: Connection, data: bytes, read: int) -> list[Event]:
    """Feed ``data`` through receive_buffer/receive_filled, at most ``read`` bytes a time."""
    events: list[Event] = []
    pos = 0
    while pos < len(data):
        with conn.receive_buffer(read) as target:
            count = min(len(target), read, len(data) - pos)
            target[:count] = data[pos : pos + count]
        events += conn.receive_filled(count)
        pos += count
    return events


def test_receive_buffer_has_room_for_the_whole_frame_under_way() -> None:
    a, b = connect()
    blob = b"r" * 1_000_000
    a.send(blob)
    data = a.data_to_send()
    assert b.receive_data(data[:100]) == []
    with b.receive_buffer(1024) as target:
        assert len(target) >= len(data) - 100


def test_a_read_into_the_buffer_stops_where_a_large_frame_under_way_ends() -> None:
    a, b = connect()
    blob = b"r" * 300_000
    a.send(blob)
    a.send("next")
    data = a.data_to_send()
    frame_size = len(data) - len(encode_frame(FrameType.DATA, b"\xa4next"))
    assert b.receive_data(data[:100_000]) == []
    with b.receive_buffer(256 * 1024) as target:
        assert len(target) == frame_size - 100_000
    assert messages_of(feed_in_place(b, data[100_000:], read=256 * 1024)) == [blob, "next"]


def test_a_read_into_the_buffer_offers_the_full_size_between_frames() -> None:
    a, b = connect()
    a.send(b"s" * 1000)
    data = a.data_to_send()
    assert b.receive_data(data[:500]) == []
    with b.receive_buffer(256 * 1024) as target:
        assert len(target) >= 256 * 1024  # a small frame under way does not limit the read


def test_messages_read_in_place_in_small_pieces_arrive_intact() -> None:
    a, b = connect()
    sent = [b"s" * 300_000, "x", {"k": [1, 2]}, b"t" * 70_000, 7]
    a.send_many(sent[1:3])
    for message in (sent[0], *sent[3:]):
        a.send(message)
    a.send_many(sent[1:3])
    data = a.data_to_send()
    got = messages_of(feed_in_place(b, data, read=4093))
    assert got == [*sent[1:3], sent[0], *sent[3:], *sent[1:3]]


def test_the_buffer_a_huge_frame_needed_is_given_back() -> None:
    a, b = connect()
    a.send(b"h" * (6 * 1024 * 1024))
    a.send("after")
    assert messages_of(feed_in_place(b, a.data_to_send(), read=1 << 20))[-1] == "after"
    with b.receive_buffer(1024) as target:
        assert len(target) <= 4 * 1024 * 1024


# -- a large message read straight into its own bytes ----------------------------------

BIG = 200_000


def large_frame(conn: Connection, message: Any) -> bytes:
    """The bytes of ``conn`` sending ``message`` alone."""
    conn.send(message)
    return conn.data_to_send()


def test_after_a_large_frame_read_to_its_end_the_next_frame_starts_a_read_of_its_own() -> None:
    a, b = connect()
    data = large_frame(a, b"L" * BIG)
    feed_in_place(b, data[:1000], read=1 << 20)
    with b.receive_buffer(1 << 20) as target:
        assert len(target) == len(data) - 1000  # the read ends where the frame ends
    assert not b.large_next
    feed_in_place(b, data[1000:], read=1 << 20)
    assert b.large_next
    b.receive_data(large_frame(a, "small"))
    assert not b.large_next


def test_a_small_frame_does_not_ask_for_a_read_of_its_own() -> None:
    a, b = connect()
    b.receive_data(large_frame(a, b"s" * 1000))
    assert not b.large_next


@pytest.mark.parametrize("codec", ["msgpack", "cbor"])
def test_the_head_of_a_lone_large_bytes_message_names_its_size(codec: str) -> None:
    a, b = connect({"codecs": [codec]}, {"codecs": [codec]})
    data = large_frame(a, b"x" * BIG)
    assert b.large_bytes_size(data[:LARGE_HEAD]) == BIG
    assert b.large_bytes_size(memoryview(data)[:LARGE_HEAD]) == BIG


def refuses_head(prepare: str) -> int:
    """large_bytes_size of a 200 KB bytes message after ``prepare``."""
    a, b = connect(acceptor={"high_water": 2})
    message: Any = b"x" * BIG
    if prepare == "small":
        message = b"x" * 1000
    elif prepare == "not bytes":
        message = ["x" * BIG]
    elif prepare == "high water":
        b.receive_data(large_frame(a, 1) + large_frame(a, 2))  # 2 unconsumed: PAUSE
    elif prepare == "paused":
        b.paused_peer = True
    elif prepare == "ended":
        a.end()
        b.receive_data(a.data_to_send())
        a.send_state = Direction.OPEN  # (to frame one more DATA)
    elif prepare == "oversize":
        b.max_frame = BIG
    data = large_frame(a, message)
    if prepare == "flags":
        data = HEADER.pack(len(data) - HEADER_SIZE, 1, FLAG_JSON) + data[HEADER_SIZE:]
    elif prepare == "not data":
        data = HEADER.pack(len(data) - HEADER_SIZE, int(FrameType.PING), 0) + data[HEADER_SIZE:]
    return b.large_bytes_size(data[:LARGE_HEAD])


@pytest.mark.parametrize(
    "prepare",
    ["small", "not bytes", "high water", "paused", "ended", "oversize", "flags", "not data"],
)
def test_a_head_that_is_not_a_large_bytes_message_to_deliver_now_names_no_size(
    prepare: str,
) -> None:
    assert refuses_head(prepare) == 0


def test_a_json_connection_reads_no_message_straight() -> None:
    a, b = connect({"codecs": ["json"]}, {"codecs": ["json"]})
    data = large_frame(a, "x" * BIG)
    assert b.large_bytes_size(data[:LARGE_HEAD]) == 0


def test_a_message_read_straight_counts_as_its_frame_read_in_the_buffer() -> None:
    a, plain = connect(acceptor={"high_water_bytes": 3 * BIG})
    _, direct = connect(acceptor={"high_water_bytes": 3 * BIG})
    data = large_frame(a, b"y" * BIG)
    for _ in range(3):
        events = plain.receive_data(data)
        assert direct.large_bytes_size(data[:LARGE_HEAD]) == BIG
        assert direct.receive_large_bytes(data[LARGE_HEAD:]) == events[:1]
    assert plain.paused_peer  # the third reached high_water_bytes
    for attr in ("bytes_received", "messages_received", "unconsumed", "unconsumed_bytes"):
        assert getattr(direct, attr) == getattr(plain, attr), attr
    assert direct.paused_peer and direct.data_to_send() == plain.data_to_send()
    assert direct.consumed(3) and plain.consumed(3)


def feed_straight(conn: Connection, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed ``data`` as the socket reader does, the bytes arriving up to each of ``cuts``
    in turn, the application consuming as it goes: a frame's head alone after a large
    frame, and then the message straight into its own bytes if the machine names its
    size and all of it has arrived."""
    events: list[Event] = []
    pos = 0
    for arrived in [*(min(cut, len(data)) for cut in cuts), len(data)]:
        while pos < arrived and conn.failure is None:
            if conn.large_next:
                head = data[pos : min(arrived, pos + LARGE_HEAD)]
                size = conn.large_bytes_size(head) if len(head) == LARGE_HEAD else 0
                end = pos + LARGE_HEAD + size
                if size and arrived >= end:
                    events += drain(conn, conn.receive_large_bytes(data[pos + LARGE_HEAD : end]))
                    pos = end
                    continue
                events += drain(conn, conn.receive_data(head))
                pos += len(head)
                continue
            with conn.receive_buffer(4096) as target:
                count = min(len(target), arrived - pos)
                target[:count] = data[pos : pos + count]
            events += drain(conn, conn.receive_filled(count))
            pos += count
    return events


def delivered(conn: Connection, events: list[Event]) -> list[Any]:
    """Every message, consumed as it arrives, and what was held back decoded after."""
    out: list[Any] = []
    for event in drain(conn, events):
        if isinstance(event, MessagesReceived):
            out += event.messages
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kinds=st.lists(st.sampled_from(["big", "big", "small", "big list", "end"]), max_size=6),
    cuts=st.lists(st.integers(0, 900_000), max_size=6),
    high_water=st.integers(1, 4),
)
def test_reading_large_messages_straight_delivers_what_reading_in_place_delivers(
    kinds: list[str], cuts: list[int], high_water: int
) -> None:
    a, _ = connect()
    for i, kind in enumerate(kinds):
        if kind == "end":
            break
        a.send({"big": bytes([i]) * (BIG + i), "small": i, "big list": [b"l" * BIG]}[kind])
    data = a.data_to_send()
    if "end" in kinds:
        a.end()
        data += a.data_to_send()
    _, plain = on_demand(high_water=high_water)
    _, straight = on_demand(high_water=high_water)
    expected = delivered(plain, plain.receive_data(data))
    got = delivered(straight, feed_straight(straight, data, sorted(cuts)))
    assert got == expected
    assert straight.receive_state == plain.receive_state
    assert straight.bytes_received == plain.bytes_received


def test_a_large_frame_under_way_makes_the_allocator_keep_freed_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipekit.kernel import _receivebuffer

    monkeypatch.setattr(_receivebuffer, "_heap_kept", 0)
    a, b = connect()
    b.receive_data(large_frame(a, b"k" * 1000))
    assert _receivebuffer._heap_kept == 0
    data = large_frame(a, b"k" * BIG)
    b.receive_data(data[:1000])
    assert _receivebuffer._heap_kept == 4 * 1024 * 1024
    b.receive_data(data[1000:])
    _receivebuffer.keep_heap(64 * 1024 * 1024)
    assert _receivebuffer._heap_kept == 16 * 1024 * 1024  # at most


# --- kinds, states and settings -----------------------------------------------------


def test_error_kinds_equal_their_wire_strings() -> None:
    _, a = connect()
    error = assert_violation(a, encode_frame(99), "malformed")
    assert error.kind is ErrorKind.MALFORMED and isinstance(error, ProtocolError)
    assert not isinstance(error, LocalProtocolError)
    assert json.loads(json.dumps({"kind": ErrorKind.OVERSIZE})) == {"kind": "oversize"}
    assert issubclass(FlowControlError, RemoteProtocolError)


def test_direction_states_are_enums_equal_to_their_names() -> None:
    def states(conn: Connection) -> tuple[Direction, Direction]:
        return conn.send_state, conn.receive_state

    i, a = connect()
    i.end()
    a.receive_data(i.data_to_send())
    assert states(i) == (Direction.ENDED, Direction.OPEN) == ("ended", "open")
    assert states(a) == (Direction.OPEN, Direction.ENDED)
    assert all(type(state) is Direction for state in states(a))


def test_settings_may_be_given_as_one_object() -> None:
    settings = PipeSettings(name="n", codecs=["json"], high_water=10, high_water_bytes=1000)
    conn = Connection(initiator=True, settings=settings)
    same = Connection(
        initiator=True, name="n", codecs=["json"], high_water=10, high_water_bytes=1000
    )
    assert conn.data_to_send() == same.data_to_send()
    assert (conn.low_water, conn.low_water_bytes, conn.codecs) == (5, 500, ("json",))
    with pytest.raises(TypeError):
        Connection(initiator=True, settings=settings, high_water=3)
    with pytest.raises(TypeError, match="send_buffer"):
        Connection(initiator=True, send_buffer=10)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"codecs": []}, "codecs must be a non-empty subset"),
        ({"max_frame": 10}, "max_frame must be between"),
        ({"handshake_timeout": 0}, "handshake_timeout must be positive"),
        ({"idle_timeout": -1.0}, "idle_timeout must be positive"),
    ],
)
def test_pipe_settings_refuse_values_that_cannot_work(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PipeSettings(**options)


# -- send_and_take: the one-step path of a lone message ---------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "cbor", "json"])
@pytest.mark.parametrize("queued", [False, True])
@pytest.mark.parametrize("message", [{"i": 1, "v": "x" * 16}, b"small", b"x" * 70_000])
def test_send_and_take_hands_out_what_send_then_data_to_send_pieces_would(
    codec: str, queued: bool, message: Any
) -> None:
    if codec == "json" and isinstance(message, bytes):
        message = message.decode()
    wires = []
    counters = []
    for one_step in (False, True):
        i, a = connect({"codecs": [codec]}, {"codecs": [codec]})
        if queued:
            i.send("before")
            i.ping(b"p")
        if one_step:
            pieces = i.send_and_take(message)
        else:
            i.send(message)
            pieces = i.data_to_send_pieces()
        wire = b"".join(pieces)
        wires.append(wire)
        counters.append((i.messages_sent, i.bytes_sent, i.buffered_bytes))
        expected = (["before"] if queued else []) + [message]
        assert messages_of(a.receive_data(wire)) == expected
    assert wires[0] == wires[1]
    assert counters[0] == counters[1]


@pytest.mark.parametrize("message", ["x" * 2000, b"x" * 70_000])
def test_send_and_take_refuses_an_oversize_message_and_queues_nothing(message: Any) -> None:
    i, _ = connect(acceptor={"max_frame": 1024})
    with pytest.raises(ProtocolError) as info:
        i.send_and_take(message)
    assert info.value.kind == ErrorKind.OVERSIZE
    assert i.messages_sent == 0 and not i.has_data_to_send


@pytest.mark.parametrize("codec", ["msgpack", "cbor"])
def test_send_and_take_hands_out_a_lone_large_bytes_message_uncopied(codec: str) -> None:
    i, _ = connect({"codecs": [codec]}, {"codecs": [codec]})
    blob = b"u" * 70_000
    pieces = i.send_and_take(blob)
    assert len(pieces) == 2 and pieces[1] is blob


def test_send_and_take_while_paused_queues_the_message_for_resume() -> None:
    i, a = connect()
    i.receive_data(encode_frame(FrameType.PAUSE))
    assert i.send_and_take("held") == []
    i.receive_data(encode_frame(FrameType.RESUME))
    assert messages_of(a.receive_data(i.data_to_send())) == ["held"]
