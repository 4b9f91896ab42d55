"""Stage settings: the keywords every stage function takes, their defaults and checks.

A stage function declares ``**options: Unpack[StageOptions]`` (or the subset it takes)
and turns them into a :class:`StageSettings` with :meth:`StageSettings.from_options`,
which applies the defaults, rejects keywords the function does not take and validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from ..kernel import RestartPolicy

__all__ = ["ParallelStageOptions", "StageOptions", "StageSettings"]


class _RestartOptions(TypedDict, total=False):
    """When the stage's module is restarted (see :class:`~pipekit.kernel.RestartPolicy`)."""

    restart: str | RestartPolicy
    max_restarts: int
    backoff: float


class _BufferOptions(TypedDict, total=False):
    """The bounds of the stage's input buffer."""

    buffer: int | None
    buffer_bytes: int | None


class StageOptions(_RestartOptions, _BufferOptions, total=False):
    """Keywords of a stage: ``buffer`` bounds its input buffer in messages;
    ``buffer_bytes`` also bounds the total size of ``bytes``/``str`` messages in it
    (default: none, or :data:`~pipekit.pipeline.BULK_BUFFER_BYTES` when the previous
    stage is a process); ``restart``, ``max_restarts`` and ``backoff`` say when its
    module is restarted. Defaults: :class:`StageSettings`."""


class ParallelStageOptions(StageOptions, total=False):
    """:class:`StageOptions` of a stage that may run ``workers`` calls at once;
    ``ordered=False`` lets its output follow completion instead of input order."""

    workers: int
    ordered: bool


@dataclass(frozen=True)
class StageSettings:
    """A stage's settings with every default applied, validated on construction."""

    buffer: int | None = None
    buffer_bytes: int | None = None
    restart: str | RestartPolicy = "never"
    max_restarts: int = 3
    backoff: float = 0.1
    workers: int = 1
    ordered: bool = True

    def __post_init__(self) -> None:
        if self.buffer is not None and self.buffer < 1:
            raise ValueError("buffer must be at least 1")
        if self.buffer_bytes is not None and self.buffer_bytes < 1:
            raise ValueError("buffer_bytes must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")

    @classmethod
    def from_options(
        cls,
        caller: str,
        options: Mapping[str, Any],
        accepted: type[Mapping[str, Any]] = StageOptions,
        **fixed: Any,
    ) -> StageSettings:
        """The settings of a call to the stage function ``caller``: its ``options``
        (keys of the TypedDict ``accepted`` only: any other raises :class:`TypeError`
        as an unknown keyword would) over ``fixed`` over the defaults."""
        known = accepted.__required_keys__ | accepted.__optional_keys__  # type: ignore[attr-defined]
        for key in options:
            if key not in known:
                raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}")
        return cls(**{**fixed, **options})
