"""``Atom``: a shared value updated atomically, across trio tasks and OS threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Atom"]

T = TypeVar("T")


class Atom(Generic[T]):
    """A reference to a value that tasks and threads update atomically, as Clojure's
    atoms do: treat the value as immutable and replace it.

    - ``deref()``: the current value;
    - ``swap(f, *args)``: replace the value by ``f(value, *args)`` and return the new
      one. ``f`` runs without a lock; the result is installed only if the value is
      still the one ``f`` was given (compare-and-set, by identity), else ``f`` runs
      again on the newer value. So ``f`` must be a pure function: under contention it
      may run more than once;
    - ``reset(v)``: set the value to ``v`` (returns it);
    - ``compare_and_set(old, new)``: set ``new`` only if the value is ``old``
      (identity); says whether it did.

    Example::

        done = pk.Atom(0)
        def work(item):
            ...
            done.swap(lambda n: n + 1)          # safe from any thread or task
        pk.parallel_map(work, items, backend="thread")
        print(done.deref())
    """

    __slots__ = ("_lock", "_value")

    def __init__(self, value: T) -> None:
        self._value = value
        self._lock = threading.Lock()

    def deref(self) -> T:
        """The current value."""
        return self._value

    def swap(self, f: Callable[..., T], *args: Any) -> T:
        """Atomically replace the value by ``f(value, *args)``; return the new value.
        ``f`` may run more than once (see the class docstring)."""
        while True:
            old = self._value
            new = f(old, *args)
            with self._lock:
                if self._value is old:
                    self._value = new
                    return new

    def reset(self, value: T) -> T:
        """Set the value to ``value``, whatever it was; return it."""
        with self._lock:
            self._value = value
        return value

    def compare_and_set(self, old: T, new: T) -> bool:
        """Set the value to ``new`` if it is ``old`` (the same object); True if it did."""
        with self._lock:
            if self._value is old:
                self._value = new
                return True
            return False

    def __repr__(self) -> str:
        return f"Atom({self._value!r})"
