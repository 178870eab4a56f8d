"""SQLite runs with WAL, a busy timeout, foreign keys, FULL sync and BEGIN IMMEDIATE writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from ordo_server.app.db import build_engine, make_database
from ordo_server.app.settings import Settings
from tests.conftest import migrated_sqlite_url


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "pragma.sqlite"
    migrated_sqlite_url(path)
    return path


def test_pragmas_read_back_live(sqlite_file: Path) -> None:
    engine = build_engine(Settings(database_url=f"sqlite:///{sqlite_file}"))
    try:
        with engine.connect() as connection:

            def pragma(name: str) -> object:
                return connection.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == 30000
            assert pragma("foreign_keys") == 1
            assert pragma("synchronous") == 2  # FULL
    finally:
        engine.dispose()


def test_synchronous_normal_is_opt_in(sqlite_file: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{sqlite_file}", sqlite_synchronous="NORMAL")
    engine = build_engine(settings)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    finally:
        engine.dispose()


def _other_writer_blocked(path: Path) -> bool:
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        other.close()


def test_write_sessions_begin_immediate_and_read_sessions_do_not(sqlite_file: Path) -> None:
    database = make_database(build_engine(Settings(database_url=f"sqlite:///{sqlite_file}")))
    try:
        with database.sessions() as session:
            session.execute(text("SELECT 1"))  # a read only, yet the write lock is held
            assert _other_writer_blocked(sqlite_file)
        with database.read_sessions() as session:
            session.execute(text("SELECT count(*) FROM ordo_projects"))
            assert not _other_writer_blocked(sqlite_file)
    finally:
        database.engine.dispose()


def test_foreign_keys_are_enforced(sqlite_file: Path) -> None:
    database = make_database(build_engine(Settings(database_url=f"sqlite:///{sqlite_file}")))
    try:
        with database.sessions() as session, pytest.raises(Exception, match="FOREIGN KEY"):
            session.execute(
                text(
                    "INSERT INTO ordo_api_keys (id, project_id, key_id, secret_hash, prefix, role,"
                    " name, created_at) VALUES ('k', 'missing', 'k', 'h', 'p', 'admin', '', "
                    "'2026-01-01')"
                )
            )
    finally:
        database.engine.dispose()
