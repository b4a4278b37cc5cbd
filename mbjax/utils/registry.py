"""A name -> object registry with clear errors: the one used for planners, models and agents.

>>> PLANNERS = Registry("planner")
>>> PLANNERS.register("cem", CEMConfig)
>>> PLANNERS.get("cme")  # KeyError: unknown planner 'cme'. Did you mean 'cem'? Registered: ...

Registering a name twice is an error (``replace=True`` swaps an entry on purpose, e.g. a
test that re-registers its own class); an unknown name lists the registered ones with a
did-you-mean.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def unknown_name_message(what: str, name: str, valid: list[str]) -> str:
    """``unknown <what> 'name'. Did you mean ...? Registered: a, b, c``."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Registered: {', '.join(valid) or '(none)'}"


class Registry(Generic[T]):
    """Names of one kind of thing (``what``: "planner", "model", "agent") -> objects."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, replace: bool = False) -> T:
        """Adds ``entry`` under ``name``; a taken name is an error unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered "
                             f"({self._entries[name]!r}); pick another name")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Removes ``name`` (tests that register temporary entries clean up with it)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry ``name``; an unknown name raises ``KeyError`` listing the valid ones."""
        if name not in self._entries:
            raise KeyError(unknown_name_message(self.what, name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
