"""Loading a worker's ``TARGET`` and ``INIT`` (``module:function``, ``file.py``,
``file.py:function``) and checking that their signatures fit how they will be called."""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any


class TargetError(Exception):
    """``TARGET`` or ``INIT`` cannot be loaded or has no usable shape (exit code 2)."""


class StreamShape(enum.StrEnum):
    """How stream mode calls its target (see :func:`stream_shape`)."""

    PORT = "port"
    """``def main(port)``: a :class:`~pipekit.adapters.thread.ThreadPort`."""
    GENERATOR = "generator"
    """``def main(messages)``, a generator function: what it yields is sent."""
    PLAIN = "plain"
    """``def main()``: uses the functions of :mod:`pipekit.child`."""
    ASYNC = "async"
    """``async def main(pipe)`` or ``async def main(inp, out)``: the framed pipe."""


_file_modules: dict[Path, ModuleType] = {}


def _split_target(spec: str, default: str) -> tuple[str, str]:
    if spec.endswith(".py"):
        return spec, default
    where, colon, name = spec.rpartition(":")
    if not colon:
        return spec, default
    if not where or not name:
        raise TargetError(f"bad target {spec!r} (expected module:function or file.py[:function])")
    return where, name


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise TargetError(f"no such file: {path}")
    resolved = path.resolve()
    module = _file_modules.get(resolved)
    if module is not None:  # TARGET and INIT in the same file share one module
        return module
    stem = "".join(c if c.isalnum() else "_" for c in resolved.stem)
    name = f"pipekit_worker_{stem}_{len(_file_modules)}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    directory = str(resolved.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    sys.modules[name] = module
    _file_modules[resolved] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name], _file_modules[resolved]
        raise
    return module


def _import_module(name: str) -> ModuleType:
    if not all(part.isidentifier() for part in name.split(".")):
        raise TargetError(f"bad target {name!r} (expected module:function or file.py[:function])")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            raise TargetError(f"no module named {missing!r}") from None
        raise  # the target itself imports something missing: a real import failure


def load_target(spec: str, *, default: str = "main") -> Callable[..., Any]:
    """The callable named by ``spec`` (``package.module:function``, ``file.py`` meaning
    its ``default``, or ``file.py:function``; the name may be dotted).

    A file is imported under a private module name with its directory first on
    ``sys.path``, where it stays (as for ``python file.py``); ``TARGET`` and ``INIT`` in
    one file share one module. Raises :class:`TargetError` for a missing file, module or
    attribute, or a value that is not callable; an exception raised while importing the
    target's code propagates.
    """
    where, name = _split_target(spec, default)
    module = _load_file(Path(where)) if where.endswith(".py") else _import_module(where)
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{where} has no attribute {name!r}") from None
    if not callable(obj):
        raise TargetError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _required_positional(fn: Callable[..., Any], spec: str) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError) as exc:
        raise TargetError(f"cannot inspect the signature of {spec}: {exc}") from None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def stream_shape(fn: Callable[..., Any], spec: str = "target") -> tuple[StreamShape, int]:
    """How stream mode calls ``fn``: ``(shape, number of positional arguments)``.

    ``async def f(pipe)`` / ``async def f(inp, out)`` -> ``("async", 1 | 2)``; a
    generator function of one parameter -> ``("generator", 1)``; a function of one
    required positional parameter -> ``("port", 1)``, of none -> ``("plain", 0)``.
    Anything else raises :class:`TargetError`."""
    if inspect.isasyncgenfunction(fn):
        raise TargetError(f"{spec} is an async generator; use async def main(pipe) instead")
    n = _required_positional(fn, spec)
    if inspect.iscoroutinefunction(fn):
        if n in (1, 2):
            return StreamShape.ASYNC, n
        raise TargetError(
            f"{spec}: an async worker takes (pipe) or (inp, out), not {n} argument(s)"
        )
    if inspect.isgeneratorfunction(fn):
        if n == 1:
            return StreamShape.GENERATOR, 1
        raise TargetError(f"{spec}: a generator worker takes one argument (the messages)")
    if n == 1:
        return StreamShape.PORT, 1
    if n == 0:
        return StreamShape.PLAIN, 0
    raise TargetError(f"{spec}: a stream worker takes (port), (messages) or no argument, not {n}")


def check_callable_with(fn: Callable[..., Any], nargs: int, spec: str, what: str) -> None:
    """Raise :class:`TargetError` (``"{spec}: {what}"``) if ``fn`` cannot be called with
    ``nargs`` positional arguments (a callable without a signature passes)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: find out when calling
    try:
        signature.bind(*([None] * nargs))
    except TypeError:
        raise TargetError(f"{spec}: {what}") from None
