"""A function object as the ``"module:qualname"`` a worker process imports it by.

Stand-in until ``pipekit.workers`` converts function objects itself (issue 16's thread
and pool branch adds ``pipekit.workers.target_spec`` and makes ``WorkerPool`` accept
functions); then this module goes and the process backend passes ``fn`` to the pool.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["process_target"]


def process_target(fn: Callable[..., Any]) -> tuple[str, Mapping[str, str] | None]:
    """``(target, env)``: the pool target naming ``fn`` and the workers' environment
    (``None``, or this one with ``fn``'s import root first on ``PYTHONPATH``). Raises a
    :class:`TypeError` naming the fix for what a worker process cannot import: a lambda,
    a closure or nested function, a bound method, a ``functools.partial``."""
    if isinstance(fn, str):
        return fn, None
    qualname = getattr(fn, "__qualname__", None)
    module_name = getattr(fn, "__module__", None)
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, type) and type(owner).__name__ != "module":
        raise TypeError(
            f"backend='process' cannot send the bound method {qualname!r} to a worker "
            "process: use a module-level function"
        )
    if not isinstance(qualname, str) or not isinstance(module_name, str):
        raise TypeError(
            f"backend='process' needs a module-level function, not {fn!r} (a "
            "functools.partial or callable object cannot be imported by a worker process)"
        )
    if "<lambda>" in qualname or "<locals>" in qualname:
        what = "a lambda" if "<lambda>" in qualname else f"{qualname!r} (a nested function)"
        raise TypeError(
            f"backend='process' cannot run {what}: a worker process imports the function "
            "by name, so define it with def at the top level of a module"
        )
    module = sys.modules.get(module_name)
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn and found != fn:
        raise TypeError(
            f"{qualname!r} is not reachable as {module_name}.{qualname}, so a worker "
            "process cannot import it: give it a module-level name"
        )
    file = getattr(module, "__file__", None)
    if module_name == "__main__":
        if not isinstance(file, str) or not file.endswith(".py"):
            raise ValueError(
                f"{qualname!r} is defined in an interactive session or 'python -c', which "
                "a worker process cannot import: put it in a .py module"
            )
        return f"{Path(file).resolve()}:{qualname}", None
    if not isinstance(file, str):
        return f"{module_name}:{qualname}", None
    root = Path(file).resolve().parent
    for _ in range(module_name.count(".") + (Path(file).name == "__init__.py")):
        root = root.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return f"{module_name}:{qualname}", env
