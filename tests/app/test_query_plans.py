"""A trainer's requests and a worker's claims read the tables that grow with history by index.

A statement planned as a full scan costs nothing on a test's few rows and grows with every run
the database keeps: asking whether a run had a plan job pending read every row of
``ordo_jobs`` (2-3 ms of a report with 3,400 jobs), and a worker's claim walked the primary key
through every job that had ended (8 ms at 7,000 jobs). Each statement of a trainer's requests
(run creation, reports, ``GET .../next``, heartbeat, completion) is explained as the database
would run it with full scans made a last resort (PostgreSQL: ``enable_seqscan`` off, so a scan
remains only where no index serves; SQLite: its query plan names a ``SCAN`` of the table). The
jobs' questions are explained with thousands of ended jobs in the table, on PostgreSQL as the
generic plan that a prepared statement runs after its first few executions."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import Connection, event
from sqlalchemy.orm import Session

from ordo_server.app.db import Database
from ordo_server.app.main import create_app
from ordo_server.app.services import planning
from ordo_server.app.services.recommendations import load_history
from tests.conftest import worker_less_settings
from tests.factories import ProjectKeys, create_project_with_keys

TASKS = ("math", "code", "poetry")
GROWING = (
    "ordo_runs",
    "ordo_jobs",
    "ordo_schedules",
    "ordo_stage_reports",
    "ordo_stage_evaluations",
    "ordo_observations",
    "ordo_stat_deltas",
)
"""Tables with rows for every run or report the database keeps."""

Recorded = list[tuple[str, Any]]


@pytest.fixture
def tasked(session: Session) -> ProjectKeys:
    keys = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    return keys


@pytest.fixture
def recorded(connection: Connection) -> Iterator[Recorded]:
    """Every single statement the test's connection runs from now on, with its parameters."""
    statements: Recorded = []

    def record(*args: Any) -> None:
        _, _, statement, parameters, _, many = args
        if not many and re.match(r"\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\b", statement):
            statements.append((statement, parameters))

    event.listen(connection.engine, "before_cursor_execute", record)
    yield statements
    event.remove(connection.engine, "before_cursor_execute", record)


def _explain(
    connection: Connection, statement: str, parameters: Any, *, generic: bool = False
) -> str:
    """The plan of ``statement`` for ``parameters``: SQLite's query plan; PostgreSQL's plan, or
    with ``generic`` the generic plan a statement the driver prepared runs once its custom
    plans cost no less."""
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
        return "\n".join(str(row[-1]) for row in rows)
    if generic:
        return _generic_plan(connection, statement, parameters)
    rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
    return "\n".join(str(row[0]) for row in rows)


def _reads_all(plan: str, table: str) -> bool:
    """Whether ``plan`` reads every row of ``table`` (SQLite's scan of the open jobs' partial
    index reads the open jobs only)."""
    return bool(
        re.search(
            rf"Seq Scan on {table}\b|\bSCAN {table}\b(?! USING INDEX ix_ordo_jobs_open)", plan
        )
    )


def _scanned(connection: Connection, statement: str, parameters: Any) -> set[str]:
    """The growing tables ``statement`` reads in full in its plan."""
    plan = _explain(connection, statement, parameters)
    return {table for table in GROWING if _reads_all(plan, table)}


def _numbers(count: int) -> str:
    """A ``WITH`` clause of the integers ``i`` from 1 to ``count`` (table ``seq``)."""
    return f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {count})"


def _full_scans(connection: Connection, statements: Recorded) -> dict[str, set[str]]:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    found = {}
    for statement, parameters in statements:
        tables = _scanned(connection, statement, parameters)
        if tables:
            found[" ".join(statement.split())[:160]] = tables
    return found


def _trainer_requests(client: TestClient, project: ProjectKeys, *, adaptive: bool) -> None:
    runs = f"/v1/projects/{project.id}/runs"
    created = client.post(runs, json={"adaptive": adaptive}, headers=project.trainer)
    assert created.status_code == 201, created.text
    run = f"{runs}/{created.json()['id']}"
    holder = {**project.trainer, "Ordo-Lease-Token": "1"}
    stage: int | None = 0
    while stage is not None:
        body = {"evaluations": [{"task": key, "value": 0.5 + 0.01 * stage} for key in TASKS]}
        answer = client.put(f"{run}/reports/{stage}", json=body, headers=holder)
        assert answer.status_code == 200, answer.text
        assert client.post(f"{run}/heartbeat", headers=holder).status_code == 200
        following = client.get(f"{run}/next", headers=project.trainer)
        assert following.status_code == 200, following.text
        stage = None if following.json()["done"] else int(following.json()["stage"])
    assert client.post(f"{run}/complete", headers=holder).status_code == 200


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed", "adaptive"])
def test_a_trainers_requests_read_growing_tables_by_index(
    client: TestClient,
    tasked: ProjectKeys,
    connection: Connection,
    recorded: Recorded,
    adaptive: bool,
) -> None:
    _trainer_requests(client, tasked, adaptive=adaptive)
    assert len(recorded) > 10
    assert _full_scans(connection, list(recorded)) == {}


def test_a_full_scan_is_found(connection: Connection, tasked: ProjectKeys) -> None:
    """The check itself: a read by a column no index leads with is reported."""
    statement = "SELECT id FROM ordo_jobs WHERE outcome = {}".format(
        "?" if connection.dialect.name == "sqlite" else "%(outcome)s"
    )
    parameters: Sequence[Any] | Mapping[str, Any] = (
        ("planned",) if connection.dialect.name == "sqlite" else {"outcome": "planned"}
    )
    assert _full_scans(connection, [(statement, parameters)]) == {
        "SELECT id FROM ordo_jobs WHERE outcome = " + statement.rsplit(" ", 1)[-1]: {"ordo_jobs"}
    }


JOBS = 3000
"""Finished jobs of other runs in the table ..."""
JOBS_A_RUN = 4
"""... of so many jobs each (an adaptive run of ``n`` tasks leaves about ``n + 1``)."""


def _generic_plan(connection: Connection, statement: str, parameters: Mapping[str, Any]) -> str:
    """PostgreSQL's generic plan of ``statement`` for ``parameters``."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    prepared = re.sub(r"%\((\w+)\)s", number, statement)
    driver = connection.connection.dbapi_connection
    assert isinstance(driver, psycopg.Connection)
    literals = ", ".join(sql.Literal(parameters[name]).as_string(driver) for name in names)
    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    connection.exec_driver_sql(f"PREPARE ordo_probe AS {prepared}")
    try:
        rows = connection.exec_driver_sql(f"EXPLAIN EXECUTE ordo_probe({literals})")
        return "\n".join(str(row[0]) for row in rows)
    finally:
        connection.exec_driver_sql("DEALLOCATE ordo_probe")


@pytest.fixture
def ended_jobs(tasked: ProjectKeys, connection: Connection) -> None:
    """``JOBS`` jobs that have ended, of ``JOBS / JOBS_A_RUN`` completed runs, with statistics."""
    numbers = _numbers(JOBS)
    connection.exec_driver_sql(
        f"INSERT INTO ordo_runs (id, project_id, adaptive, strategy, status, next_stage, "
        f"lease_token, created_at, level_model) {numbers} "
        f"SELECT 'finished-' || i, '{tasked.id}', TRUE, 'thompson', 'completed', 4, 1, "
        f"CURRENT_TIMESTAMP, 'constant' FROM seq WHERE i <= {JOBS // JOBS_A_RUN}"
    )
    connection.exec_driver_sql(
        f"INSERT INTO ordo_jobs (project_id, run_id, kind, status, attempts, payload, "
        f"created_at) {numbers} SELECT '{tasked.id}', 'finished-' || ((i - 1) / {JOBS_A_RUN} + 1), "
        f"'run_plan', 'done', 1, '{{}}', CURRENT_TIMESTAMP FROM seq"
    )
    connection.exec_driver_sql("ANALYZE ordo_runs")
    connection.exec_driver_sql("ANALYZE ordo_jobs")


def test_asking_for_a_pending_plan_reads_the_runs_jobs_only(
    client: TestClient,
    tasked: ProjectKeys,
    connection: Connection,
    recorded: Recorded,
    ended_jobs: None,
) -> None:
    """With thousands of jobs in the table, the plans of a report and of ``GET .../next`` (on
    PostgreSQL the generic plans of the statements the driver has prepared) read a run's jobs
    through the run's index, not the whole table."""
    runs = f"/v1/projects/{tasked.id}/runs"
    created = client.post(runs, json={"adaptive": True}, headers=tasked.trainer).json()
    recorded.clear()
    body = {"evaluations": [{"task": key, "value": 0.5} for key in TASKS]}
    holder = {**tasked.trainer, "Ordo-Lease-Token": "1"}
    assert client.put(f"{runs}/{created['id']}/reports/0", json=body, headers=holder).is_success
    assert client.get(f"{runs}/{created['id']}/next", headers=tasked.trainer).is_success
    asking = [(s, p) for s, p in recorded if "FROM ordo_jobs" in s and s.startswith("SELECT")]
    assert len(asking) >= 2  # the report's read of its run, GET next's
    for statement, parameters in asking:
        plan = _explain(connection, statement, parameters, generic=True)
        assert not _reads_all(plan, "ordo_jobs"), plan


def test_a_workers_claims_read_the_open_jobs_only(
    tasked: ProjectKeys,
    connection: Connection,
    recorded: Recorded,
    ended_jobs: None,
    database: Database,
    database_url: str,
) -> None:
    """With thousands of ended jobs in the table, a worker's claims (its first job, then the
    rest of its batch) walk the open jobs, not the primary key through every job that ended."""
    settings = worker_less_settings(database_url, plan_wait_s=0.0, rate_limit_enabled=False)
    app = create_app(settings)
    with TestClient(app) as client:
        app.state.database = database
        for client_id in ("a", "b"):
            body = {"adaptive": True, "client_id": client_id}
            created = client.post(
                f"/v1/projects/{tasked.id}/runs", json=body, headers=tasked.trainer
            )
            assert created.status_code == 201, created.text
    recorded.clear()
    assert planning.run_next_job(database, settings)
    claims = [
        (s, p)
        for s, p in recorded
        if re.search(r"FROM ordo_jobs\s.*ORDER BY ordo_jobs.id\s+LIMIT", s, re.S)
    ]
    assert len(claims) == 2, claims  # the first job, the rest of the batch
    for statement, parameters in claims:
        plan = _explain(connection, statement, parameters, generic=True)
        assert not _reads_all(plan, "ordo_jobs"), plan
        assert "pk_ordo_jobs" not in plan, plan


OTHER_PROJECTS = 30
"""Other projects in the table, each with ..."""
OTHER_REPORTS = 50
"""... so many reports of one run, each with every task's evaluation."""


def _other_projects(connection: Connection) -> None:
    """``OTHER_PROJECTS`` projects of 3 tasks, each with one run of ``OTHER_REPORTS`` reports
    and their evaluations, with statistics."""
    numbers = _numbers(OTHER_PROJECTS * OTHER_REPORTS)
    projects = f"{numbers} SELECT 'p-' || i AS p FROM seq WHERE i <= {OTHER_PROJECTS}"
    connection.exec_driver_sql(
        "INSERT INTO ordo_projects (id, name, description, created_at, estimates_version, "
        f"settings) SELECT p, p, '', CURRENT_TIMESTAMP, 0, '{{}}' FROM ({projects}) AS projects"
    )
    for index in range(3):
        connection.exec_driver_sql(
            'INSERT INTO ordo_tasks (id, project_id, key, "index", name, kind, reward, goal, '
            f"scale, weight, metadata, created_at, updated_at) SELECT p || '-t{index}', p, "
            f"'t{index}', {index}, 't', 'structured', 'other', 'maximize', 1.0, 1.0, '{{}}', "
            f"CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM ({projects}) AS projects"
        )
    connection.exec_driver_sql(
        "INSERT INTO ordo_runs (id, project_id, adaptive, strategy, status, next_stage, "
        "lease_token, created_at, level_model) SELECT p || '-run', p, TRUE, 'thompson', "
        f"'completed', 4, 1, CURRENT_TIMESTAMP, 'constant' FROM ({projects}) AS projects"
    )
    connection.exec_driver_sql(
        "INSERT INTO ordo_stage_reports (id, project_id, run_id, stage, body_hash, body, "
        f"response, late, created_at) {numbers} SELECT 'r-' || i, 'p-' || ((i - 1) / "
        f"{OTHER_REPORTS} + 1), 'p-' || ((i - 1) / {OTHER_REPORTS} + 1) || '-run', i, 'h', "
        "'{}', '{}', FALSE, CURRENT_TIMESTAMP FROM seq"
    )
    connection.exec_driver_sql(
        "INSERT INTO ordo_stage_evaluations (report_id, project_id, task_id, value, utility) "
        "SELECT r.id, r.project_id, t.id, 0.5, 0.5 FROM ordo_stage_reports r "
        "JOIN ordo_tasks t ON t.project_id = r.project_id WHERE substr(r.project_id, 1, 2) = 'p-'"
    )
    for table in ("ordo_projects", "ordo_runs", "ordo_stage_reports", "ordo_stage_evaluations"):
        connection.exec_driver_sql(f"ANALYZE {table}")


def test_a_projects_history_reads_its_own_evaluations_only(
    session: Session, connection: Connection, recorded: Recorded
) -> None:
    """With other projects' evaluations in the table, the read of a project's history (each
    plan job's) reads the project's own, not the whole table, and joins them to nothing: a join
    to the reports was planned, on statistics older than the project's rows, as a nested loop
    comparing every evaluation of the project with every report of it (458 ms at 4,368
    evaluations); the reports are matched in Python instead."""
    _other_projects(connection)
    recorded.clear()
    history = load_history(session, "p-1")
    [read] = [(s, p) for s, p in recorded if "FROM ordo_stage_evaluations" in s]
    assert "JOIN" not in read[0].upper(), read[0]
    plan = _explain(connection, *read, generic=True)
    assert not _reads_all(plan, "ordo_stage_evaluations"), plan
    # Every report's evaluations reached its run and stage.
    stored = connection.exec_driver_sql(
        "SELECT count(*) FROM ordo_stage_evaluations WHERE project_id = 'p-1'"
    ).scalar_one()
    found = sum(len(stage) for run in history.records.values() for stage in run.utilities)
    assert found == stored > 0


OTHER_RUNS = 5000
"""Runs of another project in the table (the database's other projects)."""


@pytest.fixture
def other_runs(connection: Connection) -> None:
    """``OTHER_RUNS`` completed runs of one other project, with statistics."""
    connection.exec_driver_sql(
        "INSERT INTO ordo_projects (id, name, description, created_at, estimates_version, "
        "settings) VALUES ('other', 'other', '', CURRENT_TIMESTAMP, 0, '{}')"
    )
    connection.exec_driver_sql(
        f"INSERT INTO ordo_runs (id, project_id, adaptive, strategy, status, next_stage, "
        f"lease_token, created_at, level_model) {_numbers(OTHER_RUNS)} "
        f"SELECT 'other-' || i, 'other', TRUE, 'thompson', 'completed', 4, 1, "
        f"CURRENT_TIMESTAMP, 'constant' FROM seq"
    )
    connection.exec_driver_sql("ANALYZE ordo_runs")


def test_a_reports_and_a_plans_writes_find_their_rows_by_key(
    client: TestClient,
    tasked: ProjectKeys,
    connection: Connection,
    recorded: Recorded,
    ended_jobs: None,
    other_runs: None,
) -> None:
    """With thousands of runs and jobs in the tables, the updates a report makes
    (its run) and a plan store makes (the run, the job) find their rows through the key's index
    in their generic plans: one statement updates rows given as a JSON recordset, which
    PostgreSQL takes for 100 rows whatever it holds, and joined with every row of the table it
    was planned as a full scan (4.5 ms of a report at 11,000 runs)."""
    if connection.dialect.name == "sqlite":
        pytest.skip("SQLite updates each row in a statement of its own, by key")
    runs = f"/v1/projects/{tasked.id}/runs"
    recorded.clear()
    # The run's first plan is made and stored in the request (the test's app has no worker).
    created = client.post(runs, json={"adaptive": True}, headers=tasked.trainer).json()
    body = {"evaluations": [{"task": key, "value": 0.5} for key in TASKS]}
    holder = {**tasked.trainer, "Ordo-Lease-Token": "1"}
    assert client.put(f"{runs}/{created['id']}/reports/0", json=body, headers=holder).is_success
    updates = [(s, p) for s, p in recorded if re.search(r"\bUPDATE \"?ordo_(runs|jobs)\b", s)]
    updated = {table for s, _ in updates for table in re.findall(r"UPDATE \"?(ordo_\w+)", s)}
    assert {"ordo_runs", "ordo_jobs"} <= updated, updates  # the report's run, the plan's job
    for statement, parameters in updates:
        plan = _explain(connection, statement, parameters, generic=True)
        for table in ("ordo_runs", "ordo_jobs"):
            assert not _reads_all(plan, table), plan


def test_the_views_of_runs_read_growing_tables_by_index(
    client: TestClient, tasked: ProjectKeys, connection: Connection, recorded: Recorded
) -> None:
    """A run's view, the runs list and calibration (every completed run's plans and last
    reports read together) find their rows by index too."""
    _trainer_requests(client, tasked, adaptive=True)
    _trainer_requests(client, tasked, adaptive=False)
    runs = f"/v1/projects/{tasked.id}/runs"
    recorded.clear()
    listed = client.get(runs, headers=tasked.trainer).json()["items"]
    assert len(listed) == 2
    for run in listed:
        assert client.get(f"{runs}/{run['id']}", headers=tasked.trainer).status_code == 200
    calibration = client.get(f"/v1/projects/{tasked.id}/calibration", headers=tasked.trainer)
    assert len(calibration.json()["runs"]) == 2
    assert any("max(ordo_stage_reports.stage)" in statement for statement, _ in recorded)
    assert _full_scans(connection, list(recorded)) == {}
