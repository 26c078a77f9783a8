"""One small registry for everything the config names: models, gates and datasets.

Each family keeps one :class:`Registry`; entries register themselves where they are defined
(a decorator, as in timm), and every lookup, listing, "did you mean" hint and option check goes
through here, so that the messages a user sees are the same for a model, a gate or a dataset.
"""
from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Any, Callable, Dict, Generic, Iterable, List, Mapping, Optional, TypeVar

T = TypeVar("T")


def keyword_options(entry: Any) -> Dict[str, Any]:
    """The options of a factory or class: its parameters that have a default, with the default
    (positional sizes such as a gate's channel counts are not options)."""
    if entry is None:
        return {}
    parameters = inspect.signature(entry).parameters.items()
    return {name: p.default for name, p in parameters if p.default is not inspect.Parameter.empty}


class Registry(Generic[T]):
    """Named entries of one ``kind`` ("model", "gate", "dataset").

    ``options(entry)`` gives an entry's options and their defaults (by default the keyword
    parameters of a factory or class), which :meth:`check_options` holds a user's options against.
    """

    def __init__(self, kind: str, options: Callable[[T], Mapping[str, Any]] = keyword_options) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._options = options

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator: registers the decorated entry under ``name`` (default: its ``__name__``)."""

        def decorator(entry: T) -> T:
            self.add(name or entry.__name__, entry)
            return entry

        return decorator

    def add(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = entry

    def names(self, pattern: str = "*") -> List[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(name for name in self._entries if fnmatch.fnmatch(name, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a ValueError with the closest names."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown {self.kind} '{name}'{hint}; available: {', '.join(self.names())}")
        return self._entries[name]

    def options(self, name: str) -> Dict[str, Any]:
        """The options of ``name`` and their defaults."""
        return dict(self._options(self.get(name)))

    def check_options(self, name: str, given: Iterable[str]) -> None:
        """ValueError naming every option in ``given`` that ``name`` does not have, and its own."""
        own = self.options(name)
        unknown = sorted(set(given) - set(own))
        if unknown:
            valid = ", ".join(f"{key} (default {value!r})" for key, value in own.items()) or "none"
            raise ValueError(f"{self.kind} '{name}' has no option {', '.join(unknown)}; its options: {valid}")
