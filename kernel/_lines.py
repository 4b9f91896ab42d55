"""Splitting a byte stream into lines, with a bound on their length (the stdio
adapter's ``lines`` and ``jsonl`` modes, and the JSON stream decoder)."""

from __future__ import annotations

import itertools
import sys

from .errors import ErrorKind, RemoteProtocolError

__all__ = ["LineSplitter"]


class LineSplitter:
    """bytes -> complete lines (``bytes``, without the newline). With ``max_line``, none
    longer than that: a longer one is a :class:`RemoteProtocolError` (kind ``oversize``), found
    as soon as that many bytes of it are in, so a writer that never writes a newline
    cannot fill memory. The lines before it are still returned; the error is then raised
    by the next call, and by every call after (see :attr:`failure`). A partial line is
    kept as pieces and joined once, when it completes."""

    def __init__(self, max_line: int | None = None) -> None:
        self.max_line = max_line if max_line is not None else sys.maxsize
        self.failure: RemoteProtocolError | None = None
        """The oversize error once one was found (raised by every later call)."""
        self._pieces: list[bytes] = []
        self._size = 0

    def _fail(self) -> RemoteProtocolError:
        self._pieces = []
        self._size = 0
        self.failure = RemoteProtocolError(
            f"a line longer than {self.max_line} bytes (max_line) arrived",
            kind=ErrorKind.OVERSIZE,
        )
        return self.failure

    def split(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self.failure is not None:
            raise self.failure
        if type(data) is not bytes:
            data = bytes(data)  # kept as a piece: never a buffer its owner may reuse
        limit = self.max_line
        if b"\n" not in data:
            if data:
                self._size += len(data)
                if self._size > limit:
                    raise self._fail()
                self._pieces.append(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces = []
        if max(map(len, lines)) > limit:
            good = list(itertools.takewhile(lambda line: len(line) <= limit, lines))
            error = self._fail()
            if not good:
                raise error
            return good
        if len(tail) > limit:
            self._fail()
            return lines
        self._size = len(tail)
        if tail:
            self._pieces.append(tail)
        return lines

    def rest(self) -> bytes:
        """The last line, which had no newline (``b""`` if none)."""
        if self.failure is not None:
            raise self.failure
        rest = b"".join(self._pieces)
        self._pieces = []
        self._size = 0
        return rest
