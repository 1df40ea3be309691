"""Name -> constructor registries, shared by networks, losses, datasets, layouts and trainers.

A registry maps case-insensitive names (and aliases) to callables. A registry made with
``package=`` finds its entries itself: it reads (``ast``, nothing imported) the modules of that
package for ``@<variable>.register("Name", aliases=(...))`` decorators and imports a module only
when one of its names is first asked for. The decorator is thus the one place a name is written,
and one broken optional dependency never breaks ``import models``.

Standard library only, so every package of the project may import it.
"""
from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
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
        package: package whose top-level modules are scanned for this registry's decorators
            (None: only what is registered at run time).
        variable: the name the registry is bound to in those modules (``NETWORKS``), required
            with ``package``.
    """

    def __init__(self, kind: str, package: str | None = None, variable: str | None = None) -> None:
        if (package is None) != (variable is None):
            raise ValueError("Registry: package and variable go together")
        self.kind = kind
        self._package, self._variable = package, variable
        self._scanned: dict[str, tuple[str, str]] | None = None  # key -> (display name, module)
        self._aliases: dict[str, str] = {}
        self._alias_spelling: dict[str, str] = {}  # alias key -> as written
        self._entries: dict[str, tuple[str, Callable[..., Any]]] = {}

    def _known(self) -> dict[str, tuple[str, str]]:
        """Names found in the package's source (scanned once, on first use)."""
        if self._scanned is None:
            self._scanned = {}
            if self._package is not None:
                for display, module, aliases in scan_registrations(self._package, self._variable):
                    key = display.lower()
                    if key in self._scanned:
                        raise ValueError(f"{self.kind} '{display}' is registered twice ({self._scanned[key][1]} "
                                         f"and {module})")
                    self._scanned[key] = (display, module)
                    for alias in aliases:
                        self._aliases.setdefault(alias.lower(), key)
                        self._alias_spelling.setdefault(alias.lower(), alias)
        return self._scanned

    def modules(self) -> list[str]:
        """The modules of the package that register entries here (found by the scan)."""
        return sorted({module for _, module in self._known().values()})

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

    def unregister(self, name: str) -> None:
        """Remove an entry registered at run time, and its aliases (plugins and tests that must not
        leak an entry into later users of the registry); names found by the source scan stay."""
        key = self._key(name)
        if key not in self._entries:
            raise KeyError(f"{self.kind} '{name}' was not registered at run time")
        del self._entries[key]
        if key in self._known():  # the scan still knows the name: its aliases stay valid
            return
        for alias in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[alias]
            self._alias_spelling.pop(alias, None)

    def names(self) -> list[str]:
        """Display names of every entry (registered or lazily known), sorted."""
        names = {disp for disp, _ in self._entries.values()}
        names.update(disp for disp, _ in self._known().values())
        return sorted(names, key=str.lower)

    def aliases(self, name: str) -> list[str]:
        """The aliases of the entry ``name``, spelt as registered, sorted."""
        key = self._key(name)
        return sorted((self._alias_spelling[a] for a, k in self._aliases.items() if k == key), key=str.lower)

    def _key(self, name: str) -> str:
        self._known()  # the scan also fills the aliases
        key = str(name).lower()
        return self._aliases.get(key, key)

    def __contains__(self, name: str) -> bool:
        key = self._key(name)
        return key in self._entries or key in self._known()

    def get(self, name: str) -> Callable[..., Any]:
        """Return the constructor registered as ``name``; raise UnknownNameError otherwise."""
        key = self._key(name)
        if key not in self._entries and key in self._known():
            try:
                importlib.import_module(self._known()[key][1])
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


def scan_registrations(package: str, variable: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """``(name, module, aliases)`` of every ``@<variable>.register(...)`` decorator in ``package``.

    Reads the source of the package's top-level modules without importing them. Names and
    aliases must be string literals (or absent: the decorated object's own name), so that the
    registry knows them before any import; anything else is a bug, reported with its line.
    """
    pkg = importlib.import_module(package)
    found = []
    needle = f"{variable}.register"
    for directory in getattr(pkg, "__path__", ()):
        for path in sorted(Path(directory).glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if needle not in text:
                continue
            module = package if path.stem == "__init__" else f"{package}.{path.stem}"
            for node in ast.walk(ast.parse(text, filename=str(path))):
                if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                            and dec.func.attr == "register" and isinstance(dec.func.value, ast.Name)
                            and dec.func.value.id == variable):
                        name, aliases = _literal_registration(dec, node.name, f"{path}:{dec.lineno}")
                        found.append((name, module, aliases))
    return found


def _literal_registration(call: ast.Call, default: str, where: str) -> tuple[str, tuple[str, ...]]:
    """The name and aliases written in one ``register(...)`` call (literals only)."""
    try:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    except ValueError:
        args, kwargs = [None], {}
    name = args[0] if args else kwargs.get("name", default)
    aliases = kwargs.get("aliases", args[1] if len(args) > 1 else ())
    if (not isinstance(name, str) or isinstance(aliases, str) or not isinstance(aliases, (tuple, list))
            or not all(isinstance(a, str) for a in aliases) or set(kwargs) - {"name", "aliases"}):
        raise ValueError(f"{where}: register() needs literal string names and aliases, so that the registry "
                         "finds them without importing the module")
    return name, tuple(aliases)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
