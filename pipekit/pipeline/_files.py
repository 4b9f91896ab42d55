"""Files as stages: ``read_lines``/``read_bytes`` sources, ``write_lines``/``write_bytes``
sinks. Every read and write runs in a worker thread (``trio.open_file``), a chunk at a
time, so a slow disk never stalls the event loop.

The newline rule, shared with ``pk.cmd(..., mode="lines")``: a line travels as a
``str`` *without* its terminator. Reading, a line ends at ``\\n``, ``\\r\\n`` or ``\\r``
(Python's universal newlines) and a last line without one still counts. Writing, every
message becomes one line: one trailing ``\\n`` is taken as the message's own terminator
and is not doubled, so lines read with ``open(path)`` (which keep their ``\\n``) and
lines without one are written alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Unpack

import trio

from ..kernel import Module, Pipe
from ._settings import StageSettings, _SinkOptions, _SourceOptions
from ._stage import Stage

__all__ = ["READ_CHUNK", "read_bytes", "read_lines", "write_bytes", "write_lines"]

READ_CHUNK = 256 * 1024
"""Characters (``read_lines``) or bytes (``read_bytes``) read at a time."""

Path = str | os.PathLike[str]


class _ReadLines:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, path: Path, encoding: str, errors: str, chunk: int) -> None:
        self.path = path
        self.encoding = encoding
        self.errors = errors
        self.chunk = chunk

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        f = await trio.open_file(self.path, encoding=self.encoding, errors=self.errors)
        async with f:
            rest = ""
            while text := await f.read(self.chunk):
                lines = (rest + text if rest else text).split("\n")
                rest = lines.pop()  # the start of a line that goes on in the next chunk
                if lines:
                    await out.send_batch(lines)
            if rest:
                await out.send_batch([rest])


class _ReadBytes:
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("out",)

    def __init__(self, path: Path, chunk: int) -> None:
        self.path = path
        self.chunk = chunk

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        out = ports["out"]
        async with await trio.open_file(self.path, "rb") as f:
            while data := await f.read(self.chunk):
                await out.send(data)


class _Write:
    inputs: tuple[str, ...] = ("inp",)
    outputs: tuple[str, ...] = ()

    def __init__(self, path: Path, lines: bool, append: bool, encoding: str, errors: str) -> None:
        self.path = path
        self.lines = lines
        self.append = append
        self.encoding = encoding
        self.errors = errors

    async def run(self, ports: Mapping[str, Pipe]) -> None:
        inp = ports["inp"]
        mode = ("a" if self.append else "w") + ("" if self.lines else "b")
        if self.lines:
            f: Any = await trio.open_file(
                self.path, mode, encoding=self.encoding, errors=self.errors, newline="\n"
            )
        else:
            f = await trio.open_file(self.path, mode)
        async with f:
            async for got in inp.batches():
                await f.write(self._text(got) if self.lines else self._bytes(got))

    def _text(self, got: list[Any]) -> str:
        lines = [m if type(m) is str else self._str(m) for m in got]
        return "".join([m if m.endswith("\n") else m + "\n" for m in lines])

    def _str(self, m: Any) -> str:
        if isinstance(m, bytes | bytearray | memoryview):
            return bytes(m).decode(self.encoding, self.errors)
        return str(m)

    @staticmethod
    def _bytes(got: list[Any]) -> bytes:
        for m in got:
            if not isinstance(m, bytes | bytearray | memoryview):
                raise TypeError(
                    f"write_bytes() writes bytes, not {type(m).__name__}: "
                    "use write_lines() for text"
                )
        return got[0] if len(got) == 1 and type(got[0]) is bytes else b"".join(got)


class _FileStage(Stage):
    def __init__(self, label: str, options: StageSettings, module: Any, role: str) -> None:
        super().__init__(label, options)
        self.role = role
        self._module = module

    def module(self, *, first: bool = False) -> Module:
        mod: Module = self._module()
        return mod


def _label(kind: str, path: Path) -> str:
    return f"{kind}({os.path.basename(os.fspath(path))})"


def read_lines(
    path: Path,
    *,
    encoding: str = "utf-8",
    errors: str = "strict",
    **options: Unpack[_SourceOptions],
) -> Stage:
    """A source emitting the lines of the text file ``path``, without their
    terminators (``\\n``, ``\\r\\n`` or ``\\r``); a last line without one still counts,
    an empty file gives nothing. ``encoding`` and ``errors`` are those of :func:`open`.
    Takes ``name`` and the restart keywords (a restart reads the file again from the
    start).

    Example::

        (pk.read_lines("in.txt") | pk.map(str.upper) | pk.write_lines("out.txt")).run()
    """
    os.fspath(path)  # a TypeError now rather than at run time
    settings = StageSettings.from_options("read_lines", options, _SourceOptions)
    return _FileStage(
        _label("read_lines", path),
        settings,
        lambda: _ReadLines(path, encoding, errors, READ_CHUNK),
        "source",
    )


def read_bytes(
    path: Path, *, chunk_size: int = READ_CHUNK, **options: Unpack[_SourceOptions]
) -> Stage:
    """A source emitting the contents of the file ``path`` as ``bytes`` chunks of at
    most ``chunk_size`` bytes.

    Example::

        (pk.read_bytes("in.gz") | pk.cmd("gzip", "-d", mode="bytes")
         | pk.write_bytes("out")).run()
    """
    os.fspath(path)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    settings = StageSettings.from_options("read_bytes", options, _SourceOptions)
    return _FileStage(
        _label("read_bytes", path), settings, lambda: _ReadBytes(path, chunk_size), "source"
    )


def write_lines(
    path: Path,
    *,
    append: bool = False,
    encoding: str = "utf-8",
    errors: str = "strict",
    **options: Unpack[_SinkOptions],
) -> Stage:
    """A sink writing every message as one line of the text file ``path`` (created or
    truncated; with ``append=True``, added to its end). A ``str`` is written with a
    ``\\n`` after it unless it already ends with one; ``bytes`` are decoded with
    ``encoding``; anything else is written as ``str(message)``. Takes ``name`` and the
    buffer keywords; ``run()`` returns None.

    Example::

        (pk.source(["a", "b\\n"]) | pk.write_lines("out.txt")).run()   # out.txt: a, b
    """
    os.fspath(path)
    settings = StageSettings.from_options("write_lines", options, _SinkOptions, max_restarts=0)
    return _FileStage(
        _label("write_lines", path),
        settings,
        lambda: _Write(path, True, append, encoding, errors),
        "sink",
    )


def write_bytes(path: Path, *, append: bool = False, **options: Unpack[_SinkOptions]) -> Stage:
    """A sink writing every message (``bytes``, ``bytearray`` or ``memoryview``) to the
    file ``path`` as it is, with nothing between messages (created or truncated; with
    ``append=True``, added to its end).

    Example::

        (pk.read_bytes("a.bin") | pk.write_bytes("copy.bin")).run()
    """
    os.fspath(path)
    settings = StageSettings.from_options("write_bytes", options, _SinkOptions, max_restarts=0)
    return _FileStage(
        _label("write_bytes", path),
        settings,
        lambda: _Write(path, False, append, "utf-8", "strict"),
        "sink",
    )
