"""Lazy re-exports for the packages' ``__init__`` files (PEP 562).

A package's ``__init__`` imports its public names under ``if TYPE_CHECKING:`` (what
mypy, editors and ``lint-imports`` read) and, at run time, hands the same table to
:func:`lazy_exports`, whose ``__getattr__`` imports a name's module on the name's first
use. So ``import pipekit`` (or a worker importing one module of a floor) runs no floor
it does not use, and ``pk.X``, ``from pipekit import X``, ``from pipekit import *`` and
``dir(pipekit)`` behave as with eager imports. ``tests/test_import_cost.py`` checks that
each table matches its ``TYPE_CHECKING`` imports.

Written here rather than taken from ``lazy_loader``: that library does not re-export
from a sibling package (``pipekit.actors`` gives ``pipekit.channels.select``) and is a
dependency for twenty lines.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, sources: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for package ``package``, whose public names come from
    ``sources``: a module as an ``__init__`` would write it in ``from MODULE import``
    (``"._atom"``, ``"..channels"``; ``"."`` for submodules re-exported by name) mapped
    to the names taken from it.

    The first use of a name imports its module and stores the value in the package's
    namespace, so later uses are plain attribute lookups. Any other name that is a
    submodule of the package is imported as such (an eager ``__init__`` bound its
    submodules as a side effect; code relying on ``pipekit.actors.process`` keeps
    working); other names raise :class:`AttributeError` as usual.

    Example::

        if TYPE_CHECKING:
            from ._atom import Atom
        else:
            __getattr__, __dir__ = lazy_exports(__name__, {"._atom": ["Atom"]})
    """
    origin = {name: module for module, names in sources.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = origin.get(name)
        if module == ".":
            value: Any = importlib.import_module(f"{package}.{name}")
        elif module is not None:
            value = getattr(importlib.import_module(module, package), name)
        elif not name.startswith("__") and _is_submodule(f"{package}.{name}"):
            return importlib.import_module(f"{package}.{name}")  # binds itself
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *origin})

    return __getattr__, __dir__


def _is_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
