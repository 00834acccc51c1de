"""Engines: how an import reads one kind of database into Arrow batches.

Built-ins are ``adbc`` and ``psycopg`` (PostgreSQL, Redshift), ``sqlite`` and ``sqlalchemy``
(any other SQLAlchemy URL); a package adds its own with an entry point in the
``modelyard.sql_engines`` group, and any ``package.module:ClassName`` works too. Each engine
imports its driver inside ``open``, so choosing one costs nothing.

The choice is automatic and overridable (the connection's ``engine``, then the source's): for
PostgreSQL the Arrow-native ADBC driver where installed, else psycopg's server-side cursor;
Redshift through psycopg; ``sqlite://`` through the standard library; anything else through
SQLAlchemy.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from modelyard.errors import InvalidInput
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session

__all__ = ["Batches", "Engine", "Session", "choose_engine", "engine_names", "load_engine"]

ENTRY_POINT_GROUP = "modelyard.sql_engines"
_BUILTINS = {
    "adbc": "modelyard.sql.engines.postgres_adbc:AdbcPostgres",
    "psycopg": "modelyard.sql.engines.postgres_cursor:CursorPostgres",
    "sqlalchemy": "modelyard.sql.engines.generic:SqlAlchemyEngine",
    "sqlite": "modelyard.sql.engines.sqlite:SqliteEngine",
}


def load_engine(name: str) -> Engine:
    """An engine: a built-in, an entry point, or ``package.module:ClassName``."""
    target = _BUILTINS.get(name)
    if target is None:
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == name:
                target = entry.value
                break
    if target is None and ":" in name:
        target = name
    if target is None:
        raise InvalidInput(
            f"unknown SQL engine {name!r}: use one of {', '.join(engine_names())}, "
            "or 'package.module:ClassName'"
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(
            f"SQL engine {name!r} cannot be loaded from {target!r} ({exc}): "
            "check the module is installed and the class name is right"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Engine)):
        raise InvalidInput(
            f"SQL engine {name!r} ({target}) is not a subclass of modelyard.sql.engines.Engine"
        )
    engine: Engine = cls()
    return engine


def engine_names() -> list[str]:
    """Built-in engine names, then those that installed packages add, sorted."""
    added = sorted({e.name for e in entry_points(group=ENTRY_POINT_GROUP)} - set(_BUILTINS))
    return [*sorted(_BUILTINS), *added]


def choose_engine(target: Target, override: str | None = None) -> Engine:
    """The engine ``override`` names, else the connection's, else the best one installed."""
    name = override or target.connection.engine
    if name is not None:
        return load_engine(name)
    scheme = target.scheme
    if scheme in ("postgresql", "postgres"):
        adbc = load_engine("adbc")
        return adbc if adbc.available() else load_engine("psycopg")
    if scheme == "redshift":
        return load_engine("psycopg")
    if scheme == "sqlite":
        return load_engine("sqlite")
    return load_engine("sqlalchemy")
