"""The contract between a parent and its Python worker processes: the environment
variables that hand the child its channel and its progress record, the item protocol's
chunk requests, replies and error entries, and the layout of the progress record.

A chunk request is ``[CHUNK, first_id, items]`` or ``[CHUNK, first_id, items, flags]``
(item ``k`` has the id ``first_id + k``). It is answered by replies
``[CHUNK, id, results, failed]``, each covering the next consecutive items of the chunk
from ``id`` on; ``failed`` lists the (reply-relative) offsets whose entry is an error
entry (:func:`error_entry`) instead of a result. With ``flags & TIMED`` each reply has a
fifth element: the seconds the worker spent on its items. A single request
``[id, item]`` is answered by ``[id, True, result]`` or ``[id, False, error_entry]``.

The progress record is :data:`RECORD` (16 bytes) in memory shared by parent and child,
at the ``path:offset`` named in :data:`PROGRESS_ENV`: the ids ``[start, end)`` of the
slice of a chunk the worker is running, written before the slice runs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal


class WorkerMode(StrEnum):
    """How the child runs its target (``pipekit worker --mode``)."""

    STREAM = "stream"
    """The target owns the whole stream."""
    ITEM = "item"
    """The target is called once per item (the item protocol below)."""


WorkerModeName = Literal["stream", "item"]
"""The strings a caller may pass for a :class:`WorkerMode`."""

FD_ENV = "PIPEKIT_FD"
"""Environment variable holding the channel's descriptor number (removed once read)."""

PROGRESS_ENV = "PIPEKIT_PROGRESS"
"""Item mode: ``path:offset`` of 16 bytes of shared memory where the worker records
which items it is running (see :class:`pipekit.WorkerPool`; removed once read)."""

CHUNK = "items"
"""The tag of chunk requests and of their replies."""

TIMED = 1
"""A chunk request's flag: its replies carry the seconds spent on their items."""

ANSWER_LAG = 0.1
"""Seconds a running chunk's finished items may wait for the rest: a busy worker
answers at least this often."""

RECORD = struct.Struct("=qq")
"""The progress record: ``[start, end)`` ids of the slice a worker is running."""


# -- chunk requests and replies ---------------------------------------------------------


def chunk_request(first: int, items: list[Any]) -> list[Any]:
    """A timed chunk request for ``items`` with the ids ``first``, ``first + 1``..."""
    return [CHUNK, first, items, TIMED]


def parse_chunk_request(request: list[Any]) -> tuple[int, list[Any], bool]:
    """``(first_id, items, timed)`` of a request tagged :data:`CHUNK` with 3 or 4
    elements; :class:`ValueError` if its fields are not an int, a list and an int."""
    first, items = request[1], request[2]
    flags = request[3] if len(request) == 4 else 0
    if type(first) is not int or type(items) is not list or type(flags) is not int:
        raise ValueError(
            f"item mode expects [{CHUNK!r}, first_id, items(, flags)] chunks, got {request!r:.200}"
        )
    return first, items, bool(flags & TIMED)


def chunk_reply(
    first: int, results: list[Any], failed: list[int], seconds: float | None
) -> list[Any]:
    """The reply for the items ``first``, ``first + 1``... (``seconds``: the time spent
    on them, for a timed request; else None)."""
    reply = [CHUNK, first, results, failed]
    if seconds is not None:
        reply.append(seconds)
    return reply


def parse_chunk_reply(reply: Any) -> tuple[Any, Any, Any, float | None]:
    """``(first_id, results, failed, seconds or None)`` of a chunk reply; raises
    :class:`ValueError`, :class:`TypeError` or :class:`IndexError` if it is none."""
    tag, first, results, failed = reply[:4]
    if tag != CHUNK:
        raise ValueError(f"not a chunk reply: {tag!r:.100}")
    return first, results, failed, reply[4] if len(reply) == 5 else None


# -- error entries ----------------------------------------------------------------------


def error_entry(kind: str, message: str, traceback: str) -> dict[str, str]:
    """What a reply holds in place of the result of an item whose function failed."""
    return {"kind": kind, "message": message, "traceback": traceback}


def parse_error_entry(info: Any) -> tuple[str, str, str]:
    """``(kind, message, traceback)`` of an error entry (anything else: a
    ``RemoteError`` whose message is its repr)."""
    if not isinstance(info, dict):
        info = {"kind": "RemoteError", "message": repr(info)}
    return (
        str(info.get("kind", "Exception")),
        str(info.get("message", "")),
        str(info.get("traceback", "")),
    )


# -- the progress record ----------------------------------------------------------------


def record_address(path: str, slot: int) -> str:
    """The value of :data:`PROGRESS_ENV` for the record number ``slot`` in ``path``."""
    return f"{path}:{RECORD.size * slot}"


def parse_record_address(text: str) -> tuple[str, int] | None:
    """``(path, offset)`` of a :data:`PROGRESS_ENV` value, or None if it is malformed."""
    path, _, where = text.rpartition(":")
    try:
        offset = int(where)
    except ValueError:
        return None
    if offset < 0 or offset % RECORD.size:
        return None
    return path, offset


def reset_record(memory: Any, slot: int) -> None:
    """Mark the record number ``slot`` as holding no slice."""
    RECORD.pack_into(memory, RECORD.size * slot, -1, -1)


def read_record(memory: Any, slot: int) -> tuple[int, int] | None:
    """The slice ``(start, end)`` in the record number ``slot``, or None if none."""
    start, end = RECORD.unpack_from(memory, RECORD.size * slot)
    return (start, end) if 0 <= start <= end else None


def record_writer(memory: Any, offset: int) -> Callable[[int, int], None]:
    """The function that writes a slice ``(start, end)`` into the record at ``offset``."""
    view = memoryview(memory)[offset : offset + RECORD.size].cast("q")

    def mark(start: int, end: int) -> None:
        # end first: a process killed between the two stores leaves a wider range.
        view[1] = end
        view[0] = start

    return mark
