"""Migrations: one head; base -> head -> base -> head; no drift from models/ (both dialects)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from ordo_server.app.db import (
    VERSION_TABLE,
    alembic_config,
    build_engine,
    head_revisions,
    schema_status,
)
from ordo_server.app.schemas.estimate import MIN_STD
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.settings import Settings
from ordo_server.models import Base
from tests.conftest import postgres_database, require_postgres, sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "migrate.sqlite")
        return
    with postgres_database(require_postgres(), migrate=False) as url:
        yield url


def _insert_project(connection: Connection, project_id: str, settings: dict[str, Any]) -> None:
    """A project row as every revision since 0001 stores it (raw SQL: no model of the day)."""
    connection.execute(
        text(
            "INSERT INTO ordo_projects (id, name, description, created_at, estimates_version,"
            " settings) VALUES (:p, :p, '', :now, 0, :settings)"
        ),
        {"p": project_id, "now": datetime.now(UTC), "settings": json.dumps(settings)},
    )


def _insert_task(connection: Connection, task_id: str, project_id: str) -> None:
    """A task row (key ``t``, index 0) of ``project_id``, as every revision since 0001 stores it."""
    connection.execute(
        text(
            'INSERT INTO ordo_tasks (id, project_id, key, "index", name, kind, reward, goal,'
            " scale, weight, metadata, created_at, updated_at) VALUES (:t, :p, 't', 0, 't',"
            " 'structured', 'other', 'maximize', 1.0, 1.0, '{}', :now, :now)"
        ),
        {"t": task_id, "p": project_id, "now": datetime.now(UTC)},
    )


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def _tables(url: str) -> set[str]:
    engine = build_engine(Settings(database_url=url))
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def _drift(url: str) -> list[object]:
    engine = build_engine(Settings(database_url=url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_without_drift(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    command.upgrade(config, "head")
    assert _tables(empty_database_url) == {*Base.metadata.tables, VERSION_TABLE}
    assert _drift(empty_database_url) == []
    command.downgrade(config, "base")
    assert _tables(empty_database_url) == {VERSION_TABLE}
    command.upgrade(config, "head")
    assert _drift(empty_database_url) == []
    engine = build_engine(Settings(database_url=empty_database_url))
    try:
        assert schema_status(engine).current == head_revisions()
    finally:
        engine.dispose()


def test_tables_and_constraints_follow_the_naming_convention(empty_database_url: str) -> None:
    command.upgrade(alembic_config(empty_database_url), "head")
    engine = build_engine(Settings(database_url=empty_database_url))
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            for table in inspector.get_table_names():
                assert table.startswith("ordo_")
                for fk in inspector.get_foreign_keys(table):
                    assert fk["name"] is None or fk["name"].startswith(f"fk_{table}_")
                for unique in inspector.get_unique_constraints(table):
                    assert unique["name"] is None or unique["name"].startswith(f"uq_{table}_")
    finally:
        engine.dispose()


def test_downgrade_from_0007_folds_the_statistics_deltas(empty_database_url: str) -> None:
    """Deltas left at a downgrade end up in the statistics rows and the estimates version."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    engine = build_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    cells = [["F", "a", "b", 1, 0.5, 0.25], ["G", "b", "b", 1, 0.25, 0.0625]]
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO ordo_projects (id, name, description, created_at,"
                    " estimates_version, settings) VALUES ('p', 'p', '', :now, 3, '{}')"
                ),
                {"now": now},
            )
            for key in ("a", "b"):
                connection.execute(
                    text(
                        'INSERT INTO ordo_tasks (id, project_id, key, "index", name, kind,'
                        " reward, goal, scale, weight, metadata, created_at, updated_at)"
                        " VALUES (:k, 'p', :k, :i, :k, 'structured', 'other', 'maximize', 1.0,"
                        " 1.0, '{}', :now, :now)"
                    ),
                    {"k": key, "i": ord(key) - ord("a"), "now": now},
                )
            for _ in range(2):
                connection.execute(
                    text(
                        "INSERT INTO ordo_stat_deltas (project_id, cells, levels, created_at)"
                        " VALUES ('p', :cells, :levels, :now)"
                    ),
                    {
                        "cells": json.dumps(cells),
                        "levels": json.dumps([["b", 1, *range(9)]]),
                        "now": now,
                    },
                )
        command.downgrade(config, "0006")
        with engine.connect() as connection:
            stats = connection.execute(
                text("SELECT effect, count, sum_x, sum_x2 FROM ordo_estimates ORDER BY effect")
            ).all()
            level = connection.execute(
                text("SELECT count, sum_u, sum_y2 FROM ordo_level_stats WHERE task_id = 'b'")
            ).one()
            version = connection.execute(
                text("SELECT estimates_version FROM ordo_projects")
            ).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(row) for row in stats] == [("F", 2, 1.0, 0.5), ("G", 2, 0.5, 0.125)]
    assert tuple(level) == (2, 0.0, 16.0)
    assert version == 5


def test_upgrade_to_0008_raises_stored_stds_to_the_floor(empty_database_url: str) -> None:
    """Settings stored before the floor would fail validation on every request of their
    project, and a denormal prior variance every solve: 0008 raises them, and leaves the rest."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    engine = build_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    tiny = {"default_prior_std": 5e-324, "default_noise_std": 1e-7, "rho": 0.5}
    fine = {"default_prior_std": 0.2}
    try:
        with engine.begin() as connection:
            for project_id, settings in (("tiny", tiny), ("fine", fine)):
                _insert_project(connection, project_id, settings)
            _insert_task(connection, "t", "tiny")
            for effect, prior_var in (("L", 1e-320), ("G", 0.01)):
                connection.execute(
                    text(
                        "INSERT INTO ordo_estimates (project_id, effect, src_task_id,"
                        " dst_task_id, count, sum_x, sum_x2, prior_mean, prior_var,"
                        " prior_source, updated_at) VALUES ('tiny', :e, 't', 't', 0, 0.0, 0.0,"
                        " 0.5, :v, 'imported', :now)"
                    ),
                    {"e": effect, "v": prior_var, "now": now},
                )
        command.upgrade(config, "head")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, settings FROM ordo_projects")).all()
            variances = connection.execute(
                text("SELECT effect, prior_var FROM ordo_estimates ORDER BY effect")
            ).all()
    finally:
        engine.dispose()
    stored = {key: json.loads(value) if isinstance(value, str) else value for key, value in rows}
    assert stored["tiny"] == {
        "default_prior_std": MIN_STD,
        "default_noise_std": MIN_STD,
        "rho": 0.5,
    }
    assert stored["fine"] == fine
    ProjectSettings.model_validate(stored["tiny"])  # what every request of the project reads
    assert [tuple(row) for row in variances] == [("G", 0.01), ("L", MIN_STD**2)]


def test_upgrade_to_0010_gives_every_evaluation_its_reports_project(
    empty_database_url: str,
) -> None:
    """Evaluations stored before 0010 take their report's project; the downgrade drops it."""
    config = alembic_config(empty_database_url)
    command.upgrade(config, "0009")
    engine = build_engine(Settings(database_url=empty_database_url))
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            for project in ("p1", "p2"):
                _insert_project(connection, project, {})
                _insert_task(connection, f"task-{project}", project)
                connection.execute(
                    text(
                        "INSERT INTO ordo_runs (id, project_id, adaptive, strategy, status,"
                        " next_stage, lease_token, created_at, level_model) VALUES (:r, :p,"
                        " FALSE, 'exploit', 'active', 1, 1, :now, 'constant')"
                    ),
                    {"r": f"run-{project}", "p": project, "now": now},
                )
                connection.execute(
                    text(
                        "INSERT INTO ordo_stage_reports (id, project_id, run_id, stage,"
                        " body_hash, body, response, late, created_at) VALUES (:rep, :p, :r, 0,"
                        " 'h', '{}', '{}', FALSE, :now)"
                    ),
                    {"rep": f"report-{project}", "p": project, "r": f"run-{project}", "now": now},
                )
                connection.execute(
                    text(
                        "INSERT INTO ordo_stage_evaluations (report_id, task_id, value, utility)"
                        " VALUES (:rep, :t, 0.5, 0.5)"
                    ),
                    {"rep": f"report-{project}", "t": f"task-{project}"},
                )
        command.upgrade(config, "0010")
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT report_id, project_id FROM ordo_stage_evaluations ORDER BY report_id")
            ).all()
        assert [tuple(row) for row in rows] == [("report-p1", "p1"), ("report-p2", "p2")]
        assert _drift(empty_database_url) == []
        command.downgrade(config, "0009")
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("ordo_stage_evaluations")}
            count = connection.execute(text("SELECT count(*) FROM ordo_stage_evaluations")).scalar()
        assert "project_id" not in columns
        assert count == 2
    finally:
        engine.dispose()
