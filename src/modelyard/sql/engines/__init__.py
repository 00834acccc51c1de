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

from modelyard.plugins import Family
from modelyard.sql.connections import Target
from modelyard.sql.engines.base import Batches, Engine, Session

__all__ = ["ENGINES", "Batches", "Engine", "Session", "choose_engine", "load_engine"]

ENGINES: Family[Engine] = Family(
    "SQL engine",
    "modelyard.sql_engines",
    Engine,
    {
        "adbc": "modelyard.sql.engines.postgres_adbc:AdbcPostgres",
        "psycopg": "modelyard.sql.engines.postgres_cursor:CursorPostgres",
        "sqlalchemy": "modelyard.sql.engines.generic:SqlAlchemyEngine",
        "sqlite": "modelyard.sql.engines.sqlite:SqliteEngine",
    },
)


def load_engine(name: str) -> Engine:
    """An engine: a built-in, an entry point, or ``package.module:ClassName``."""
    return ENGINES.load(name)()


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
