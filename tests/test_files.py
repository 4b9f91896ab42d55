"""Tests of the file stages: ``pk.read_lines``/``pk.write_lines`` and
``pk.read_bytes``/``pk.write_bytes``, and the newline rule they share with
``pk.cmd(..., mode="lines")``."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import pipekit as pk
from pipekit.pipeline import READ_CHUNK


def test_read_lines_gives_lines_without_their_terminators(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"unix\nwindows\r\nold mac\rlast without newline")
    assert (pk.read_lines(path) | pk.collect()).run() == [
        "unix",
        "windows",
        "old mac",
        "last without newline",
    ]


def test_read_lines_keeps_empty_lines_and_an_empty_file_gives_nothing(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("a\n\nb\n\n")
    assert (pk.read_lines(path) | pk.collect()).run() == ["a", "", "b", ""]
    path.write_text("")
    assert (pk.read_lines(str(path)) | pk.collect()).run() == []


def test_read_lines_across_chunk_boundaries_with_multibyte_characters(tmp_path: Path) -> None:
    lines = [f"{i}:{'é€😀' * (i % 97)}" for i in range(20_000)]
    path = tmp_path / "big.txt"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    assert path.stat().st_size > 3 * READ_CHUNK
    assert (pk.read_lines(path) | pk.collect()).run() == lines


def test_read_lines_encoding_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes("café\n".encode("latin-1"))
    assert (pk.read_lines(path, encoding="latin-1") | pk.collect()).run() == ["café"]
    with pytest.raises(pk.ModuleError) as info:
        (pk.read_lines(path) | pk.collect()).run()
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    replaced = (pk.read_lines(path, errors="replace") | pk.collect()).run()
    assert replaced == ["caf\ufffd"]


def test_a_missing_file_fails_the_stage_naming_it(tmp_path: Path) -> None:
    with pytest.raises(pk.ModuleError) as info:
        (pk.read_lines(tmp_path / "nope.txt") | pk.collect()).run()
    assert info.value.module == "read_lines(nope.txt)"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_write_lines_terminates_every_message_once(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    messages = ["a", "b\n", "c\n\n", "", b"bytes", 42, "d\r\n"]
    assert (pk.source(messages) | pk.write_lines(path)).run() is None
    assert path.read_bytes() == b"a\nb\nc\n\n\nbytes\n42\nd\r\n"


def test_lines_from_open_and_from_read_lines_are_written_alike(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("x\ny\nz")
    with src.open() as f:  # lines keep their "\n" (the last has none)
        (pk.source(f) | pk.write_lines(tmp_path / "a.txt")).run()
    (pk.read_lines(src) | pk.write_lines(tmp_path / "b.txt")).run()
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "x\ny\nz\n"


def test_write_lines_truncates_or_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old\n")
    (pk.source(["new"]) | pk.write_lines(path)).run()
    assert path.read_text() == "new\n"
    (pk.source(["more"]) | pk.write_lines(path, append=True)).run()
    assert path.read_text() == "new\nmore\n"


def test_read_lines_to_write_lines_copies_a_large_file(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("".join(f"line {i}\n" for i in range(100_000)))
    (pk.read_lines(src) | pk.map(str.upper) | pk.write_lines(dst)).run()
    assert dst.read_text() == src.read_text().upper()


def test_read_bytes_and_write_bytes_copy_a_file_exactly(tmp_path: Path) -> None:
    data = bytes(itertools.islice(itertools.cycle(range(256)), 1_000_003))
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    chunks = (pk.read_bytes(src, chunk_size=65536) | pk.collect()).run()
    assert [len(c) for c in chunks[:-1]] == [65536] * (len(chunks) - 1)
    assert b"".join(chunks) == data
    (pk.read_bytes(src) | pk.write_bytes(dst)).run()
    assert dst.read_bytes() == data
    (pk.source([b"x", bytearray(b"y"), memoryview(b"z")]) | pk.write_bytes(dst, append=True)).run()
    assert dst.read_bytes() == data + b"xyz"


def test_write_bytes_refuses_text(tmp_path: Path) -> None:
    with pytest.raises(pk.ModuleError) as info:
        (pk.source(["text"]) | pk.write_bytes(tmp_path / "out.bin")).run()
    assert isinstance(info.value.__cause__, TypeError)
    assert "write_lines" in str(info.value.__cause__)


@pytest.mark.needs("sort", "coreutils")
def test_a_file_through_a_lines_mode_command_and_back(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out.txt"
    src.write_text("pear\napple\nfig\n")
    (pk.read_lines(src) | pk.cmd("sort", mode="lines") | pk.write_lines(dst)).run()
    assert dst.read_text() == "apple\nfig\npear\n"


def test_file_stages_check_their_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        pk.read_lines(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pk.read_bytes(tmp_path / "x", chunk_size=0)
    with pytest.raises(TypeError, match="restart"):
        pk.write_lines(tmp_path / "x", restart="always")  # type: ignore[call-arg]
    assert pk.read_lines(tmp_path / "x").role == "source"
    assert pk.write_bytes(tmp_path / "x").role == "sink"
