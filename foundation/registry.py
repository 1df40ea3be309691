"""Name -> constructor registries, shared by networks, losses, datasets, layouts and trainers.

A registry maps case-insensitive names (and aliases) to callables. Entries can be *lazy*: the
registry knows which module defines a name and imports it only when that name is first asked
for, so one broken optional dependency never breaks ``import models``.

Standard library only, so every package of the project may import it.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from foundation.errors import UserError, closest_match


class ArgumentsRejected(UserError, ValueError):
    """A constructor refused the argument values a user gave (still a ValueError for callers)."""


class UnknownNameError(UserError, KeyError):
    """A name that no registry entry matches."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


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
        self._alias_spelling = {k.lower(): k for k in (aliases or {})}
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
                self._alias_spelling[alias.lower()] = alias
            return obj

        return deco

    def names(self) -> list[str]:
        """Display names of every entry (registered or lazily known), sorted."""
        names = {disp for disp, _ in self._entries.values()}
        names.update(disp for disp, _ in self._lazy.values())
        return sorted(names, key=str.lower)

    def aliases(self, name: str) -> list[str]:
        """The aliases of the entry ``name``, spelt as registered, sorted."""
        key = self._key(name)
        return sorted((self._alias_spelling[a] for a, k in self._aliases.items() if k == key), key=str.lower)

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
            try:
                importlib.import_module(self._lazy[key][1])
            except ModuleNotFoundError as exc:
                if not exc.name or exc.name.split(".")[0] in ("models", "data", "losses", "core", "common_utils",
                                                              "foundation"):
                    raise  # a broken project module is a bug, not the user's doing
                raise UserError(f"{self.kind} '{name}' needs the Python package '{exc.name.split('.')[0]}', which "
                                f"is not installed; install the requirements (pip install -r requirements.txt)"
                                ) from None
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
        """Construct the entry ``name`` with ``kwargs``.

        Arguments the constructor does not take (or required ones missing) are a UserError, checked
        against its signature before it runs. A constructor that rejects the *values* given
        (ValueError, AssertionError or TypeError raised while building with user arguments) is a
        UserError naming them; without user arguments such an exception is a bug and propagates.
        """
        ctor = self.get(name)
        try:
            signature = inspect.signature(ctor)
        except (TypeError, ValueError):  # no introspectable signature: let the call decide
            signature = None
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                raise UserError(f"cannot build {self.kind} '{name}': {exc}") from None
        try:
            return ctor(**kwargs)
        except (ValueError, AssertionError, TypeError) as exc:
            if not kwargs or isinstance(exc, UserError):
                raise
            shown = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
            reason = str(exc) or type(exc).__name__
            raise ArgumentsRejected(f"{self.kind} '{name}' rejects the arguments {shown}: {reason}") from None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
