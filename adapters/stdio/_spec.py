"""How to start one process: :class:`ProcessSpec` and the names of its modes and
redirections."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from ...kernel.codecs import CODEC_NAMES
from ...kernel.options import PipeOptions


class StdioMode(StrEnum):
    """What travels over a process's stdin and stdout. Specs accept the plain strings."""

    FRAMES = "frames"
    """pipekit/1, over stdin/stdout or over a dedicated channel socket."""
    LINES = "lines"
    """One ``str`` per line (UTF-8; undecodable bytes survive as surrogates)."""
    JSONL = "jsonl"
    """One JSON value per line."""
    BYTES = "bytes"
    """``bytes`` chunks as they come."""


StdioModeName = Literal["frames", "lines", "jsonl", "bytes"]


class Redirect(StrEnum):
    """Where a process's stdin, stdout or stderr goes. Specs accept the plain strings."""

    PIPE = "pipe"
    """Connected to the pipe (stderr: captured, its tail kept)."""
    INHERIT = "inherit"
    """Shared with this process."""
    NULL = "null"
    """``/dev/null``."""


RedirectName = Literal["pipe", "inherit", "null"]

DEFAULT_MAX_LINE = 8 * 1024 * 1024
"""Longest line accepted from a ``lines`` or ``jsonl`` process (8 MiB, as ``max_frame``)."""


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process. ``argv[0]`` is looked up on ``PATH``.

    ``mode``: a :class:`StdioMode` (or its string). ``stdin``/``stdout``/``stderr``: a
    :class:`Redirect` (or its string): ``"pipe"`` (connected to the pipe; stderr is
    captured and its tail kept), ``"inherit"`` (shared with this process) or ``"null"``.
    ``channel``: the name of an environment variable; when given (mode must be
    ``frames``), pipekit/1 runs on a dedicated socket whose descriptor number the
    process finds in that variable, and its stdin and stdout are free.
    ``codecs``, ``name`` and ``framed_options`` (more :class:`~pipekit.kernel.PipeOptions`):
    the pipekit/1 settings of ``frames`` mode.
    ``timeout``: seconds the process may run before it is killed (kind ``timeout``).
    ``kill_grace``: seconds between SIGTERM and SIGKILL.
    ``max_line``: ``lines`` and ``jsonl`` modes, the longest line accepted from the
    process's stdout; a longer one fails the stream (kind ``oversize``).
    """

    argv: tuple[str, ...]
    mode: StdioMode | StdioModeName = StdioMode.LINES
    env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    stdin: Redirect | RedirectName = Redirect.PIPE
    stdout: Redirect | RedirectName = Redirect.PIPE
    stderr: Redirect | RedirectName = Redirect.PIPE
    timeout: float | None = None
    kill_grace: float = 5.0
    max_line: int = DEFAULT_MAX_LINE
    channel: str | None = None
    codecs: tuple[str, ...] = CODEC_NAMES
    name: str | None = None
    framed_options: PipeOptions = field(default_factory=lambda: PipeOptions())

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv must name a program")
        if self.mode not in tuple(StdioMode):
            raise ValueError(f"mode must be frames, lines, jsonl or bytes, not {self.mode!r}")
        object.__setattr__(self, "mode", StdioMode(self.mode))
        for which in ("stdin", "stdout", "stderr"):
            if getattr(self, which) not in tuple(Redirect):
                raise ValueError(f"{which} must be 'pipe', 'inherit' or 'null'")
            object.__setattr__(self, which, Redirect(getattr(self, which)))
        if self.channel is not None:
            if not isinstance(self.channel, str) or not self.channel:
                raise ValueError("channel must name an environment variable")
            if self.mode != StdioMode.FRAMES:
                raise ValueError("a channel needs mode='frames'")
        if self.max_line < 1:
            raise ValueError("max_line must be at least 1")

    @property
    def label(self) -> str:
        return self.name or os.path.basename(self.argv[0])
