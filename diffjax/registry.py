"""Named implementations of one family (schedules, grids, solvers, discrete samplers).

One small helper for every place that looks something up by name, so every family answers
the same way: ``names()`` in registration order, ``get(name)`` or a ``ValueError`` that
names the argument and lists what is allowed.

    SOLVERS = Registry("solver")

    @SOLVERS.register("euler")
    class Euler: ...

    SOLVERS.get("euler"); SOLVERS.names(); "euler" in SOLVERS
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, Optional, TypeVar

__all__ = ["Registry"]


def __dir__():
    return sorted(__all__)


T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table; ``arg`` is the argument name used in error messages."""

    def __init__(self, arg: str):
        self.arg = arg
        self._items: Dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.arg} needs a non-empty string name, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.arg} {name!r} is already registered")
        self._items[name] = obj
        return obj

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` (default: the object's ``__name__``)."""
        def deco(obj: T) -> T:
            self.add(name or obj.__name__, obj)
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(f"{self.arg} must be one of {list(self._items)}, got {name!r}")
        return self._items[name]

    def names(self) -> tuple:
        return tuple(self._items)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
