"""Data from the warehouse: SQL queries snapshotted into dataset versions.

- :mod:`~modelyard.sql.connections`: named connections in the settings, passwords from the
  environment or a mounted file, never stored;
- :mod:`~modelyard.sql.engines`: how each database is read into Arrow (ADBC, psycopg, SQLite,
  SQLAlchemy), in one read-only, repeatable-read transaction;
- :mod:`~modelyard.sql.snapshot`: an import, streamed into Parquet parts and committed through the
  registry's protocol; :mod:`~modelyard.sql.parts` and :mod:`~modelyard.sql.digest` write and
  digest the parts;
- :mod:`~modelyard.sql.incremental`: incremental imports, over half-open watermark windows
  (:mod:`~modelyard.sql.windows`: which windows are due, as pure logic), checked for late rows;
- :mod:`~modelyard.sql.task`: ``sql_import``, the pipeline task.

``client.import_sql(...)``, ``modelyard datasets import-sql`` and ``sql_import(...)`` all run
:func:`modelyard.sql.snapshot.import_sql`. Importing this package loads neither pyarrow nor a
driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Connection", "ImportResult", "Incremental", "SqlSource", "sql_import"]

if TYPE_CHECKING:
    from modelyard.sql.connections import Connection
    from modelyard.sql.source import ImportResult, Incremental, SqlSource
    from modelyard.sql.task import sql_import

_LAZY = {
    "Connection": "modelyard.sql.connections",
    "ImportResult": "modelyard.sql.source",
    "Incremental": "modelyard.sql.source",
    "SqlSource": "modelyard.sql.source",
    "sql_import": "modelyard.sql.task",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard.sql' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
