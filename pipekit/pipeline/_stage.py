"""The stage: one step of a pipeline, composed with ``|`` and run as one kernel module."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..kernel import Module
from ._settings import StageSettings

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["Stage"]


class Stage:
    """One step of a pipeline. Build stages with :func:`source`, :func:`map`, ...;
    compose them with ``|``.

    Example::

        parse = pk.map(int, name="parse")          # a Stage
        p = pk.source(["1", "2"]) | parse          # a Pipeline: p.run() -> [1, 2]
    """

    role = "transform"  # source, transform or sink
    can_lead = False  # a transform that may also start a pipeline (a command)
    bulk_output = False  # emits possibly large bytes/str chunks (a process)
    joinable = False  # adjacent joinable stages are merged by joined() (OS pipes)

    def __init__(self, label: str, options: StageSettings) -> None:
        self.label = options.name or label
        self.options = options

    def branches(self) -> list[tuple[str, list[Stage]]]:
        """Side branches fed by this stage's module: ``(output port, stages)`` pairs
        (a :func:`~pipekit.tee`'s branches, a dead-letter stage). The main line is fed
        by the output port ``out``."""
        return []

    def module(self, *, first: bool = False) -> Module:
        """A fresh kernel module for one run of this stage (``first``: it leads the
        pipeline, so it has no input)."""
        raise NotImplementedError

    def joined(self, following: Sequence[Stage]) -> Stage:
        """One stage doing the work of ``self`` and the joinable stages after it."""
        raise NotImplementedError

    def __or__(self, other: Stage | Pipeline) -> Pipeline:
        from ._pipeline import Pipeline  # the two are defined in terms of each other

        return Pipeline([self]) | other

    def __ror__(self, items: Iterable[Any]) -> Pipeline:
        from ._sources import source  # a source is a stage

        return source(items) | self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def _name(fn: Any) -> str:
    """A callable's name for a stage label."""
    return str(getattr(fn, "__name__", None) or type(fn).__name__)
