"""A worker's batch: the waiting plan jobs of one project on one snapshot, with one model fit.

The test plays the worker (``ORDO_JOB_RUNNER=external``: no request runs a job). The project
has two completed runs, so adaptive runs plan on the ensemble (``solver.recommend``), the fit
that a batch makes once for all of its runs. What each test checks is what a trainer or an
operator sees: every waiting run gets its plan from one call of the worker, the plan a run
gets in a batch is the plan it gets alone from the same data, one run's failure stays its own,
and claims, leases and re-runs behave as for a job alone.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ordo_server.app.db import Database, unit_of_work
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories.runs import db_now, lock_runs
from ordo_server.app.services import planning, recommendations
from ordo_server.app.services import runs as run_service
from ordo_server.app.settings import Settings
from ordo_server.models import Job, Run, Schedule
from ordo_server.solver.recommend import fit_order_posterior
from tests.conftest import recorded_statements, worker_less_settings
from tests.factories import (
    ProjectKeys,
    create_project_with_keys,
    four_task_utilities,
    store_plans,
)

TASKS = ("math", "code", "poetry", "chat")
# The columns of a stored plan that the same data must reproduce (not its wall time).
PLAN_COLUMNS = ("order", "objective", "method", "predicted", "request", "parent_id")


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Jobs are left to the worker the test plays; retries come back quickly."""
    return worker_less_settings(database_url, plan_wait_s=0.05, job_retry_backoff_s=0.05)


@pytest.fixture
def trained(
    client: TestClient, session: Session, database: Database, settings: Settings
) -> ProjectKeys:
    """A project with two completed (non-adaptive) runs: the ensemble plans from here on."""
    project = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    for _ in range(2):
        run = _create(client, project, {"adaptive": False})
        _work(database, settings)
        for stage in range(len(TASKS) + 1):
            _report(client, project, run, stage)
        done = client.post(f"{_runs(project)}/{run['id']}/complete", headers=_holder(project, run))
        assert done.status_code == 200, done.text
    return project


def _runs(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/runs"


def _holder(project: ProjectKeys, run: dict[str, Any]) -> dict[str, str]:
    return {**project.trainer, "Ordo-Lease-Token": str(run["lease"]["token"])}


def _create(client: TestClient, project: ProjectKeys, body: dict[str, Any]) -> dict[str, Any]:
    created = client.post(_runs(project), json=body, headers=project.trainer)
    assert created.status_code == 201, created.text
    run: dict[str, Any] = created.json()
    return run


def _work(database: Database, settings: Settings) -> int:
    """The worker: run jobs until none is free; how many times it found one."""
    count = 0
    while planning.run_next_job(database, settings):
        count += 1
    return count


def _report(client: TestClient, project: ProjectKeys, run: dict[str, Any], stage: int) -> None:
    """Report ``stage`` of the run's current plan: utilities of the tasks trained before it."""
    following = client.get(f"{_runs(project)}/{run['id']}/next", headers=project.trainer).json()
    assert following["stage"] == stage, following
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    trained = [TASKS.index(s["task"]) for s in view["stages"][:stage]]
    utility = four_task_utilities(trained)
    body = {"evaluations": [{"task": k, "value": float(utility[j])} for j, k in enumerate(TASKS)]}
    url = f"{_runs(project)}/{run['id']}/reports/{stage}"
    response = client.put(url, json=body, headers=_holder(project, run))
    assert response.status_code == 200, response.text


def _waiting_replans(
    client: TestClient, project: ProjectKeys, database: Database, settings: Settings, count: int
) -> list[str]:
    """``count`` adaptive runs planned, reported to stage 1, each with its re-plan waiting.

    Each run trains another task first, so each re-plan starts from its own state.
    """
    runs = [
        _create(client, project, {"adaptive": True, "client_id": f"t-{i}", "schedule": _first(i)})
        for i in range(count)
    ]
    assert _work(database, settings) == 1  # the first plans: one batch
    for run in runs:
        _report(client, project, run, 0)
        _report(client, project, run, 1)
    return [run["id"] for run in runs]


@pytest.fixture
def three_waiting(
    client: TestClient, trained: ProjectKeys, database: Database, settings: Settings
) -> list[str]:
    """Three adaptive runs of the trained project, each with its re-plan after stage 1 waiting."""
    return _waiting_replans(client, trained, database, settings, 3)


def _first(task: int) -> dict[str, Any]:
    """Solve options that train task ``task`` first."""
    return {"constraints": [{"type": "pinned", "task": TASKS[task], "position": "first"}]}


def _jobs(session: Session, project: ProjectKeys) -> list[Job]:
    session.expire_all()
    query = select(Job).where(Job.project_id == project.id).order_by(Job.id)
    return list(session.scalars(query))


def _waiting(session: Session, project: ProjectKeys) -> list[Job]:
    return [job for job in _jobs(session, project) if job.status == job_repo.TODO]


def _plans(session: Session, run_id: str) -> list[Schedule]:
    session.expire_all()
    query = select(Schedule).where(Schedule.run_id == run_id).order_by(Schedule.version)
    return list(session.scalars(query))


def _solved_alone(database: Database, job: Job, settings: Settings) -> planning._Plan:
    """The plan the job's run needs, read and solved for it alone (nothing claimed or stored)."""
    solved: list[planning._Solved] = []
    claim = planning._Claim.of(job)
    planning._read_and_solve(database, [claim], settings, then=lambda _, plan: solved.append(plan))
    [plan] = solved
    assert isinstance(plan, planning._Plan), plan
    assert plan.solved is not None, plan.error
    return plan


def _counting_fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the ensemble's fits (each still fits: the real function is called)."""
    fits: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return fit_order_posterior(*args, **kwargs)

    monkeypatch.setattr(recommendations, "fit_order_posterior", counted)
    return fits


def test_one_worker_call_plans_every_waiting_run_of_the_project_with_one_fit(
    client: TestClient,
    three_waiting: list[str],
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_ids = three_waiting
    waiting = _waiting(session, trained)
    assert sorted(job.run_id or "" for job in waiting) == sorted(run_ids)
    # What each run's re-plan is when it is made alone, from the data the batch will read.
    alone = {job.run_id: _solved_alone(database, job, settings) for job in waiting}

    fits = _counting_fits(monkeypatch)
    assert planning.run_next_job(database, settings)  # one claim: the whole batch
    assert len(fits) == 1
    assert not planning.run_next_job(database, settings)  # nothing left

    for job in _jobs(session, trained)[-3:]:
        assert (job.status, job.outcome, job.attempts) == ("done", "planned", 1)
    for run_id in run_ids:
        first, replan = _plans(session, run_id)
        expected = alone[run_id]
        assert expected.solved is not None
        assert (replan.run_stage, replan.method) == (1, "ensemble:explore")
        assert replan.order[:1] == first.order[:1]  # the trained prefix is kept
        assert replan.order[0] == TASKS[run_ids.index(run_id)]
        for column in PLAN_COLUMNS:
            assert getattr(replan, column) == expected.solved.values[column], column
        following = client.get(f"{_runs(trained)}/{run_id}/next", headers=trained.trainer).json()
        assert (following["stage"], following["task"]) == (2, replan.order[1])
        assert following["plan_pending"] is False


def test_one_runs_failure_in_a_batch_leaves_the_others_planned(
    client: TestClient,
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    cycle = [
        {"type": "precedence", "before": "math", "after": "code"},
        {"type": "precedence", "before": "code", "after": "math"},
    ]
    # Its constraints admit no order: the solver refuses its first plan.
    refused = _create(client, trained, {"schedule": {"constraints": cycle}})
    planned = _create(client, trained, {"adaptive": True, "client_id": "planned"})
    # Its job cannot even be read (an unexpected error): that job alone retries.
    broken = _create(client, trained, {"adaptive": True, "client_id": "broken"})
    with unit_of_work(database.sessions) as writer:
        writer.execute(
            update(Job)
            .where(Job.run_id == broken["id"])
            .values(payload={run_service.PLAN_PAYLOAD_SCHEDULE: {"objective": "nonsense"}})
        )
    later = _create(client, trained, {"adaptive": True, "client_id": "later"})

    assert planning.run_next_job(database, settings)  # one batch of four first plans

    view = client.get(f"{_runs(trained)}/{refused['id']}", headers=trained.trainer).json()
    assert view["status"] == "failed"
    assert view["fail_reason"].startswith("No plan could be made:")
    for run in (planned, later):
        [plan] = _plans(session, run["id"])
        assert plan.run_stage == 0
        assert plan.method == "ensemble:explore"
    by_run = {job.run_id: job for job in _jobs(session, trained)}
    assert by_run[refused["id"]].outcome == "failed_run"
    assert by_run[planned["id"]].outcome == by_run[later["id"]].outcome == "planned"
    retried = by_run[broken["id"]]
    assert (retried.status, retried.attempts, retried.outcome) == ("doing", 1, None)
    assert "ValidationError" in str(retried.error)
    assert _plans(session, broken["id"]) == []


def test_a_batch_skips_a_claim_held_elsewhere_and_a_batch_run_again_stores_nothing_new(
    three_waiting: list[str],
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    held, *others = three_waiting
    # Another worker claims one re-plan with a short lease and dies.
    with unit_of_work(database.sessions) as writer:
        assert job_repo.claim(writer, now=db_now(writer), lease_s=1.0, run_id=held) is not None
    assert planning.run_next_job(database, settings)
    assert [len(_plans(session, run_id)) for run_id in (held, *others)] == [1, 2, 2]
    assert not planning.run_next_job(database, settings)  # the held one is not free yet
    time.sleep(1.1)
    assert planning.run_next_job(database, settings)  # its lease is over: claimed again
    [*_, job] = [job for job in _jobs(session, trained) if job.run_id == held]
    assert (job.status, job.outcome, job.attempts) == ("done", "planned", 2)

    # Every run asks again with nothing new reported: the batch stores nothing.
    before = {run_id: _plans(session, run_id) for run_id in (held, *others)}
    with unit_of_work(database.sessions) as writer:
        for run_id in (held, *others):
            run = writer.get(Run, run_id)
            assert run is not None
            assert run_service.request_plan(writer, run, at=db_now(writer), request_id=None)
    assert planning.run_next_job(database, settings)
    assert {run_id: _plans(session, run_id) for run_id in before} == before
    assert [job.outcome for job in _jobs(session, trained)[-3:]] == ["noop"] * 3


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_batch_takes_at_most_job_batch_size_jobs(
    three_waiting: list[str],
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
    batch_size: int,
) -> None:
    run_ids = three_waiting
    bounded = settings.model_copy(update={"job_batch_size": batch_size})
    assert planning.run_next_job(database, bounded)
    assert len(_waiting(session, trained)) == 3 - batch_size
    assert _work(database, bounded) == {1: 2, 2: 1}[batch_size]
    assert all(len(_plans(session, run_id)) == 2 for run_id in run_ids)


def _claimed_batch(database: Database, settings: Settings) -> list[planning._Claim]:
    """Every waiting plan job of the project, claimed as a worker claims a batch."""
    claims = planning._claim(database, settings, run_id=None, job_id=None)
    assert claims
    return claims


def test_a_group_of_plans_is_stored_in_one_transaction_each_job_keeping_its_own_outcome(
    client: TestClient,
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
) -> None:
    run_ids = _waiting_replans(client, trained, database, settings, 4)
    jobs = {job.run_id: job for job in _waiting(session, trained)}
    solved = {run_id: _solved_alone(database, jobs[run_id], settings) for run_id in run_ids}
    claims = {claim.run_id: claim for claim in _claimed_batch(database, settings)}
    planned, duplicate, lost, moved = run_ids
    with unit_of_work(database.sessions) as writer:
        # Another worker stored this (run, stage)'s plan already ...
        plan = solved[duplicate].solved
        assert plan is not None
        assert store_plans(writer, trained.id, [(plan, 1)])[0] is not None
        # ... claimed this job again after its lease ...
        writer.execute(
            update(Job).where(Job.id == claims[lost].id).values(attempts=Job.attempts + 1)
        )
    # ... and this run was completed while its re-plan was solved.
    done = client.post(
        f"{_runs(trained)}/{moved}/complete",
        headers={**trained.trainer, "Ordo-Lease-Token": "1"},
    )
    assert done.status_code == 200, done.text
    before = [
        s.version
        for s in session.scalars(select(Schedule).where(Schedule.project_id == trained.id))
    ]

    statements = recorded_statements(database.engine)
    outcomes = planning._store_together(
        database, trained.id, [(claims[r], solved[r]) for r in run_ids]
    )
    if database.engine.dialect.name == "postgresql":
        # The plan, its run's pointer, the jobs' ends and their announcement: one statement.
        writes = [s for s in statements if s.startswith(("INSERT", "UPDATE", "WITH", "SELECT pg"))]
        assert len(writes) == 1, writes
        assert all(w in writes[0] for w in ('"ordo_runs"', '"ordo_jobs"', "pg_notify"))
        # The clock is read by the statement that locks the runs, not by one of its own.
        assert not [s for s in statements if s.strip() == "SELECT clock_timestamp()"], statements
        # The runs' locks with the clock, the jobs' locks, the project's lock, the plans the
        # runs have with the next version, the write: five statements for the group.
        made = [s for s in statements if not s.startswith(("SAVEPOINT", "RELEASE"))]
        assert len(made) == 5, made

    assert outcomes == {
        claims[planned].id: "planned",
        claims[duplicate].id: "duplicate",
        claims[lost].id: "lost",
        claims[moved].id: "superseded",
    }
    by_run = {job.run_id: job for job in _jobs(session, trained) if job.id in outcomes}
    assert (by_run[lost].status, by_run[lost].outcome) == ("doing", None)  # the other's to end
    for run_id in (planned, duplicate, moved):
        assert (by_run[run_id].status, by_run[run_id].outcome) == (
            "done",
            outcomes[claims[run_id].id],
        )
    _, replan = _plans(session, planned)
    assert replan.version == max(before) + 1  # the next version, as one store alone takes
    assert replan.order == solved[planned].solved.values["order"]  # type: ignore[union-attr]
    view = client.get(f"{_runs(trained)}/{planned}/next", headers=trained.trainer).json()
    assert (view["stage"], view["task"]) == (2, replan.order[1])
    assert len(_plans(session, duplicate)) == 2  # the other worker's plan, not a second one
    assert len(_plans(session, moved)) == 1


def test_the_run_locks_read_the_clock_with_the_runs_or_alone_when_none_is_found(
    three_waiting: list[str], trained: ProjectKeys, database: Database
) -> None:
    with unit_of_work(database.sessions) as writer:
        before = db_now(writer)
        found = lock_runs(writer, trained.id, [*three_waiting, "missing"])
        none = lock_runs(writer, trained.id, ["missing"])
        after = db_now(writer)
    assert sorted(found.runs) == sorted(three_waiting)
    assert none.runs == {}
    for clock in (found.now, none.now):
        assert clock.tzinfo is not None
        assert before <= clock <= after


def test_a_group_whose_transaction_fails_is_stored_one_run_at_a_time(
    three_waiting: list[str],
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
    session: Session,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_ids = three_waiting
    # Every plan after the first waits for the batch's end: one group of two.
    monkeypatch.setattr(planning, "GROUP_WINDOW_S", 3600.0)
    jobs = {job.run_id: job for job in _waiting(session, trained)}
    plan_store = planning._PlanStore(database, trained.id, group_max=10)
    claims = {claim.run_id: claim for claim in _claimed_batch(database, settings)}
    first, good, broken = run_ids
    plans = {run_id: _solved_alone(database, jobs[run_id], settings) for run_id in run_ids}
    bad = plans[broken].solved
    assert bad is not None
    # Its parent schedule does not exist: inserting it breaks the group's transaction.
    bad.values["parent_id"] = "no-such-schedule"
    for run_id in run_ids:
        plan_store.put(claims[run_id], plans[run_id])
    assert set(plan_store.outcomes) == {claims[first].id}  # stored at once, alone
    plan_store.flush()

    assert plan_store.outcomes[claims[good].id] == "planned"
    # Its own store fails too: that job alone retries.
    assert isinstance(plan_store.outcomes[claims[broken].id], IntegrityError)
    assert len(_plans(session, first)) == len(_plans(session, good)) == 2
    assert len(_plans(session, broken)) == 1


def test_plans_are_grouped_only_while_the_worker_is_behind(
    client: TestClient,
    trained: ProjectKeys,
    database: Database,
    settings: Settings,
) -> None:
    _waiting_replans(client, trained, database, settings, 2)
    trainers_wait = settings.model_copy(update={"plan_wait_s": 2.0})
    # Just queued: each plan is stored alone, its trainer woken at once.
    claims = _claimed_batch(database, trainers_wait)
    assert 0 <= max(claim.waited_s for claim in claims) < trainers_wait.plan_wait_s
    assert planning.group_max(claims, trainers_wait) == 1
    # Queued longer ago than a trainer waits for its plan: the worker is behind.
    late = [replace(claim, waited_s=trainers_wait.plan_wait_s + 0.5) for claim in claims]
    assert planning.group_max(late, trainers_wait) == planning.GROUP_MAX > 1
