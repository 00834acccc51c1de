"""The metadata database: engine set-up, migrations on start, and transactions.

SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` for writes, so that concurrent writers queue on
the busy timeout instead of failing on a lock upgrade. PostgreSQL needs no special treatment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from modelyard.errors import ConfigError, Conflict, StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE_LOCK = 0x6D79_6D67  # the advisory lock key of migrations ("mymg")
_AFTER_COMMIT = "modelyard.after_commit"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below emit BEGIN, instead of pysqlite's implicit one.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get("modelyard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """Owns the engine; hands out read and write transactions as ORM sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = sa.make_url(url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"database url {url!r} does not parse: {exc}") from exc
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                parsed, connect_args={"check_same_thread": False, "timeout": 10}
            )
            _configure_sqlite(self.engine)
        else:
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            try:
                self.engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=10)
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    f"{parsed.drivername} needs its driver: pip install 'modelyard[postgres]'"
                ) from exc
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = sessionmaker(
            self.engine.execution_options(modelyard_write=True), expire_on_commit=False
        )
        self._migrate_lock = threading.Lock()
        self.fence: Callable[[Session], None] | None = None
        """Run first in every fenced write transaction; raises to refuse the write. The lease
        holder's check that it still holds the lease (`modelyard.lease.LeaseTable.fence`)."""

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; run at every start)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        # Processes that start on a fresh database at once (replicas of a Deployment, a CLI
        # beside `modelyard up`) take turns: the second waits for the first's transaction, then
        # finds the schema at head. PostgreSQL: an advisory lock held until commit; SQLite: a
        # write transaction from the start (BEGIN IMMEDIATE).
        writer = self.engine.execution_options(modelyard_write=True)
        with self._migrate_lock, self._translate("migrating"), writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._translate("reading"), self._reader() as session, session.begin():
            yield session

    @contextmanager
    def write(self, *, fenced: bool = True) -> Iterator[Session]:
        """One transaction; callbacks added with :func:`after_commit` run once it committed.
        ``fenced``: the :attr:`fence` runs first (off only for the lease's own writes)."""
        with self._translate("writing"):
            with self._writer() as session:
                with session.begin():
                    fence = self.fence
                    if fenced and fence is not None:
                        fence(session)
                    yield session
                callbacks: list[Callable[[], None]] = session.info.pop(_AFTER_COMMIT, [])
            for callback in callbacks:
                callback()

    @contextmanager
    def _translate(self, doing: str) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            raise StoreError(
                f"database {self.engine.url.render_as_string(hide_password=True)} failed while "
                f"{doing}: {exc.orig}. Check that it is running and reachable."
            ) from exc
        except sa.exc.IntegrityError as exc:
            raise Conflict(
                f"a concurrent change conflicted with this one while {doing}: retry it"
            ) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database error while {doing}: {exc}") from exc

    def dispose(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the write transaction of ``session`` committed (never on rollback)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)
