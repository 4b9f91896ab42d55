"""The parent's side of the progress records: a small shared file with one record per
worker slot, which the pool reads once a dead worker's process is gone."""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import tempfile
from typing import Any

from .._wire import RECORD, read_record, record_address, reset_record


class ProgressRecords:
    """Shared memory where each worker records, before running a slice of a chunk, the
    ids of that slice (the :data:`~pipekit.child.PROGRESS_ENV` record): one record per
    slot, read once the worker's process is gone. On Linux the file has no name (the
    workers open it through ``/proc/<pid>/fd``), elsewhere it is a temporary file
    removed when the pool closes."""

    def __init__(self, file: Any, path: str, named: bool, slots: int) -> None:
        self.file = file
        self.path = path
        self.named = named
        self.memory = mmap.mmap(file.fileno(), RECORD.size * slots)

    @classmethod
    def create(cls, slots: int) -> ProgressRecords | None:
        """Records for ``slots`` workers, or None if no shared file can be made (then
        every unanswered item of a dead worker is a suspect)."""
        file: Any = None
        try:
            if sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd"):
                file = tempfile.TemporaryFile(prefix="pipekit-pool-")  # noqa: SIM115
                path, named = f"/proc/{os.getpid()}/fd/{file.fileno()}", False
            else:
                file = tempfile.NamedTemporaryFile(prefix="pipekit-pool-", delete=False)  # noqa: SIM115
                path, named = file.name, True
            file.truncate(RECORD.size * slots)
            return cls(file, path, named, slots)
        except (OSError, ValueError):
            if file is not None:
                file.close()
            return None

    def where(self, slot: int) -> str:
        """The value of :data:`~pipekit.child.PROGRESS_ENV` for a worker in ``slot``."""
        return record_address(self.path, slot)

    def reset(self, slot: int) -> None:
        reset_record(self.memory, slot)

    def read(self, slot: int) -> tuple[int, int] | None:
        return read_record(self.memory, slot)

    def close(self) -> None:
        self.memory.close()
        self.file.close()
        if self.named:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
