"""Reports of one project append their statistics: none waits for another (PostgreSQL), the
version counts every observing report, and a fold or a recomputation agrees with the readers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ordo_server.app.db import unit_of_work
from ordo_server.app.repositories.statistics import count_deltas, estimates_version
from ordo_server.app.schemas.report import ReportCreate
from ordo_server.app.security import Role
from ordo_server.app.services import reports as report_service
from ordo_server.app.services.auth import Principal, authorize_project
from ordo_server.app.services.statistics import current_statistics, fold_now
from tests.conftest import (
    ProjectWithRuns,
    postgres_database,
    project_with_runs,
    require_postgres,
)

KEYS = ("math", "code", "poetry")


Setup = ProjectWithRuns


@pytest.fixture
def setup() -> Iterator[Setup]:
    with postgres_database(require_postgres()) as url, project_with_runs(url, KEYS) as made:
        yield made


def _body(stage: int, run: int) -> ReportCreate:
    values = [0.1 * stage + 0.01 * run + 0.05 * j for j in range(len(KEYS))]
    return ReportCreate.model_validate(
        {
            "evaluations": [
                {"task": k, "value": v, "entropy": 1.0 + v}
                for k, v in zip(KEYS, values, strict=True)
            ]
        }
    )


def _report(session: Session, setup: Setup, run_id: str, stage: int, run: int) -> Any:
    principal = Principal(key_id="test", role=Role.ADMIN, project_id=None)
    context = authorize_project(session, principal, setup.project_id, admin=False)
    return report_service.put_report(
        session, context, run_id, stage, _body(stage, run), lease_token=1, settings=setup.settings
    )


@pytest.mark.postgres
def test_open_reports_of_one_project_do_not_block_each_other(setup: Setup) -> None:
    for run, run_id in enumerate(setup.runs):
        with unit_of_work(setup.database.sessions) as session:
            _report(session, setup, run_id, 0, run)
    # Stage 1 of every run, each in its own open transaction at once: with a row every report
    # updates (the old estimates_version bump), the second would wait for the first.
    sessions = [setup.database.sessions() for _ in setup.runs]
    try:
        for run, (session, run_id) in enumerate(zip(sessions, setup.runs, strict=True)):
            session.execute(text("SET LOCAL lock_timeout = '200ms'"))
            answer = _report(session, setup, run_id, 1, run)
            assert answer.observations > 0
        for session in sessions:
            session.commit()
    finally:
        for session in sessions:
            session.close()
    with unit_of_work(setup.database.sessions) as session:
        assert count_deltas(session, setup.project_id) == len(setup.runs)
        assert estimates_version(session, setup.project_id) == len(setup.runs)


@pytest.mark.postgres
def test_fold_and_recompute_agree_with_what_readers_saw(setup: Setup) -> None:
    for stage in range(len(setup.order) + 1):
        for run, run_id in enumerate(setup.runs):
            with unit_of_work(setup.database.sessions) as session:
                _report(session, setup, run_id, stage, run)
    observing = len(setup.runs) * len(setup.order)
    with unit_of_work(setup.database.read_sessions) as session:
        seen_cells, seen_levels = current_statistics(session, setup.project_id)
        assert estimates_version(session, setup.project_id) == observing
    with unit_of_work(setup.database.sessions) as session:
        assert fold_now(session, setup.project_id) == observing
    with unit_of_work(setup.database.sessions) as session:
        cells, levels = current_statistics(session, setup.project_id)
        assert count_deltas(session, setup.project_id) == 0
        assert estimates_version(session, setup.project_id) == observing
    assert sorted(cells, key=repr) == sorted(seen_cells, key=repr)  # equal, to the last bit
    assert sorted(levels, key=repr) == sorted(seen_levels, key=repr)
    with unit_of_work(setup.database.sessions) as session:
        result = report_service.recompute_statistics(session, setup.project_id)
    assert (result.changed_cells, result.estimates_version) == (0, observing + 1)
