"""Group commit of reports (app.report_batches): the reports an API process receives together are
stored in one transaction, each with its own answer or error, and one request's failure is its
own; batches form under concurrency (a live server) and take their locks in one order."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from ordo_server.app.db import unit_of_work
from ordo_server.app.errors import ServiceError, UnavailableError
from ordo_server.app.report_batches import GroupCommit, store_reports, write_gates
from ordo_server.app.repositories import projects as project_repo
from ordo_server.app.schemas.report import ReportAccepted, ReportCreate
from ordo_server.app.security import Role
from ordo_server.app.services.auth import Principal, authenticate
from ordo_server.app.services.key_cache import KeyCache
from ordo_server.app.services.reports import ReportRequest, put_reports
from ordo_server.app.settings import Settings
from ordo_server.models import Run
from tests.conftest import (
    ADMIN_TOKEN,
    ProjectWithRuns,
    live_server_on,
    migrated_sqlite_url,
    postgres_database,
    project_with_runs,
    recorded_statements,
    require_postgres,
)
from tests.factories import create_key

KEYS = ("math", "code", "poetry")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PRINCIPAL = Principal(key_id="test", role=Role.ADMIN, project_id=None)


# --- the queue alone ---------------------------------------------------------------------------


class Recorder:
    """A store that records its batches; ``fail`` names items that come back as errors."""

    def __init__(self, *, delay_s: float = 0.0, fail: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.fail = fail
        self.concurrent = 0
        self.most_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        with self._lock:
            self.batches.append(list(items))
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        time.sleep(self.delay_s)
        with self._lock:
            self.concurrent -= 1
        return [ValueError(f"item {i}") if i in self.fail else i * 10 for i in items]


def test_items_that_arrive_while_a_batch_is_stored_form_the_next_batch() -> None:
    store = Recorder(delay_s=0.05, fail=frozenset({7}))
    queue: GroupCommit[int, int] = GroupCommit(store, gate=None, gate_timeout_s=1, in_flight=1)

    async def main() -> list[int | BaseException]:
        first = asyncio.ensure_future(queue.submit(0))
        await asyncio.sleep(0.01)  # the first batch (item 0 alone) is being stored
        rest = [asyncio.ensure_future(queue.submit(i)) for i in range(1, 10)]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert store.batches == [[0], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert [o for i, o in enumerate(outcomes) if i != 7] == [i * 10 for i in range(10) if i != 7]
    assert isinstance(outcomes[7], ValueError)
    assert str(outcomes[7]) == "item 7"


def test_batches_are_bounded_in_size_and_in_flight() -> None:
    store = Recorder(delay_s=0.02)
    queue: GroupCommit[int, int] = GroupCommit(
        store, gate=None, gate_timeout_s=1, max_batch=4, in_flight=2
    )

    async def main() -> list[int]:
        return await asyncio.gather(*(queue.submit(i) for i in range(20)))

    assert asyncio.run(main()) == [i * 10 for i in range(20)]
    assert max(len(batch) for batch in store.batches) <= 4
    assert sorted(i for batch in store.batches for i in batch) == list(range(20))
    assert store.most_concurrent == 2


def test_an_error_of_the_whole_batch_reaches_every_item() -> None:
    def store(items: Sequence[int]) -> list[int | BaseException]:
        raise RuntimeError("the database went away")

    queue: GroupCommit[int, int] = GroupCommit(store, gate=None, gate_timeout_s=1)

    async def main() -> list[int | BaseException]:
        return await asyncio.gather(*(queue.submit(i) for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) for o in outcomes)


def test_a_batch_holds_one_write_slot_and_gives_up_after_the_gate_timeout() -> None:
    async def main() -> None:
        gate = asyncio.Semaphore(1)
        store = Recorder()
        queue: GroupCommit[int, int] = GroupCommit(store, gate=gate, gate_timeout_s=0.2)
        await gate.acquire()  # another writer holds the only slot
        with pytest.raises(UnavailableError):
            await queue.submit(1)
        assert store.batches == []
        gate.release()
        assert await queue.submit(2) == 20
        assert not gate.locked()  # the batch gave its slot back

    asyncio.run(main())


def test_a_drainer_stopped_mid_batch_answers_its_submitters_503() -> None:
    store = Recorder(delay_s=0.3)
    queue: GroupCommit[int, int] = GroupCommit(store, gate=None, gate_timeout_s=1)

    async def main() -> None:
        submitted = asyncio.ensure_future(queue.submit(1))
        await asyncio.sleep(0.05)  # the batch is being stored
        for drainer in list(queue._drainers):
            drainer.cancel()  # as the server's shutdown does
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(submitted, timeout=5)

    asyncio.run(main())


def test_a_queue_left_busy_by_a_closed_event_loop_serves_the_next_loop() -> None:
    """A test client's portal can end its event loop while a batch is being stored: the queue
    must not wait on that loop's drainer (or answer its futures) in the next loop."""
    store = Recorder(delay_s=0.3)
    queue: GroupCommit[int, int] = GroupCommit(store, gate=None, gate_timeout_s=1, in_flight=1)
    old = asyncio.new_event_loop()
    left: list[asyncio.Future[int]] = []

    async def leave_busy() -> None:
        left.append(asyncio.ensure_future(queue.submit(1)))
        await asyncio.sleep(0.05)  # its drainer is storing item 1

    old.run_until_complete(leave_busy())
    old.close()  # the drainer never finishes

    async def serve() -> int:
        return await asyncio.wait_for(queue.submit(2), timeout=5)

    assert asyncio.run(serve()) == 20
    assert store.batches[-1] == [2]
    assert not left[0].done()  # item 1's request went with its loop


@pytest.mark.parametrize(
    ("url", "pool", "overflow", "writers", "batches", "shared"),
    [
        ("sqlite:///ordo.sqlite", 5, 5, 1, 1, True),
        ("postgresql+psycopg://db/ordo", 5, 5, 8, 2, False),
        ("postgresql+psycopg://db/ordo", 2, 0, 1, 1, False),
        ("postgresql+psycopg://db/ordo", 1, 0, 1, 1, True),
    ],
)
def test_report_batches_keep_connections_of_their_own_on_postgresql(
    url: str, pool: int, overflow: int, writers: int, batches: int, shared: bool
) -> None:
    settings = Settings(database_url=url, db_pool_size=pool, db_max_overflow=overflow)
    write_gate, report_gate = write_gates(settings)
    assert (write_gate is report_gate) is shared
    if shared:
        assert _slots(write_gate) == writers == batches
    else:
        assert (_slots(write_gate), _slots(report_gate)) == (writers, batches)


def _slots(gate: asyncio.Semaphore) -> int:
    async def count() -> int:
        taken = 0
        while not gate.locked():
            await gate.acquire()
            taken += 1
        return taken

    return asyncio.run(count())


# --- batches on a database ---------------------------------------------------------------------


Project = ProjectWithRuns


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextmanager
def _project_on(backend: str, tmp_path: Any, *, adaptive: bool = False) -> Iterator[Project]:
    if backend == "sqlite":
        url = migrated_sqlite_url(tmp_path / "ordo.sqlite")
        with project_with_runs(url, KEYS, adaptive=adaptive) as made:
            yield made
    else:
        with (
            postgres_database(require_postgres()) as url,
            project_with_runs(url, KEYS, adaptive=adaptive) as made,
        ):
            yield made


@pytest.fixture(params=BACKENDS)
def project(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Project]:
    with _project_on(request.param, tmp_path) as made:
        yield made


def _body(stage: int, *, task: str = "math", value: float = 0.5) -> ReportCreate:
    evaluations = [{"task": k, "value": value + 0.1 * stage} for k in KEYS if k != task]
    evaluations.append({"task": task, "value": value})
    return ReportCreate.model_validate({"evaluations": evaluations})


def _request(
    project: Project, run: int, stage: int, *, token: int | None = 1, **body: Any
) -> ReportRequest:
    return ReportRequest(
        principal=PRINCIPAL,
        project_id=project.project_id,
        run_id=project.runs[run],
        stage=stage,
        body=_body(stage, **body),
        lease_token=token,
    )


def _stored(project: Project) -> list[tuple[str, int]]:
    with unit_of_work(project.database.read_sessions) as session:
        rows = session.execute(text("SELECT run_id, stage FROM ordo_stage_reports")).all()
    return sorted((row.run_id, row.stage) for row in rows)


def _count_commits(engine: Engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _commit(_connection: Any) -> None:
        commits[0] += 1

    return commits


def test_each_report_of_a_batch_gets_its_own_answer_in_one_commit(project: Project) -> None:
    requests = [
        _request(project, 2, 0),
        _request(project, 0, 0),
        _request(project, 1, 1),  # out of turn: the run expects stage 0
        _request(project, 3, 0, token=7),  # another holder's lease token
        _request(project, 3, 0, task="unknown"),  # an unknown task key
        _request(project, 1, 0),
    ]
    commits = _count_commits(project.database.engine)
    outcomes = store_reports(project.database, project.settings, None, requests)
    assert commits == [1]
    stored = [o for o in outcomes if isinstance(o, ReportAccepted)]
    assert [(o.run_id, o.report.stage) for o in stored] == [
        (project.runs[2], 0),
        (project.runs[0], 0),
        (project.runs[1], 0),
    ]
    answers = [(o.status, o.code.value) for o in outcomes if isinstance(o, ServiceError)]
    assert answers == [(409, "stage_out_of_turn"), (409, "lease_lost"), (422, "validation_failed")]
    assert _stored(project) == sorted([(project.runs[r], 0) for r in (0, 1, 2)])


def test_a_replay_in_the_same_batch_answers_the_stored_report(project: Project) -> None:
    first, again = _request(project, 0, 0), _request(project, 0, 0)
    changed = _request(project, 0, 0, value=0.9)
    outcomes = store_reports(project.database, project.settings, None, [first, again, changed])
    assert isinstance(outcomes[0], ReportAccepted)
    assert outcomes[1] == outcomes[0]
    assert isinstance(outcomes[2], ServiceError)
    assert outcomes[2].code.value == "report_mismatch"
    assert _stored(project) == [(project.runs[0], 0)]


def test_stage_reports_in_a_batch_observe_what_one_alone_observes(project: Project) -> None:
    baselines = [_request(project, r, 0) for r in (0, 1, 2)]
    store_reports(project.database, project.settings, None, baselines)
    (alone,) = store_reports(project.database, project.settings, None, [_request(project, 0, 1)])
    together = store_reports(
        project.database, project.settings, None, [_request(project, 1, 1), _request(project, 2, 1)]
    )
    assert isinstance(alone, ReportAccepted)
    assert alone.observations > 0
    assert [o.observations for o in together if isinstance(o, ReportAccepted)] == [
        alone.observations
    ] * 2
    with unit_of_work(project.database.read_sessions) as session:
        stored = session.execute(
            text("SELECT run_id, count(*) FROM ordo_observations GROUP BY run_id")
        ).all()
        deltas = session.execute(text("SELECT count(*) FROM ordo_stat_deltas")).scalar_one()
    assert dict(stored) == dict.fromkeys(project.runs[:3], alone.observations)
    assert deltas == 3


def test_a_batch_makes_as_many_statements_as_one_report(project: Project) -> None:
    baselines = [_request(project, r, 0) for r in range(4)]
    store_reports(project.database, project.settings, None, baselines)
    statements = recorded_statements(project.database.engine)
    store_reports(project.database, project.settings, None, [_request(project, 0, 1)])
    alone = len(statements)
    statements.clear()
    batch = [_request(project, r, 1) for r in (1, 2, 3)]
    outcomes = store_reports(project.database, project.settings, None, batch)
    assert all(isinstance(o, ReportAccepted) for o in outcomes)
    assert len(statements) == alone, statements


def test_a_batch_reads_its_project_with_the_tasks_in_one_statement(project: Project) -> None:
    statements = recorded_statements(project.database.engine)
    outcomes = store_reports(
        project.database, project.settings, None, [_request(project, r, 0) for r in range(2)]
    )
    assert all(isinstance(o, ReportAccepted) for o in outcomes)
    reads = [s for s in statements if s.startswith(("SELECT ordo_projects.", "SELECT ordo_tasks."))]
    assert len(reads) == 1, statements
    assert "JOIN ordo_tasks" in reads[0]


def test_another_projects_key_reads_nothing_of_the_project(project: Project) -> None:
    outsider = Principal(key_id="other", role=Role.TRAINER, project_id="another-project")
    request = ReportRequest(outsider, project.project_id, project.runs[0], 0, _body(0), 1)
    statements = recorded_statements(project.database.engine)
    (outcome,) = store_reports(project.database, project.settings, None, [request])
    assert isinstance(outcome, ServiceError)
    assert outcome.status == 404
    reads = [s for s in statements if s.startswith("SELECT")]
    assert not any("ordo_projects" in s or "ordo_tasks" in s for s in reads), statements
    assert _stored(project) == []


def test_the_runs_rows_are_written_with_the_reports(project: Project) -> None:
    baselines = [_request(project, r, 0) for r in range(3)]
    store_reports(project.database, project.settings, None, baselines)
    with unit_of_work(project.database.sessions) as session:  # run 2's lease ran out long ago
        session.execute(
            text("UPDATE ordo_runs SET status = 'stale', lease_expires_at = :at WHERE id = :id"),
            {"at": datetime(2026, 1, 1, tzinfo=UTC), "id": project.runs[2]},
        )
    statements = recorded_statements(project.database.engine)
    # SQLite's clock counts whole milliseconds (strftime's %f): a lease it sets a moment after
    # this instant may read up to 1 ms before it, so the bound is this instant in milliseconds.
    now = datetime.now(UTC)
    before = now.replace(microsecond=now.microsecond // 1000 * 1000)
    outcomes = store_reports(
        project.database, project.settings, None, [_request(project, r, 1) for r in range(3)]
    )
    assert all(isinstance(o, ReportAccepted) for o in outcomes)
    if project.database.engine.dialect.name == "postgresql":
        # The runs' new values go in the reports' one statement (SQLite: an executemany).
        assert not any(s.startswith("UPDATE ordo_runs") for s in statements), statements
        assert sum("INSERT INTO" in s and "UPDATE" in s for s in statements) == 1, statements
    with unit_of_work(project.database.read_sessions) as session:
        columns = (Run.id, Run.status, Run.next_stage, Run.lease_expires_at)
        rows = session.execute(select(*columns).where(Run.id.in_(project.runs[:3]))).all()
    assert len(rows) == 3
    grace = timedelta(seconds=project.settings.heartbeat_grace_s)
    for run_id, status, next_stage, expires in rows:
        assert (status, next_stage) == ("active", 2), run_id
        assert expires is not None
        assert before + grace <= expires <= datetime.now(UTC) + grace


@pytest.mark.parametrize("backend", BACKENDS)
def test_adaptive_reports_of_a_batch_queue_their_replans_in_one_statement(
    backend: str, tmp_path: Any
) -> None:
    with _project_on(backend, tmp_path, adaptive=True) as made:
        baselines = [_request(made, r, 0) for r in range(4)]
        store_reports(made.database, made.settings, None, baselines)
        statements = recorded_statements(made.database.engine)
        (alone,) = store_reports(made.database, made.settings, None, [_request(made, 0, 1)])
        counted = len(statements)
        statements.clear()
        batch = [_request(made, r, 1) for r in (1, 2, 3)]
        together = store_reports(made.database, made.settings, None, batch)
        assert len(statements) == counted, statements
        answers = [alone, *together]
        assert all(isinstance(a, ReportAccepted) and a.plan_pending for a in answers)
        with unit_of_work(made.database.read_sessions) as session:
            queued = session.execute(
                text("SELECT run_id FROM ordo_jobs WHERE status = 'todo' AND kind = 'run_plan'")
            ).all()
        assert sorted(row.run_id for row in queued) == sorted(made.runs)


class Broken(ReportCreate):
    """A body whose canonical form cannot be made: a failure of this request alone."""

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("this request's own failure")


def test_a_batch_that_fails_on_its_own_is_stored_one_by_one(project: Project) -> None:
    broken = ReportRequest(
        principal=PRINCIPAL,
        project_id=project.project_id,
        run_id=project.runs[1],
        stage=0,
        body=Broken.model_validate(_body(0).model_dump()),
        lease_token=1,
    )
    requests = [_request(project, 0, 0), broken, _request(project, 2, 0)]
    outcomes = store_reports(project.database, project.settings, None, requests)
    assert isinstance(outcomes[0], ReportAccepted)
    assert isinstance(outcomes[2], ReportAccepted)
    assert isinstance(outcomes[1], RuntimeError)
    assert _stored(project) == sorted([(project.runs[0], 0), (project.runs[2], 0)])


def test_a_batch_records_each_key_use_once_and_its_cache_learns_it(project: Project) -> None:
    with unit_of_work(project.database.sessions) as session:
        token = create_key(session, project.project_id, role=Role.TRAINER)
        trainer = authenticate(session, token, admin_token=None, touch=False)
    assert trainer.last_used_at is None
    cache = KeyCache(60)
    cache.put(token, trainer)
    requests = [
        ReportRequest(trainer, project.project_id, project.runs[r], 0, _body(0), 1) for r in (0, 1)
    ]
    statements = recorded_statements(project.database.engine)
    outcomes = store_reports(project.database, project.settings, cache, requests)
    assert all(isinstance(o, ReportAccepted) for o in outcomes)
    assert sum("UPDATE ordo_api_keys" in s for s in statements) == 1
    cached = cache.get(token)
    assert cached is not None
    assert cached.last_used_at is not None


@pytest.mark.postgres
def test_a_project_lock_leaves_inserts_referencing_the_project_alone() -> None:
    """A plan store locks the project row (FOR NO KEY UPDATE) while a batch of reports inserts
    rows referencing it (KEY SHARE): neither waits for the other (with FOR UPDATE, the batch
    waited for the store while the store waited for a run the batch held: a deadlock)."""
    with (
        postgres_database(require_postgres()) as url,
        project_with_runs(url, KEYS) as made,
        unit_of_work(made.database.sessions) as holder,
    ):
        project_repo.lock_project(holder, made.project_id)
        with unit_of_work(made.database.sessions) as reporter:
            reporter.execute(text("SET LOCAL lock_timeout = '2s'"))
            batch = [_request(made, 0, 0)]
            try:
                outcome = put_reports(reporter, batch, settings=made.settings).outcomes[0]
            except OperationalError as error:  # lock timeout: the insert waited
                pytest.fail(f"the report waited for the project lock: {error}")
            assert isinstance(outcome, ReportAccepted)


# --- a live server -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_concurrent_reports_to_a_live_server_are_batched_and_each_stored_once(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with (
        live_server_on(backend, tmp_path_factory) as server,
        httpx.Client(base_url=server.base_url, headers=ADMIN, timeout=60) as admin,
    ):
        made = admin.post("/v1/projects", json={"name": "batches"}).json()
        prefix = f"/v1/projects/{made['id']}"
        tasks = {"tasks": [{"key": k} for k in KEYS]}
        admin.post(f"{prefix}/tasks", json=tasks).raise_for_status()
        schedule = admin.post(f"{prefix}/schedules", json={}).json()
        body = {"schedule_id": schedule["id"], "adaptive": False}
        runs = [admin.post(f"{prefix}/runs", json=body).json()["id"] for _ in range(40)]
        report = _body(0).model_dump(mode="json")

        def put(run_id: str) -> httpx.Response:
            return admin.put(
                f"{prefix}/runs/{run_id}/reports/0",
                json=report,
                headers={"Ordo-Lease-Token": "1"},
            )

        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(put, runs + runs))  # each report twice
        assert [a.status_code for a in answers] == [200] * 80
        for first, again in zip(answers[:40], answers[40:], strict=True):
            assert first.json() == again.json()  # the second is a replay
        for run_id in runs:
            stored = admin.get(f"{prefix}/runs/{run_id}").json()
            assert [r["stage"] for r in stored["reports"]] == [0]
        metrics = admin.get("/metrics").text
    sizes = _histogram(metrics, "ordo_report_batch_size")
    assert sizes["count"] >= 1
    assert sizes["sum"] == 80
    assert sizes["count"] < 80, "some reports shared a transaction"


def _histogram(text_format: str, name: str) -> dict[str, float]:
    values = {}
    for line in text_format.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f"{name}_{part} "):
                values[part] = float(line.split()[1])
    return values
