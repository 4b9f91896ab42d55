"""What ``spawn`` can start: callables, import strings, names registered with a node."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ._errors import SpawnError

__all__ = ["Entry", "entry_name", "import_entry"]

Entry = Callable[..., Any] | str
"""An actor entry: a callable (usually ``async def main(*args)``), an import string
``"package.module:function"``, or a name registered with the node."""


def entry_name(fn: Callable[..., Any]) -> str:
    """The ``namespace:name`` part of the Pids of processes running ``fn``."""
    name = getattr(fn, "actor_name", None)
    if isinstance(name, str):
        return name
    module = getattr(fn, "__module__", None) or "builtins"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qualname}".replace("|", "_").replace("{", "_").replace("}", "_")


def import_entry(target: str) -> Callable[..., Any]:
    """The function an import string ``"package.module:function"`` names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SpawnError(
            f"unknown entry {target!r}: not registered with the node, and not an import "
            f"string 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpawnError(f"cannot import the entry {target!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # the module's own code failed as it ran
        raise SpawnError(
            f"importing the entry {target!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    fn: Any = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise SpawnError(f"the entry {target!r}: {module_name} has no {attr!r}") from None
    if not callable(fn):
        raise SpawnError(f"the entry {target!r} is not callable ({type(fn).__name__})")
    return fn  # type: ignore[no-any-return]
