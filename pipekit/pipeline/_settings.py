"""Stage settings: the keywords every stage function takes, their defaults and checks.

A stage function declares ``**options: Unpack[StageOptions]`` (or the subset it takes)
and turns them into a :class:`StageSettings` with :meth:`StageSettings.from_options`,
which applies the defaults, rejects keywords the function does not take and validates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Union

from ..kernel import RestartPolicy

if TYPE_CHECKING:
    from ._pipeline import Pipeline
    from ._stage import Stage

__all__ = [
    "ItemStageOptions",
    "OnError",
    "ParallelStageOptions",
    "Retry",
    "StageOptions",
    "StageSettings",
]


@dataclass(frozen=True)
class Retry:
    """Per-item retries: a call that raises one of ``on`` is tried again, up to
    ``times`` more times, after ``backoff * factor**(n-1)`` seconds before retry ``n``
    (at most ``max_backoff``). ``retry=3`` on a stage means ``Retry(3)``.

    Example::

        pk.map(fetch, retry=pk.Retry(4, backoff=0.5, on=(OSError,)), on_error="skip")
    """

    times: int
    backoff: float = 0.1
    factor: float = 2.0
    max_backoff: float = 10.0
    on: type[BaseException] | tuple[type[BaseException], ...] = Exception

    def __post_init__(self) -> None:
        if self.times < 0:
            raise ValueError("Retry.times must be at least 0")
        if self.backoff < 0 or self.max_backoff < 0 or self.factor < 1:
            raise ValueError("Retry needs backoff >= 0, max_backoff >= 0 and factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first)."""
        return float(min(self.max_backoff, self.backoff * self.factor ** (attempt - 1)))

    def wants(self, exc: BaseException, attempt: int) -> bool:
        """Whether a call that raised ``exc`` after ``attempt`` retries is tried again."""
        return attempt < self.times and isinstance(exc, self.on)


OnError = Union[  # a runtime alias: "Stage" and "Pipeline" are forward references
    Literal["raise", "skip"], Callable[[Any, Exception], Any], "Stage", "Pipeline"
]
"""What a stage does with an item whose call failed (after its retries): ``"raise"``
fails the stage, ``"skip"`` drops the item, a callable is called as ``fn(item, exc)``
(plain or ``async def``), a stage or pipeline (a *dead-letter* branch ending in a sink)
receives ``(item, exc)`` tuples: ``pk.map(int, on_error="skip")``,
``pk.map(int, on_error=lambda item, exc: log.warning("bad %r", item))``."""


class _RestartOptions(TypedDict, total=False):
    """When the stage's module is restarted (see :class:`~pipekit.kernel.RestartPolicy`)."""

    restart: str | RestartPolicy
    max_restarts: int
    backoff: float


class _BufferOptions(TypedDict, total=False):
    """The bounds of the stage's input buffer."""

    buffer: int | None
    buffer_bytes: int | None


class _NameOption(TypedDict, total=False):
    """The stage's name in statistics, errors and topologies."""

    name: str


class _SourceOptions(_RestartOptions, _NameOption, total=False):
    """A source's keywords: it has no input buffer."""


class _SinkOptions(_BufferOptions, _NameOption, total=False):
    """Keywords of a sink that is never restarted (``collect``, the file sinks)."""


class _RemoteOptions(_RestartOptions, _BufferOptions, total=False):
    """A remote stage's keywords: its own ``name=`` names the peer."""


class StageOptions(_RestartOptions, _BufferOptions, _NameOption, total=False):
    """Keywords of a stage: ``name`` labels it (default: from its kind and function,
    ``map(parse)``); ``buffer`` bounds its input buffer in messages (default 1024);
    ``buffer_bytes`` also bounds the total size of the ``bytes``/``str`` messages in it
    (default: none, or :data:`~pipekit.pipeline.BULK_BUFFER_BYTES` when the previous
    stage is a process); ``restart``, ``max_restarts`` and ``backoff`` say when its
    module is restarted. Defaults: :class:`StageSettings`.

    Example::

        pk.sink(store, name="db", buffer=100, restart="on-failure", max_restarts=5)
    """


class ParallelStageOptions(StageOptions, total=False):
    """:class:`StageOptions` of a stage that may run ``workers`` calls at once;
    ``ordered=False`` lets its output follow completion instead of input order."""

    workers: int
    ordered: bool


class ItemStageOptions(ParallelStageOptions, total=False):
    """:class:`ParallelStageOptions` of a stage that calls a function per item, with
    per-item error handling: ``on_error`` (:data:`OnError`, default ``"raise"``) and
    ``retry`` (a :class:`Retry`, or the number of retries).

    Example::

        pk.map(fetch, workers=8, retry=3, on_error=pk.sink(log_failure), timeout=5)
    """

    on_error: OnError
    retry: int | Retry | None


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
    name: str | None = None
    on_error: OnError = "raise"
    retry: Retry | None = None
    timeout: float | None = None
    """Per item, for the stages that take it (``map``, ``thread``, ...)."""

    def __post_init__(self) -> None:
        if self.buffer is not None and self.buffer < 1:
            raise ValueError("buffer must be at least 1")
        if self.buffer_bytes is not None and self.buffer_bytes < 1:
            raise ValueError("buffer_bytes must be at least 1")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ValueError("name must be a non-empty string")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        retry: Any = self.retry
        if isinstance(retry, bool) or not (retry is None or isinstance(retry, int | Retry)):
            raise TypeError(f"retry must be a number of retries or a pk.Retry, not {retry!r}")
        if isinstance(retry, int):
            object.__setattr__(self, "retry", Retry(retry) if retry else None)
        check_on_error(self.on_error)

    @property
    def per_item(self) -> bool:
        """True when failures are handled per item (anything but the defaults)."""
        return self.on_error != "raise" or self.retry is not None or self.timeout is not None

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


def check_on_error(on_error: Any) -> None:
    """Raise if ``on_error`` is not an :data:`OnError`."""
    from ._pipeline import Pipeline  # the three modules are defined in terms of each other
    from ._stage import Stage

    if isinstance(on_error, str):
        if on_error not in ("raise", "skip"):
            raise ValueError(
                f"on_error must be 'raise', 'skip', a function (item, exc) or a stage, "
                f"not {on_error!r}"
            )
    elif not (callable(on_error) or isinstance(on_error, Stage | Pipeline)):
        raise TypeError(
            f"on_error must be 'raise', 'skip', a function (item, exc) or a stage, not {on_error!r}"
        )
