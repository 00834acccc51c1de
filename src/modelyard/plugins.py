"""The one loader of plug-ins: runtimes, SQL engines, realtime stores, orchestrators.

A plug-in family has built-in names, takes more from an entry-point group that installed
packages fill, and accepts any ``package.module:Name`` (the shape of uvicorn's ``importer``).
Modules are imported only when a plug-in is chosen, so naming a family costs nothing. Every
failure is one error of the given class whose message lists the valid names and says how to fix
it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, cast

from modelyard.errors import InvalidInput, ModelyardError

T = TypeVar("T")


def import_target(
    target: str, what: str, error: type[ModelyardError] = InvalidInput, hint: str = ""
) -> Any:
    """The object that ``module:name`` names; ``error`` saying what went wrong otherwise
    (``what`` names it in the message: "runtime 'x'", "the predicate")."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise error(f"invalid {what} {target!r}: write package.module:name")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise error(
            f"{what} cannot be loaded from {target!r} ({exc}): "
            f"{hint or 'check the module is installed and the class name is right'}"
        ) from exc


class Family(Generic[T]):
    """One family of plug-ins: classes deriving from ``base`` (``object`` for a family typed by a
    Protocol), found by name. ``base`` is a plain ``type`` because a family's base is often
    abstract; annotate the family's variable with its type."""

    def __init__(
        self,
        what: str,
        group: str,
        base: type,
        builtins: Mapping[str, str],
        *,
        error: type[ModelyardError] = InvalidInput,
    ) -> None:
        self.what = what
        self.group = group
        self.base = base
        self.builtins = dict(builtins)
        self.error = error

    def names(self) -> list[str]:
        """Built-in names, then those installed packages add, sorted."""
        added = {entry.name for entry in entry_points(group=self.group)} - set(self.builtins)
        return [*sorted(self.builtins), *sorted(added)]

    def target(self, name: str) -> str | None:
        """The ``module:Class`` a name stands for; None for an unknown name."""
        found = self.builtins.get(name)
        if found is None:
            found = next((e.value for e in entry_points(group=self.group) if e.name == name), None)
        if found is None and ":" in name:
            found = name
        return found

    def load(self, name: str) -> type[T]:
        """The class ``name`` stands for: a built-in, an entry point or ``package.module:Class``."""
        target = self.target(name)
        if target is None:
            raise self.error(
                f"unknown {self.what} {name!r}: use one of {', '.join(self.names())}, "
                "or 'package.module:ClassName'"
            )
        cls = import_target(target, f"{self.what} {name!r}", self.error)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            base = f"{self.base.__module__}.{self.base.__qualname__}"
            raise self.error(f"{self.what} {name!r} ({target}) is not a subclass of {base}")
        return cast("type[T]", cls)

    def from_settings(self, name: str, settings: object, protocol: str) -> Any:
        """An instance of the class ``name`` stands for, built by its ``from_settings(settings)``
        classmethod (the shape of orchestrators and step backends); ``protocol`` names the
        interface it implements, for the message when it has no such classmethod."""
        cls = self.load(name)
        build = getattr(cls, "from_settings", None)
        if not callable(build):
            raise self.error(
                f"{self.what} {name!r} ({self.target(name)}) has no from_settings(settings) "
                f"classmethod: a plug-in of this kind implements {protocol}"
            )
        return build(settings)
