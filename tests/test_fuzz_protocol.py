"""Fuzzing the pipekit/1 state machine (``pipekit.kernel.protocol.Connection``).

Inputs are structure-aware: a peer's valid HELLO, then frames that are mostly
well-formed and carry adversarial payloads for each codec (hostile bytes spliced into
valid encodings, random bytes, wrong flags, wrong lengths, frames out of order), cut at
random points and fed the three ways a transport can (bytes, reads in place, one frame
per message), with the local application acting in between. Whatever arrives, the
machine may only report it: no exception escapes ``receive_*``, a violation is a typed
:class:`RemoteProtocolError` reported last, once, with one ERROR frame, and what it
holds stays within its bounds. The local API raises only its documented errors.

The suite runs a bounded number of examples; ``bench/fuzz_protocol.py`` runs the same
properties for as long as it is asked to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekit.kernel.codecs import CODEC_NAMES, get_codec
from pipekit.kernel.errors import (
    CodecError,
    ErrorKind,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from pipekit.kernel.protocol import (
    FLAG_JSON,
    HEADER,
    HEADER_SIZE,
    PROTOCOL,
    Connection,
    EndReceived,
    ErrorReceived,
    Event,
    FrameType,
    MessagesReceived,
    ProtocolViolation,
    encode_frame,
)

MAX_FRAME = 1024
"""The fuzzed side's max frame: small, so that oversize frames are easy to reach."""

KINDS = {str(kind) for kind in ErrorKind}

# -- inputs ----------------------------------------------------------------------------


def values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=4,
    )


NASTY = [
    b"\x81\x80\x00",  # msgpack: a map as a map key
    b"\x81\x90\x00",  # msgpack: an array as a map key
    b"\xd6\xff\x00\x00\x00\x01",  # msgpack: timestamp extension
    b"\xc7\x00\x05",  # msgpack: empty extension
    b"\xdd\xff\xff\xff\xff",  # msgpack: array of 2^32-1 elements
    b"\xdb\xff\xff\xff\xff",  # msgpack: str of 4 GiB / CBOR: huge negative integer
    b"\x91" * 1100,  # msgpack: nested too deep
    b"\x81" * 1100,  # CBOR: nested too deep
    b"\x9f\x01",  # CBOR: unfinished indefinite array
    b"\x5f\x41",  # CBOR: unfinished indefinite byte string
    b"\xd8\x1c\x81\xd8\x1d\x00",  # CBOR: shared reference cycle
    b"\xc1\x1a\x00\x00\x00\x01",  # CBOR: tag 1
    b"\xc2\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # CBOR: bignum of 2^64-1 bytes
    b"\xa1\x81\x01\x00",  # CBOR: an array as a map key
    b"\xf7",  # CBOR: undefined
    b"\xff",  # CBOR: break
    b"NaN",
    b"-Infinity",
    b"1e400",
    b"[" * 1100,
    b'{"a":',
    b'"\\ud800"',
    b"\xef\xbb\xbf{}",
    b"\n",
    b"\xc1",
]


def hostile(codec: str) -> st.SearchStrategy[bytes]:
    """A DATA payload for ``codec``: valid messages with hostile bytes spliced in."""
    encode = get_codec(codec).encode
    piece = st.one_of(
        values().map(lambda v: encode(v) + (b"\n" if codec == "json" else b"")),
        st.sampled_from(NASTY),
        st.binary(max_size=16),
    )
    return st.lists(piece, max_size=6).map(b"".join)


def valid_data(codec: str) -> st.SearchStrategy[bytes]:
    """A DATA frame of valid messages, coalesced as a sender would."""
    sep = b"\n" if codec == "json" else b""
    encode = get_codec(codec).encode
    return st.lists(values(), min_size=1, max_size=12).map(
        lambda vs: encode_frame(FrameType.DATA, sep.join(encode(v) for v in vs))
    )


def frames(codec: str) -> st.SearchStrategy[bytes]:
    """One frame from a peer, mostly well-formed, often with an adversarial payload."""
    payload = st.binary(max_size=40)
    json_body = st.dictionaries(st.sampled_from(["kind", "message", "x"]), values(), max_size=3)
    return st.one_of(
        valid_data(codec),
        valid_data(codec),
        hostile(codec).map(lambda p: encode_frame(FrameType.DATA, p)),
        hostile("json").map(lambda p: encode_frame(FrameType.DATA, p, json_flag=True)),
        st.just(encode_frame(FrameType.DATA)),
        payload.map(lambda p: encode_frame(FrameType.PING, p)),
        payload.map(lambda p: encode_frame(FrameType.PONG, p)),
        st.sampled_from([FrameType.PAUSE, FrameType.RESUME, FrameType.END]).map(encode_frame),
        st.just(encode_frame(FrameType.END, b"x")),
        json_body.map(
            lambda b: encode_frame(FrameType.ERROR, json.dumps(b).encode(), json_flag=True)
        ),
        st.just(encode_frame(FrameType.ERROR, b'{"kind":"k","message":"m"}', json_flag=True)),
        st.builds(
            lambda length, ftype, flags, body: HEADER.pack(length, ftype, flags) + body,
            st.one_of(st.integers(0, 48), st.integers(0, 2 * MAX_FRAME), st.just(2**32 - 1)),
            st.integers(0, 10),
            st.sampled_from([0, 0, FLAG_JSON, 2, 0x8000]),
            st.binary(max_size=48),
        ),
        st.binary(min_size=1, max_size=24),
    )


def hello_of(side: str, codec: str) -> bytes:
    """The peer's HELLO: an offer for an acceptor, an answer for an initiator."""
    body: dict[str, Any] = {
        "protocol": PROTOCOL,
        "name": "fuzzer",
        "max_frame": MAX_FRAME,
        "high_water": 8,
    }
    body["codecs" if side == "acceptor" else "codec"] = [codec] if side == "acceptor" else codec
    return encode_frame(FrameType.HELLO, json.dumps(body).encode(), json_flag=True)


ACTIONS = ["consume", "consume_all", "held", "take", "send", "ping", "end", "fail", "nothing"]


@dataclass
class Case:
    side: str
    codec: str
    on_demand: bool
    transport: str  # "bytes", "in_place" or "messages"
    high_water: int
    pause_slack: int
    frames: list[bytes]
    cuts: list[int]
    actions: list[str]
    messages: list[Any] = field(default_factory=list)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    side = draw(st.sampled_from(["acceptor", "initiator"]))
    codec = draw(st.sampled_from(CODEC_NAMES))
    body = draw(st.lists(frames(codec), max_size=16))
    stream = [hello_of(side, codec), *body]
    size = sum(map(len, stream))
    return Case(
        side=side,
        codec=codec,
        on_demand=draw(st.booleans()),
        transport=draw(st.sampled_from(["bytes", "in_place", "messages"])),
        high_water=draw(st.integers(1, 40)),
        pause_slack=draw(st.sampled_from([0, 64, 4096, 1 << 20])),
        frames=stream,
        cuts=sorted(draw(st.lists(st.integers(0, size), max_size=12))),
        actions=draw(st.lists(st.sampled_from(ACTIONS), min_size=24, max_size=24)),
        messages=draw(st.lists(values(), max_size=3)),
    )


# -- driving the machine ---------------------------------------------------------------


class Checked:
    """A connection driven as a transport and an application would, checking after
    every step what the machine may and may not do."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.conn = Connection(
            initiator=case.side == "initiator",
            codecs=[case.codec],
            max_frame=MAX_FRAME,
            high_water=case.high_water,
            pause_slack=case.pause_slack,
            decode_on_demand=case.on_demand,
        )
        self.events: list[Event] = []
        self.errors_sent = 0
        self.violation: ProtocolError | None = None
        if case.side == "initiator":
            self.take()  # our HELLO

    def receive(self, call: Callable[[], list[Event]]) -> None:
        events = call()  # never raises, whatever the input
        conn = self.conn
        for i, event in enumerate(events):
            if isinstance(event, ProtocolViolation):
                assert i == len(events) - 1, events  # always the last event
                error = event.error
                assert isinstance(error, RemoteProtocolError), error
                assert error.kind in KINDS and error.message
                if self.violation is None:
                    self.violation = error
                assert error is self.violation is conn.failure
            else:
                assert self.violation is None, events
        self.events += events
        if conn.failure is not None:
            assert conn.held_bytes == 0 and conn.receive_held() == []
        if self.case.on_demand:
            assert conn.unconsumed <= conn.high_water
            assert conn.held_bytes <= conn.pause_slack + MAX_FRAME + HEADER_SIZE
        else:
            assert conn.held_bytes == 0

    def take(self) -> None:
        """Hand what is queued to the transport; it must be whole frames, with at most
        one PONG and, over the connection's life, at most one ERROR."""
        conn = self.conn
        messages = self.case.transport == "messages"
        out = conn.frames_to_send() if messages else [conn.data_to_send()]
        pongs = 0
        for data in out:
            pos = 0
            while pos < len(data):
                length, ftype, _ = HEADER.unpack_from(data, pos)
                pos += HEADER_SIZE + length
                pongs += ftype == FrameType.PONG
                self.errors_sent += ftype == FrameType.ERROR
            assert pos == len(data)
        assert pongs <= 1 and self.errors_sent <= 1

    def act(self, action: str) -> None:
        conn = self.conn
        try:
            if action == "consume" and conn.unconsumed:
                conn.consumed(1)
            elif action == "consume_all":
                conn.consumed(conn.unconsumed)
            elif action == "held":
                self.receive(conn.receive_held)
            elif action == "take":
                self.take()
            elif action == "send":
                conn.send_many(self.case.messages)
            elif action == "ping":
                conn.ping(b"fuzz")
            elif action == "end":
                conn.end()
            elif action == "fail":
                conn.fail("fuzzed", "the fuzzer gave up")
        except (LocalProtocolError, CodecError):
            pass  # documented local misuse: sending before the handshake or after END
        except ProtocolError as exc:
            assert exc.kind == ErrorKind.OVERSIZE  # a message above the peer's max frame

    def feed(self, chunk: bytes) -> None:
        conn = self.conn
        transport = self.case.transport
        if transport == "bytes":
            self.receive(lambda: conn.receive_data(chunk))
            return
        pos = 0
        while pos < len(chunk):  # reads in place, of whatever size the buffer offers
            with conn.receive_buffer(64) as target:
                count = min(len(target), len(chunk) - pos)
                target[:count] = chunk[pos : pos + count]
            self.receive(lambda count=count: conn.receive_filled(count))  # type: ignore[misc]
            pos += count

    def run(self) -> None:
        case = self.case
        actions = iter(case.actions)
        if case.transport == "messages":
            for frame in case.frames:
                self.receive(lambda frame=frame: self.conn.receive_frame(frame))  # type: ignore[misc]
                self.act(next(actions, "nothing"))
        else:
            stream = b"".join(case.frames)
            start = 0
            for cut in [*case.cuts, len(stream)]:
                self.feed(stream[start:cut])
                start = max(start, cut)
                self.act(next(actions, "nothing"))
        for action in actions:
            self.act(action)
        self.receive(self.conn.receive_eof)
        self.take()


def drained(case: Case) -> Checked:
    """Run ``case`` with an application that consumes everything as it arrives."""
    case.actions = []
    checked = Checked(case)
    stream = b"".join(case.frames)
    start = 0
    for cut in [*case.cuts, len(stream)]:
        checked.feed(stream[start:cut])
        start = max(start, cut)
        for _ in range(10**5):
            checked.conn.consumed(checked.conn.unconsumed)
            before = len(checked.events)
            checked.receive(checked.conn.receive_held)
            if len(checked.events) == before:
                break
        checked.take()
    return checked


def outcome(checked: Checked) -> tuple[list[Any], bool, list[Event]]:
    messages = [m for e in checked.events if isinstance(e, MessagesReceived) for m in e.messages]
    finals: list[Event] = [e for e in checked.events if isinstance(e, EndReceived | ErrorReceived)]
    return messages, checked.violation is not None, finals


# -- the properties (bench/fuzz_protocol.py runs them for longer) -------------------------


def no_input_makes_the_machine_do_anything_but_report_it(case: Case) -> None:
    Checked(case).run()


def decoding_on_demand_delivers_what_decoding_at_once_delivers(case: Case) -> None:
    if case.transport == "messages":
        case.transport = "bytes"
    case.on_demand = False
    at_once = outcome(drained(case))
    case.on_demand = True
    on_demand = outcome(drained(case))
    assert on_demand[1] == at_once[1]  # a violation in both, or in neither
    if not at_once[1]:
        assert on_demand == at_once


PROPERTIES = [
    no_input_makes_the_machine_do_anything_but_report_it,
    decoding_on_demand_delivers_what_decoding_at_once_delivers,
]

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(case=cases())
def test_no_input_makes_the_machine_do_anything_but_report_it(case: Case) -> None:
    no_input_makes_the_machine_do_anything_but_report_it(case)


@FUZZ
@given(case=cases())
def test_decoding_on_demand_delivers_what_decoding_at_once_delivers(case: Case) -> None:
    decoding_on_demand_delivers_what_decoding_at_once_delivers(case)
