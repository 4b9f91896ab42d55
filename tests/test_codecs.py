"""Tests of the message codecs (``pipekit.kernel.codecs``): msgpack, CBOR and JSON."""

from __future__ import annotations

import ast
import math
import re
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipekit.kernel.codecs import CODEC_NAMES, MAX_DEPTH, LineSplitter, get_codec
from pipekit.kernel.errors import CodecError, ProtocolError, RemoteProtocolError

SELF_DELIMITING = ["msgpack", "cbor"]


def values(codec: str) -> st.SearchStrategy[Any]:
    """Messages every codec round-trips exactly (JSON has no binary type)."""
    scalars: st.SearchStrategy[Any] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        *([st.binary(max_size=30)] if codec != "json" else []),
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
        ),
        max_leaves=6,
    )


@st.composite
def codec_and_messages(draw: st.DrawFn, codecs: list[str] | None = None) -> tuple[str, list[Any]]:
    codec = draw(st.sampled_from(codecs or CODEC_NAMES))
    return codec, draw(st.lists(values(codec), max_size=5))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# --- the registry -------------------------------------------------------------------


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_get_codec_returns_a_codec_of_that_name(name: str) -> None:
    assert get_codec(name).name == name


def test_get_codec_returns_a_fresh_instance_each_time() -> None:
    assert get_codec("msgpack") is not get_codec("msgpack")


def test_get_codec_rejects_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        get_codec("yaml")


def test_codec_names_are_in_default_preference_order() -> None:
    assert CODEC_NAMES == ("msgpack", "cbor", "json")


# --- round trips --------------------------------------------------------------------


@settings(max_examples=100)
@given(case=codec_and_messages())
def test_each_message_round_trips(case: tuple[str, list[Any]]) -> None:
    name, messages = case
    codec = get_codec(name)
    for message in messages:
        assert codec.decode_many(codec.encode(message)) == [message]


@settings(max_examples=100)
@given(case=codec_and_messages())
def test_encode_many_then_decode_many_round_trips(case: tuple[str, list[Any]]) -> None:
    name, messages = case
    codec = get_codec(name)
    assert codec.decode_many(codec.encode_many(messages)) == messages


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_encode_many_is_the_encodings_back_to_back(name: str) -> None:
    codec = get_codec(name)
    messages = [{"i": 1, "v": "x"}, [1, 2], "three"]
    separator = b"\n" if name == "json" else b""
    assert codec.encode_many(messages) == separator.join(codec.encode(m) for m in messages)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_empty_payload_decodes_to_no_messages(name: str) -> None:
    assert get_codec(name).decode_many(b"") == []


def test_msgpack_keeps_bytes_and_str_apart() -> None:
    codec = get_codec("msgpack")
    assert codec.decode_many(codec.encode_many([b"ab", "ab"])) == [b"ab", "ab"]
    assert codec.encode(b"ab")[0] == 0xC4 and codec.encode("ab")[0] == 0xA2


def test_msgpack_encoding_of_a_small_map() -> None:
    assert get_codec("msgpack").encode({"i": 1, "v": "x"}) == bytes.fromhex("82a16901a176a178")


def test_cbor_round_trips_integers_beyond_64_bits() -> None:
    codec = get_codec("cbor")
    assert codec.decode_many(codec.encode(2**100)) == [2**100]


def test_json_encoding_is_compact_utf8() -> None:
    assert get_codec("json").encode({"a": ["é", 1]}) == '{"a":["é",1]}'.encode()


@settings(max_examples=100)
@given(message=values("json"))
def test_json_encoding_never_contains_a_raw_newline(message: Any) -> None:
    assert b"\n" not in get_codec("json").encode(message)


def test_json_decode_many_skips_blank_lines() -> None:
    assert get_codec("json").decode_many(b'1\n\n  \n{"a":2}\n') == [1, {"a": 2}]


# --- streaming decoders -------------------------------------------------------------


@settings(max_examples=100)
@given(case=codec_and_messages(), trailing_newline=st.booleans(), data=st.data())
def test_stream_decoder_gives_the_same_messages_for_any_chunking(
    case: tuple[str, list[Any]], trailing_newline: bool, data: st.DataObject
) -> None:
    name, messages = case
    codec = get_codec(name)
    stream = codec.encode_many(messages)
    if name == "json" and trailing_newline and messages:
        stream += b"\n"
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    for pieces in (chunks(stream, cuts), [stream[i : i + 1] for i in range(len(stream))]):
        decoder = codec.stream_decoder()
        out = [m for piece in pieces for m in decoder.feed(piece)]
        out += decoder.close()
        assert out == messages


@settings(max_examples=100)
@given(case=codec_and_messages(SELF_DELIMITING), data=st.data())
def test_stream_cut_inside_a_message_fails_on_close(
    case: tuple[str, list[Any]], data: st.DataObject
) -> None:
    name, messages = case
    codec = get_codec(name)
    encoded = [codec.encode(m) for m in messages]
    stream = b"".join(encoded)
    boundaries = {0, *accumulate(len(e) for e in encoded)}
    inside = [n for n in range(len(stream)) if n not in boundaries]
    if not inside:
        return
    cut = inside[data.draw(st.integers(min_value=0, max_value=len(inside) - 1))]
    decoder = codec.stream_decoder()
    decoder.feed(stream[:cut])
    with pytest.raises(ProtocolError) as info:
        decoder.close()
    assert info.value.kind == "undecodable"


@settings(max_examples=100)
@given(case=codec_and_messages(SELF_DELIMITING), data=st.data())
def test_payload_cut_inside_a_message_is_undecodable(
    case: tuple[str, list[Any]], data: st.DataObject
) -> None:
    name, messages = case
    codec = get_codec(name)
    encoded = [codec.encode(m) for m in messages]
    payload = b"".join(encoded)
    boundaries = {0, *accumulate(len(e) for e in encoded)}
    inside = [n for n in range(len(payload)) if n not in boundaries]
    if not inside:
        return
    cut = inside[data.draw(st.integers(min_value=0, max_value=len(inside) - 1))]
    with pytest.raises(ProtocolError) as info:
        codec.decode_many(payload[:cut])
    assert info.value.kind == "undecodable"


@pytest.mark.parametrize(
    "truncated",
    [b"\x92", b"\x92\x01", b"\x01\x93\x01\x02", b"\x81\xa1k", b"\xda\x00\x05ab", b"\xcd\x01"],
    ids=["array-head", "array-half", "after-a-message", "map-half", "str16", "uint16"],
)
def test_msgpack_truncation_inside_arrays_and_maps_is_detected(truncated: bytes) -> None:
    codec = get_codec("msgpack")
    with pytest.raises(ProtocolError):
        codec.decode_many(truncated)
    decoder = codec.stream_decoder()
    decoder.feed(truncated)
    with pytest.raises(ProtocolError):
        decoder.close()


def test_msgpack_stream_completes_a_container_across_feeds() -> None:
    decoder = get_codec("msgpack").stream_decoder()
    assert decoder.feed(b"\x01\x92\x01") == [1]
    assert decoder.feed(b"\x02") == [[1, 2]]
    assert decoder.close() == []


@pytest.mark.parametrize("name", SELF_DELIMITING)
def test_close_at_a_message_boundary_returns_nothing(name: str) -> None:
    codec = get_codec(name)
    decoder = codec.stream_decoder()
    assert decoder.feed(codec.encode_many([1, "two"])) == [1, "two"]
    assert decoder.close() == []


def test_json_stream_close_returns_the_final_unterminated_line() -> None:
    decoder = get_codec("json").stream_decoder()
    assert decoder.feed(b'{"a":1}\n{"b"') == [{"a": 1}]
    assert decoder.feed(b":2}") == []
    assert decoder.close() == [{"b": 2}]


def test_json_stream_close_raises_on_an_incomplete_line() -> None:
    decoder = get_codec("json").stream_decoder()
    decoder.feed(b'{"a":1}\n{"b":')
    with pytest.raises(ProtocolError) as info:
        decoder.close()
    assert info.value.kind == "undecodable"


def test_json_stream_close_after_a_newline_returns_nothing() -> None:
    decoder = get_codec("json").stream_decoder()
    assert decoder.feed(b"1\n2\n") == [1, 2]
    assert decoder.close() == []


@pytest.mark.parametrize(
    ("name", "garbage"),
    [("msgpack", b"\xc1"), ("cbor", b"\xff"), ("json", b"{oops}\n")],
)
def test_stream_decoder_rejects_invalid_input(name: str, garbage: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        get_codec(name).stream_decoder().feed(garbage)
    assert info.value.kind == "undecodable"


@pytest.mark.parametrize(
    ("name", "garbage"),
    [("msgpack", b"\xc1"), ("cbor", b"\xff"), ("json", b"{oops}"), ("json", b"\xff\xfe")],
)
def test_decode_many_rejects_invalid_input(name: str, garbage: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        get_codec(name).decode_many(garbage)
    assert info.value.kind == "undecodable"


# --- unencodable messages -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("msgpack", object()),
        ("msgpack", {1, 2}),
        ("msgpack", 1j),
        ("cbor", object()),  # CBOR has tags for sets and complex numbers
        ("json", object()),
        ("json", {1, 2}),
        ("json", 1j),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,  # stable across workers
)
def test_unencodable_message_raises_codec_error(name: str, message: Any) -> None:
    with pytest.raises(CodecError):
        get_codec(name).encode(message)


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_encode_many_with_an_unencodable_message_raises_codec_error(name: str) -> None:
    with pytest.raises(CodecError):
        get_codec(name).encode_many([1, object(), 3])


def test_json_rejects_nan() -> None:
    with pytest.raises(CodecError):
        get_codec("json").encode(math.nan)


def test_json_rejects_bytes() -> None:
    with pytest.raises(CodecError):
        get_codec("json").encode(b"raw")


def test_msgpack_rejects_integers_beyond_64_bits() -> None:
    with pytest.raises(CodecError):
        get_codec("msgpack").encode(2**64)


def test_codec_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        get_codec("msgpack").encode(object())


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_codec_still_works_after_a_failed_encode(name: str) -> None:
    codec = get_codec(name)
    with pytest.raises(CodecError):
        codec.encode([1, object()])
    assert codec.decode_many(codec.encode([1, 2])) == [[1, 2]]


@pytest.mark.parametrize("size", [64 * 1024 - 1, 64 * 1024, 1024 * 1024])
def test_msgpack_large_bytes_encode_exactly_as_msgpack_does(size: int) -> None:
    blob = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert get_codec("msgpack").encode(blob) == msgpack.packb(blob, use_bin_type=True)


def test_msgpack_large_payload_of_several_messages_decodes_them_all() -> None:
    codec = get_codec("msgpack")
    blob = b"y" * 200_000
    payload = codec.encode(blob) + codec.encode({"after": 1})
    assert codec.decode_many(payload) == [blob, {"after": 1}]


def test_msgpack_large_payload_of_several_messages_is_taken_a_slice_at_a_time() -> None:
    codec = get_codec("msgpack")
    blob = b"y" * 200_000
    tail = codec.encode_many([{"after": 1}, 2, 3])
    frame = codec.frame_decoder(codec.encode(blob) + tail)
    assert frame.take(1) == [blob] and frame.left == len(tail)
    assert frame.take(2) == [{"after": 1}, 2] and frame.left == 1
    assert frame.take(2) == [3] and frame.left == 0
    cut = codec.frame_decoder(codec.encode(blob) + tail[:-3])  # {"after": ...cut
    assert cut.take(1) == [blob]
    with pytest.raises(RemoteProtocolError, match="inside a message"):
        cut.take(5)


def test_msgpack_large_payload_cut_short_is_undecodable() -> None:
    codec = get_codec("msgpack")
    with pytest.raises(ProtocolError) as info:
        codec.decode_many(codec.encode(b"z" * 200_000)[:-1])
    assert info.value.kind == "undecodable"


# --- LineSplitter -------------------------------------------------------------------


@settings(max_examples=200)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    data=st.data(),
)
def test_line_splitter_gives_the_same_lines_for_any_chunking(
    lines: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(line + b"\n" for line in lines) + b"tail"
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))
    splitter = LineSplitter()
    out = [line for piece in chunks(stream, cuts) for line in splitter.split(piece)]
    assert out == lines
    assert splitter.rest() == b"tail"
    assert splitter.rest() == b""


def test_line_splitter_accepts_a_line_of_exactly_max_line_bytes() -> None:
    splitter = LineSplitter(max_line=4)
    assert splitter.split(b"ab") == []
    assert splitter.split(b"cd\nwxyz") == [b"abcd"]
    assert splitter.rest() == b"wxyz"


@pytest.mark.parametrize("pieces", [[b"abcde"], [b"ab", b"cde"], [b"ab", b"cde\n"], [b"x\nabcde"]])
def test_line_splitter_refuses_a_longer_line_as_soon_as_it_is_in(pieces: list[bytes]) -> None:
    splitter = LineSplitter(max_line=4)
    with pytest.raises(ProtocolError, match="longer than 4 bytes") as info:
        for piece in pieces:
            splitter.split(piece)
        splitter.rest()  # the lines before it came first ("x"): the error is next
    assert info.value.kind == "oversize"


def test_line_splitter_returns_the_lines_before_a_long_one_then_fails_for_good() -> None:
    splitter = LineSplitter(max_line=4)
    assert splitter.split(b"good\nabcdefgh\nnext\n") == [b"good"]
    assert splitter.failure is not None and splitter.failure.kind == "oversize"
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        splitter.split(b"more\n")
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        splitter.rest()


def test_line_splitter_does_not_splice_lines_after_an_oversize_error() -> None:
    splitter = LineSplitter(max_line=4)
    assert splitter.split(b"ab") == []
    with pytest.raises(ProtocolError):
        splitter.split(b"cdef")
    with pytest.raises(ProtocolError):
        splitter.split(b"g\nok\n")


def test_line_splitter_keeps_a_copy_of_a_reused_buffer() -> None:
    splitter = LineSplitter()
    buffer = bytearray(b"abc")
    assert splitter.split(buffer) == []
    buffer[:] = b"XYZ"
    assert splitter.split(memoryview(b"d\ne\n")) == [b"abcd", b"e"]


# --- every decode failure is undecodable (docs/protocol.md, section 4.5) -------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
UNDECODABLE = object()


def spec_value_vectors() -> list[tuple[str, bytes, Any]]:
    """The test vectors of section 4.5: (codec, payload, value or UNDECODABLE)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 4.5 ") : text.index("## 5. ")]
    vectors: list[tuple[str, bytes, Any]] = []
    for line in section.splitlines():
        row = re.fullmatch(r"\| (json|msgpack|cbor) \| `(.*)` \| (.*) \|", line)
        if row is None:
            continue
        codec, shown, result = row.groups()
        payload = shown.encode() if codec == "json" else bytes.fromhex(shown)
        if result.startswith("undecodable"):
            vectors.append((codec, payload, UNDECODABLE))
            continue
        kind, literal = re.fullmatch(r"(integer|float|map|array) `(.*)`", result).groups()  # type: ignore[union-attr]
        value = float(literal) if kind == "float" else ast.literal_eval(literal)
        vectors.append((codec, payload, value))
    assert len(vectors) >= 30
    return vectors


def same_value(a: Any, b: Any) -> bool:
    """Equal, with int and float told apart, -0.0 from 0.0, and NaN equal to itself."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    spec_value_vectors(),
    ids=lambda v: "undecodable" if v is UNDECODABLE else repr(v)[:40],  # stable across workers
)
def test_the_spec_value_vectors_decode_as_documented(
    name: str, payload: bytes, expected: Any
) -> None:
    codec = get_codec(name)
    for decode in (codec.decode_many, lambda p: codec.frame_decoder(p).take(1)):
        if expected is UNDECODABLE:
            with pytest.raises(RemoteProtocolError) as info:
                decode(payload)
            assert info.value.kind == "undecodable"
        else:
            (value,) = decode(payload)
            assert same_value(value, expected), (value, expected)


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("msgpack", "818000", "map key"),
        ("msgpack", "c70005", "extension type 5"),
        ("msgpack", "d6ff00000001", "extension type"),
        ("cbor", "c11a00000001", "tag 1"),
        ("cbor", "d9123401", "tag 4660"),
        ("cbor", "a10102", "map key"),
        ("json", "4e614e", "NaN"),
        ("json", "5b3165343030305d", "out of range"),
    ],
)
def test_undecodable_values_say_why(name: str, payload: str, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        get_codec(name).decode_many(bytes.fromhex(payload))


def nested(name: str, depth: int) -> bytes:
    """``depth`` arrays, one inside the other, around the integer 0."""
    if name == "json":
        return b"[" * depth + b"0" + b"]" * depth
    return {"msgpack": b"\x91", "cbor": b"\x81"}[name] * depth + b"\x00"


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_nesting_256_levels_deep_is_accepted(name: str) -> None:
    (value,) = get_codec(name).decode_many(nested(name, 256))
    for _ in range(256):
        (value,) = value
    assert value == 0


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_nesting_beyond_the_depth_limit_is_undecodable(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        get_codec(name).decode_many(nested(name, MAX_DEPTH + 1))
    assert info.value.kind == "undecodable"


def test_cbor_tags_other_than_big_integers_are_undecodable() -> None:
    codec = get_codec("cbor")
    for tag in [0, 1, 4, 5, 21, 25, 28, 29, 30, 32, 35, 36, 37, 100, 256, 258, 260, 261, 1004]:
        head = bytes([0xD8, tag]) if tag < 256 else bytes([0xD9]) + tag.to_bytes(2, "big")
        with pytest.raises(RemoteProtocolError, match=f"tag {tag}"):
            codec.decode_many(head + b"\x01")
    assert codec.decode_many(bytes.fromhex("c34100")) == [-1]  # tag 3: -1 - 0


def hostile_payloads() -> st.SearchStrategy[bytes]:
    """Random bytes, and valid encodings spliced with bytes that open containers, tags,
    extension types, long strings and deep nesting."""
    nasty = st.sampled_from(
        [
            b"\x81\x80",
            b"\x81\x90",
            b"\xd6\xff",
            b"\xc7\x00\x05",
            b"\xdd\xff\xff\xff\xff",
            b"\xdb\xff\xff\xff\xff",
            b"\x81" * 1100,
            b"\x91" * 1100,
            b"\x9f",
            b"\x5f",
            b"\xd8\x1c",
            b"\xd8\x1d\x00",
            b"\xc2\x5b",
            b"\xa1\x01",
            b"\xf7",
            b"\xf8\x20",
            b"\xff",
            b"NaN",
            b"1e400",
            b"[" * 1100,
            b'{"a":',
            b"\\ud800",
            b"\xef\xbb\xbf",
            b"\n",
        ]
    )
    pieces = st.lists(st.one_of(st.binary(max_size=12), nasty), max_size=8)
    return pieces.map(b"".join)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(CODEC_NAMES), payload=hostile_payloads(), limit=st.integers(1, 4))
def test_any_payload_decodes_or_is_undecodable_and_nothing_else(
    name: str, payload: bytes, limit: int
) -> None:
    codec = get_codec(name)
    try:
        whole = codec.decode_many(payload)
    except RemoteProtocolError as exc:
        assert exc.kind == "undecodable"
        whole = None
    sliced: list[Any] = []
    try:
        frame = codec.frame_decoder(payload)
        while True:
            left = frame.left
            taken = frame.take(limit)
            assert len(taken) <= limit
            sliced += taken
            if frame.left == 0:
                break
            assert taken and frame.left < left  # progress
    except RemoteProtocolError as exc:
        assert exc.kind == "undecodable"
        assert whole is None  # slicing refuses exactly what decoding at once refuses
    else:
        assert whole is not None and same_value(sliced, whole)
    try:
        decoder = codec.stream_decoder()
        decoder.feed(payload)
        decoder.close()
    except RemoteProtocolError as exc:
        assert exc.kind in ("undecodable", "oversize")
