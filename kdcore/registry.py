"""One generic registry: names to members (methods, divergences, tasks, backends).

A registry is a read-only mapping that knows the package its members live in and imports every module of it on
first use, so a member is found by being defined, without a hand-kept import list. Registering a name twice is an
error, and so is looking up a name nobody registered (`lookup`: the message lists the valid ones).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from kdcore.errors import HarnessError, unknown_choice

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Members of one kind, by name; `package` (dotted) is imported module by module before the first read."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind, self.package = kind, package
        self._members: dict[str, T] = {}
        self._discovered = package is None

    def add(self, name: str, member: T) -> T:
        """Register `member` as `name`; a HarnessError if the name is taken by another member."""
        if name in self._members and self._members[name] is not member:
            raise HarnessError(f"{self.kind} {name!r} is registered twice")
        self._members[name] = member
        return member

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda member: self.add(name, member)

    def lookup(self, name: str) -> T:
        """The member registered as `name`; a one-line HarnessError naming the valid choices otherwise."""
        if name not in self:
            raise unknown_choice(self.kind, name, self.names())
        return self[name]

    def names(self) -> list[str]:
        return sorted(self._discover())

    def _discover(self) -> dict[str, T]:
        if not self._discovered:
            self._discovered = True
            package = importlib.import_module(self.package)  # type: ignore[arg-type]
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        return self._members

    def __getitem__(self, name: str) -> T:
        return self._discover()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._discover())
