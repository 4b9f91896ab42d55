"""Function objects as worker targets: the ``"module:qualname"`` string a worker process
imports a function by, and the ``sys.path`` entry it needs to find that module.

A worker is a fresh interpreter (``python -m pipekit worker TARGET``, never a fork), so
it can call only what it can import by name. That rules out lambdas, closures, nested
functions, bound methods of objects and ``functools.partial``s: each gets a
:class:`TypeError` that names the fix. A function defined in the ``__main__`` of a
script run as ``python script.py`` is imported from the script file (the worker runs
its top-level code under another name, so ``if __name__ == "__main__":`` blocks do not
run, as with ``multiprocessing``'s spawn); one from ``python -m package.module`` is
imported by that module name; one from an interactive session, ``python -c`` or a
notebook has no file to import and gets a :class:`ValueError`.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Target", "resolve_target", "target_spec"]

PYTHONPATH = "PYTHONPATH"


@dataclass(frozen=True, slots=True)
class Target:
    """What a worker needs to load a function: ``spec`` (``"module:qualname"`` or
    ``"path/to/file.py:qualname"``) and ``path``, a directory to put on the worker's
    ``PYTHONPATH`` so that the module is found there as it was here (``None``: nothing
    to add, the module comes from the interpreter's own paths or a file)."""

    spec: str
    path: str | None = None

    def env(self, env: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """The worker environment ``env`` (``None``: this process's) with :attr:`path`
        first on its ``PYTHONPATH``; ``env`` itself when there is nothing to add."""
        if self.path is None:
            return env
        base = dict(os.environ if env is None else env)
        entries = [e for e in base.get(PYTHONPATH, "").split(os.pathsep) if e]
        if self.path in entries:
            return env
        base[PYTHONPATH] = os.pathsep.join([self.path, *entries])
        return base


def target_spec(target: str | os.PathLike[str] | Callable[..., Any]) -> str:
    """The worker target string for ``target``: a string or path as given, a function
    object as the ``"module:qualname"`` (or ``"script.py:qualname"``) a worker process
    imports it by. Raises :class:`TypeError` for a callable that cannot be imported by
    name (lambda, closure, nested function, bound method of an object, partial) and
    :class:`ValueError` for a function of a ``__main__`` that has no file; both say how
    to fix it. :class:`~pipekit.WorkerPool`, ``pk.run`` and the process backends call
    this, so an unusable function fails before any process starts.

    Example::

        from myapp.nlp import tag
        pipekit.workers.target_spec(tag)          # -> 'myapp.nlp:tag'
        pipekit.workers.target_spec(lambda x: x)  # TypeError: ... module level ...
    """
    return resolve_target(target).spec


def resolve_target(target: str | os.PathLike[str] | Callable[..., Any]) -> Target:
    """:func:`target_spec` and the ``sys.path`` entry the worker needs (see
    :class:`Target`)."""
    if isinstance(target, (str, os.PathLike)):
        return Target(os.fspath(target))
    if not callable(target):
        raise TypeError(
            "a worker target is a function, 'module:function' or 'file.py[:function]', "
            f"not a {type(target).__name__}"
        )
    module_name, qualname = _names(target)
    module = sys.modules.get(module_name)
    found = _lookup(module, qualname) if module is not None else None
    if found is not target and not _same(found, target):
        raise TypeError(
            f"{_describe(target)} is not reachable as {module_name}.{qualname}, so a worker "
            "process cannot import it by name: give the function a module-level name "
            "(decorators must keep it, e.g. with functools.wraps) or pass "
            "'module:function'"
        )
    if module_name == "__main__":
        return _from_main(target, qualname)
    return Target(f"{module_name}:{qualname}", _import_root(module_name, module))


def _names(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(module, qualname)`` of a function, or a readable :class:`TypeError`."""
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, type) and not _is_module(owner):
        raise TypeError(
            f"{_describe(fn)} is a method bound to a {type(owner).__name__} object, which "
            "a worker process cannot import: use a module-level function (or a "
            "@staticmethod/@classmethod of a module-level class) and pass the object's "
            "state as the item or build it in init="
        )
    qualname = getattr(fn, "__qualname__", None)
    module = getattr(fn, "__module__", None)
    objclass = getattr(fn, "__objclass__", None)  # str.upper and other slot wrappers
    if module is None and objclass is not None:
        module = objclass.__module__
    if not isinstance(qualname, str) or not isinstance(module, str):
        raise TypeError(
            f"{_describe(fn)} has no module-level name a worker process could import it "
            "by (a functools.partial or a callable object?): define a function at the "
            "top level of a module and pass it, or pass 'module:function'"
        )
    if "<lambda>" in qualname:
        raise TypeError(
            f"a lambda (in {module}) cannot be imported by a worker process: define it "
            "with def at the top level of a module and pass that function"
        )
    if "<locals>" in qualname:
        raise TypeError(
            f"{_describe(fn)} is defined inside another function (a closure or nested "
            "function), so a worker process cannot import it: move it to the top level "
            "of a module, passing what it captured as part of each item or via init="
        )
    return module, qualname


def _from_main(fn: Callable[..., Any], qualname: str) -> Target:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name != "__main__":  # python -m package.module
        return Target(f"{name}:{qualname}", _import_root(name, main))
    path = getattr(main, "__file__", None)
    if isinstance(path, str) and path.endswith(".py") and Path(path).is_file():
        return Target(f"{Path(path).resolve()}:{qualname}")
    raise ValueError(
        f"{_describe(fn)} is defined in __main__ of an interactive session, 'python -c' "
        "or a notebook, which a worker process cannot import: put it in a .py module "
        "and import it from there (or pass 'file.py:function')"
    )


def _lookup(module: Any, qualname: str) -> Any:
    obj = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _same(found: Any, fn: Any) -> bool:
    """Classmethods are bound anew on every lookup: equal, not identical."""
    return found is not None and getattr(fn, "__self__", None) is not None and found == fn


def _is_module(obj: object) -> bool:
    return type(obj).__name__ == "module"


def _import_root(module_name: str, module: Any) -> str | None:
    """The ``sys.path`` entry ``module`` was imported from, unless it is one of the
    interpreter's own (the standard library, site-packages) or unknown."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return None
    root = Path(file).resolve().parent
    depth = module_name.count(".")
    if Path(file).name == "__init__.py":
        depth += 1
    for _ in range(depth):
        root = root.parent
    text = str(root)
    own = {str(Path(p).resolve()) for p in sysconfig.get_paths().values()}
    return None if text in own else text


def _describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return f"{name!r}" if name else repr(fn)
