"""``Result``: a value or the exception that took its place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar, cast

__all__ = ["Result"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, repr=False)
class Result(Generic[T]):
    """The outcome of one call: ``ok`` and its ``value``, or not ``ok`` and the ``error``
    it raised (or a :class:`TimeoutError` standing for it).

    The concurrency helpers return errors as values, in the place of the item that
    failed, so that one failure never loses the other results. ``unwrap()`` turns a
    result back into a value, raising the original exception. Build one with
    ``Result(value)`` or ``Result(error=exc)``.

    Example::

        results = pk.parallel_map(fetch, urls)
        for url, r in zip(urls, results):
            print(url, r.value if r.ok else f"failed: {r.error!r}")
        values = [r.unwrap() for r in results]     # or: raise the first error
    """

    value: T | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            if not isinstance(self.error, BaseException):
                raise TypeError(f"a Result's error must be an exception, not {self.error!r}")
            if self.value is not None:
                raise ValueError("a Result holds a value or an error, not both")

    @property
    def ok(self) -> bool:
        """True when the call returned (``value``), False when it failed (``error``)."""
        return self.error is None

    def unwrap(self) -> T:
        """The value; for a failed result, raise its error (the original exception)."""
        if self.error is not None:
            raise self.error
        return cast(T, self.value)

    def unwrap_or(self, default: T) -> T:
        """The value, or ``default`` for a failed result."""
        return default if self.error is not None else cast(T, self.value)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Result(error={self.error!r})"
        return f"Result({self.value!r})"
