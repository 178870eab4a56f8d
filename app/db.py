"""Engines, sessions and the schema check, for SQLite and PostgreSQL.

SQLite: WAL, a busy timeout, foreign keys on, ``synchronous`` from settings, and transactions
opened by us rather than by the driver: ``BEGIN IMMEDIATE`` for every transaction that may write
(a deferred transaction that reads and then writes fails with SQLITE_BUSY at once, ignoring the
busy timeout) and a plain ``BEGIN`` for read-only ones (reliability.md §1.7).

PostgreSQL (psycopg 3): READ COMMITTED, pre-ping, a bounded pool that fails fast, and
server-side statement and lock timeouts (reliability.md §1.6, §1.8).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ordo_server import migrations
from ordo_server.app.settings import Settings

VERSION_TABLE = "ordo_alembic_version"
UPGRADE_HINT = "run `ordo db upgrade`"
# PostgreSQL's SQLSTATE for "relation ... does not exist"; SQLite has no code of its own for it.
_UNDEFINED_TABLE_SQLSTATE = "42P01"
_SQLITE_NO_SUCH_TABLE = "no such table"
MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
READ_ONLY_OPTION = "ordo_read_only"


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def build_engine(settings: Settings) -> Engine:
    """Create (without connecting) the engine for ``settings.database_url``."""
    if is_sqlite(settings.database_url):
        return _sqlite_engine(settings)
    return _postgresql_engine(settings)


def _sqlite_engine(settings: Settings) -> Engine:
    engine = create_engine(
        settings.database_url,
        connect_args={
            "check_same_thread": False,
            "timeout": settings.sqlite_busy_timeout_ms / 1000,
        },
    )
    busy_timeout_ms = settings.sqlite_busy_timeout_ms
    synchronous = settings.sqlite_synchronous

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from the driver so that our BEGIN is the only one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgresql_engine(settings: Settings) -> Engine:
    options = (
        f"-c statement_timeout={settings.db_statement_timeout_ms} "
        f"-c lock_timeout={settings.db_lock_timeout_ms} "
        "-c idle_in_transaction_session_timeout=60000"
    )
    return create_engine(
        settings.database_url,
        isolation_level="READ COMMITTED",
        pool_pre_ping=True,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args={"connect_timeout": settings.db_connect_timeout_s, "options": options},
    )


@dataclass(frozen=True, slots=True)
class Database:
    """An engine with its session factories.

    ``sessions`` may write (``BEGIN IMMEDIATE`` on SQLite); ``read_sessions`` must not.
    ``statement_reads`` are for reads made of one statement (one statement sees one snapshot
    whatever the isolation level): on PostgreSQL no transaction at all (autocommit: no
    ``BEGIN`` and no ``COMMIT``, two round trips fewer), on SQLite the read sessions.
    """

    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    statement_reads: sessionmaker[Session]


def make_database(engine: Engine) -> Database:
    """Session factories over ``engine``."""
    read_sessions = sessionmaker(bind=_read_only(engine), expire_on_commit=False)
    statement_reads = read_sessions
    if engine.dialect.name == "postgresql":
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        statement_reads = sessionmaker(bind=autocommit, expire_on_commit=False)
    return Database(
        engine=engine,
        sessions=sessionmaker(bind=engine, expire_on_commit=False),
        read_sessions=read_sessions,
        statement_reads=statement_reads,
    )


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error (requests, scripts, jobs)."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def session_scope(database: Database) -> AbstractContextManager[Session]:
    """A writing unit of work for scripts and jobs."""
    return unit_of_work(database.sessions)


# --- migrations ----------------------------------------------------------------------------------


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic config for our migrations; works from a checkout and from an install."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url is not None:
        # ConfigParser treats % as interpolation; URLs may contain escaped characters.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """The head revision(s) of the migration scripts."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> tuple[str, ...]:
    """The revision(s) the database is at; empty when it was never migrated."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(context.get_current_heads())


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where the database schema stands relative to the migration scripts."""

    current: tuple[str, ...]
    head: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        """Whether the database is exactly at the head revision."""
        return set(self.current) == set(self.head)


def schema_status(engine: Engine) -> SchemaStatus:
    """Read the database's revision (one short read-only transaction)."""
    with _read_only(engine).connect() as connection:
        current = current_revisions(connection)
    return SchemaStatus(current=current, head=head_revisions())


def is_missing_table(error: DBAPIError) -> bool:
    """Whether ``error`` says a table is missing: the schema is not migrated (database is up)."""
    driver_error = error.orig
    if getattr(driver_error, "sqlstate", None) == _UNDEFINED_TABLE_SQLSTATE:  # psycopg
        return True
    return isinstance(driver_error, sqlite3.OperationalError) and str(driver_error).startswith(
        _SQLITE_NO_SUCH_TABLE
    )


def ping(engine: Engine) -> None:
    """Run ``SELECT 1``; raises the driver's error when the database is unreachable."""
    with _read_only(engine).connect() as connection:
        connection.execute(text("SELECT 1"))


def _read_only(engine: Engine) -> Engine:
    """Reads see one snapshot: a history assembled by several queries is consistent.

    PostgreSQL: ``REPEATABLE READ, READ ONLY`` (never a serialization failure for a reader).
    SQLite: a deferred ``BEGIN``, whose first read fixes the snapshot under WAL.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True, **{READ_ONLY_OPTION: True}
        )
    return engine.execution_options(**{READ_ONLY_OPTION: True})
