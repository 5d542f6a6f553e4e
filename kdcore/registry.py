"""One generic registry: names to members (methods, divergences, weightings, tasks, backends, data sources).

A registry knows the package its members live in and imports every module of it on the first lookup, so a member
is found by being defined, without a hand-kept import list. Registering a name twice is an error, and so is
asking for a name nobody registered (the message lists the valid ones).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kdcore.errors import HarnessError, unknown_choice

T = TypeVar("T")


class Registry(Generic[T]):
    """Members of one kind, by name; `package` (dotted) is imported module by module before the first lookup."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind, self.package = kind, package
        self._members: dict[str, T] = {}
        self._discovered = package is None

    def add(self, name: str, member: T) -> T:
        """Register `member` as `name`; a HarnessError if the name is taken."""
        if name in self._members and self._members[name] is not member:
            raise HarnessError(f"{self.kind} {name!r} is registered twice")
        self._members[name] = member
        return member

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""
        return lambda member: self.add(name, member)

    def get(self, name: str) -> T:
        """The member registered as `name`; a one-line HarnessError naming the valid choices otherwise."""
        members = self.members()
        if name not in members:
            raise unknown_choice(self.kind, name, members)
        return members[name]

    def members(self) -> dict[str, T]:
        """Every member, by name, after importing each module of the package once."""
        if not self._discovered:
            self._discovered = True
            package = importlib.import_module(self.package)  # type: ignore[arg-type]
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")
        return dict(self._members)

    def names(self) -> list[str]:
        return sorted(self.members())

    def __contains__(self, name: object) -> bool:
        return name in self.members()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
