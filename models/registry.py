"""Name -> constructor registries, shared by networks, losses, datasets and trainers.

A registry maps case-insensitive names (and aliases) to callables. Entries can be *lazy*: the
registry knows which module defines a name and imports it only when that name is first asked
for, so one broken optional dependency never breaks ``import models``.

This module depends on nothing but the standard library, so every room of the project may
import it.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable


class UserError(Exception):
    """An error the user caused (bad name, bad file, bad config value).

    Entry points print its message as one line, without a traceback.
    """


class UnknownNameError(UserError, KeyError):
    """A name that no registry entry matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate closest to ``name`` (case-insensitive), or None."""
    cands = list(candidates)
    lowered = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hits[0]] if hits else None


class Registry:
    """A case-insensitive registry of named constructors for one kind of object.

    Args:
        kind: what is registered ("network", "loss", ...), used in error messages.
        lazy: display name -> module path that registers it when imported.
        aliases: alternative name -> display name.
    """

    def __init__(self, kind: str, lazy: dict[str, str] | None = None,
                 aliases: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._lazy = {k.lower(): (k, v) for k, v in (lazy or {}).items()}
        self._aliases = {k.lower(): v.lower() for k, v in (aliases or {}).items()}
        self._entries: dict[str, tuple[str, Callable[..., Any]]] = {}

    def register(self, name: str | None = None, aliases: Iterable[str] = ()) -> Callable:
        """Decorator registering a class or function under ``name`` (default: its __name__)."""

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            display = name or obj.__name__
            key = display.lower()
            if key in self._entries and self._entries[key][1] is not obj:
                raise ValueError(f"{self.kind} '{display}' is registered twice")
            self._entries[key] = (display, obj)
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        return deco

    def names(self) -> list[str]:
        """Display names of every entry (registered or lazily known), sorted."""
        names = {disp for disp, _ in self._entries.values()}
        names.update(disp for disp, _ in self._lazy.values())
        return sorted(names, key=str.lower)

    def _key(self, name: str) -> str:
        key = str(name).lower()
        return self._aliases.get(key, key)

    def __contains__(self, name: str) -> bool:
        key = self._key(name)
        return key in self._entries or key in self._lazy

    def get(self, name: str) -> Callable[..., Any]:
        """Return the constructor registered as ``name``; raise UnknownNameError otherwise."""
        key = self._key(name)
        if key not in self._entries and key in self._lazy:
            importlib.import_module(self._lazy[key][1])
        if key not in self._entries:
            valid = self.names() + sorted(self._aliases)
            hint = closest_match(str(name), valid)
            msg = f"unknown {self.kind} '{name}'"
            if hint:
                msg += f" (did you mean '{hint}'?)"
            msg += f"; valid {self.kind}s: {', '.join(self.names())}"
            raise UnknownNameError(msg)
        return self._entries[key][1]

    def canonical_name(self, name: str) -> str:
        """The display name of the entry ``name`` refers to."""
        self.get(name)
        return self._entries[self._key(name)][0]

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Construct the entry ``name`` with ``kwargs``; a wrong argument is a UserError."""
        ctor = self.get(name)
        try:
            return ctor(**kwargs)
        except TypeError as exc:
            if "argument" in str(exc):
                raise UserError(f"cannot build {self.kind} '{name}': {exc}") from exc
            raise
