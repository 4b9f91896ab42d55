"""The pipekit/1 options every socket adapter takes as keywords and hands to
:func:`~pipekit.kernel.framed_pipe`, with their defaults and validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from ..kernel.codecs import CODEC_NAMES
from ..kernel.framed import DEFAULT_SEND_BUFFER
from ..kernel.protocol import (
    DEFAULT_HIGH_WATER,
    DEFAULT_HIGH_WATER_BYTES,
    DEFAULT_MAX_FRAME,
    DEFAULT_PAUSE_SLACK,
)

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "PipeOptions", "pipe_options"]

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class PipeOptions(TypedDict, total=False):
    """pipekit/1 options every socket adapter passes to
    :func:`~pipekit.kernel.framed_pipe` (see there)."""

    name: str | None
    codecs: Sequence[str]
    max_frame: int
    high_water: int
    low_water: int | None
    high_water_bytes: int
    low_water_bytes: int | None
    pause_slack: int
    send_buffer: int
    handshake_timeout: float | None
    idle_timeout: float | None


def pipe_options(
    *,
    name: str | None = None,
    codecs: Sequence[str] = CODEC_NAMES,
    max_frame: int = DEFAULT_MAX_FRAME,
    high_water: int = DEFAULT_HIGH_WATER,
    low_water: int | None = None,
    high_water_bytes: int = DEFAULT_HIGH_WATER_BYTES,
    low_water_bytes: int | None = None,
    pause_slack: int = DEFAULT_PAUSE_SLACK,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: float | None = None,
) -> PipeOptions:
    """Validated :class:`PipeOptions` with the defaults filled in."""
    if handshake_timeout is not None and handshake_timeout <= 0:
        raise ValueError("handshake_timeout must be positive or None")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive or None")
    return PipeOptions(
        name=name,
        codecs=tuple(codecs),
        max_frame=max_frame,
        high_water=high_water,
        low_water=low_water,
        high_water_bytes=high_water_bytes,
        low_water_bytes=low_water_bytes,
        pause_slack=pause_slack,
        send_buffer=send_buffer,
        handshake_timeout=handshake_timeout,
        idle_timeout=idle_timeout,
    )
