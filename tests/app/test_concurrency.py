"""No lost updates (reliability.md R1, R2 with resends): real uvicorn, real threads, real HTTP.

50 reporters x 40 reports each (2,000 reports) against a server process: 2 workers on
PostgreSQL, 1 on SQLite. Each reporter runs 4 runs of a 9-task project (baseline + 9 stages);
every tenth report is sent twice at the same time. Afterwards every report is stored exactly
once with the body sent, every statistic equals the one computed here from the values sent
(counts exactly, sums within 1e-9 relative), and no answer was a 5xx.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ordo_server.app.db import build_engine
from ordo_server.app.repositories.statistics import estimates_version
from ordo_server.app.schemas.report import ReportCreate
from ordo_server.app.services.statistics import current_statistics, fold_now
from ordo_server.app.settings import Settings
from ordo_server.models import Estimate, Observation, StageReport, Task
from ordo_server.models.estimate import LevelStats
from ordo_server.solver.estimation import StatsTable, extract_observations, recompute
from tests.conftest import (
    LiveServer,
    migrated_sqlite_url,
    postgres_database,
    require_postgres,
    run_live_server,
)

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

REPORTERS = 50
REPORTS_EACH = 40
N_TASKS = 9
RUNS_EACH = REPORTS_EACH // (N_TASKS + 1)
RESEND_EVERY = 10
TASKS = tuple(f"t{i}" for i in range(N_TASKS))
REL_TOL = 1e-9


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """SQLite with one worker, PostgreSQL with two."""
    if request.param == "sqlite":
        url = migrated_sqlite_url(tmp_path_factory.mktemp("concurrency") / "ordo.sqlite")
        with run_live_server(url, workers=1) as live:
            yield live
        return
    with postgres_database(require_postgres()) as url, run_live_server(url, workers=2) as live:
        yield live


@dataclass
class Sent:
    """What the reporters sent and got back (appended to from many threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: list[int] = field(default_factory=list)
    bodies: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, list[str]] = field(default_factory=dict)
    resent_pairs: list[tuple[bytes, bytes]] = field(default_factory=list)

    def status(self, response: httpx.Response) -> httpx.Response:
        with self.lock:
            self.statuses.append(response.status_code)
        return response


def _setup(server: LiveServer) -> tuple[str, dict[str, str], str]:
    """A project with N_TASKS tasks, a trainer key and one stored schedule."""
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as http:
        project = http.post("/v1/projects", json={"name": "concurrency"}).json()["id"]
        admin = http.post(f"/v1/projects/{project}/keys", json={"role": "admin"}).json()["key"]
        trainer = http.post(f"/v1/projects/{project}/keys", json={"role": "trainer"}).json()
        headers = {"Authorization": f"Bearer {admin}"}
        tasks = {"tasks": [{"key": key} for key in TASKS]}
        assert http.post(f"/v1/projects/{project}/tasks", json=tasks, headers=headers).is_success
        template = http.post(f"/v1/projects/{project}/runs", json={}, headers=headers)
        assert template.status_code == 201, template.text
    return project, {"Authorization": f"Bearer {trainer['key']}"}, template.json()["schedule_id"]


def _report_body(rng: np.random.Generator) -> dict[str, Any]:
    values = rng.uniform(0.0, 1.0, size=N_TASKS)
    entropies = rng.uniform(0.1, 2.0, size=N_TASKS)
    return {
        "evaluations": [
            {"task": key, "value": float(v), "entropy": float(h)}
            for key, v, h in zip(TASKS, values, entropies, strict=True)
        ]
    }


def _reporter(
    number: int,
    server: LiveServer,
    project: str,
    headers: dict[str, str],
    schedule: str,
    sent: Sent,
) -> None:
    rng = np.random.default_rng(number)
    runs = f"/v1/projects/{project}/runs"
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as http:
        for r in range(RUNS_EACH):
            body = {"schedule_id": schedule, "client_id": f"reporter-{number}-run-{r}"}
            created = sent.status(http.post(runs, json=body))
            run_id = created.json()["id"]
            lease = {"Ordo-Lease-Token": str(created.json()["lease"]["token"])}
            with sent.lock:
                sent.orders[run_id] = [stage["task"] for stage in created.json()["stages"]]
            for stage in range(N_TASKS + 1):
                report = _report_body(rng)
                with sent.lock:
                    sent.bodies[(run_id, stage)] = report
                path = f"{runs}/{run_id}/reports/{stage}"
                index = number * REPORTS_EACH + r * (N_TASKS + 1) + stage
                _send(http, path, report, sent, lease, resend=index % RESEND_EVERY == 3)
            sent.status(http.post(f"{runs}/{run_id}/complete", headers=lease))


def _send(
    http: httpx.Client,
    path: str,
    body: dict[str, Any],
    sent: Sent,
    lease: dict[str, str],
    *,
    resend: bool,
) -> None:
    """PUT once, or twice at the same moment (a client retrying before the first answer)."""
    if not resend:
        sent.status(http.put(path, json=body, headers=lease))
        return
    answers: list[httpx.Response] = []

    def resend_on_another_connection() -> None:
        # A client of its own: an httpx client is not shared between threads.
        with httpx.Client(base_url=http.base_url, headers=http.headers, timeout=60) as other:
            answers.append(other.put(path, json=body, headers=lease))

    duplicate = threading.Thread(target=resend_on_another_connection)
    duplicate.start()
    first = http.put(path, json=body, headers=lease)
    duplicate.join()
    sent.status(first)
    sent.status(answers[0])
    with sent.lock:
        sent.resent_pairs.append((first.content, answers[0].content))


def _expected_stats(sent: Sent) -> StatsTable:
    """The statistics the values sent must produce (tasks t0..t8 at indexes 0..8, u = value)."""
    observations = []
    for run_id, order in sent.orders.items():
        if (run_id, 0) not in sent.bodies:
            continue  # the template run reported nothing
        reports = [sent.bodies[(run_id, k)] for k in range(N_TASKS + 1)]
        utilities = [{int(e["task"][1:]): e["value"] for e in r["evaluations"]} for r in reports]
        entropies = [{int(e["task"][1:]): e["entropy"] for e in r["evaluations"]} for r in reports]
        trained = [int(task[1:]) for task in order]
        observations += extract_observations(trained, utilities, entropies)
    return recompute(observations)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def _check_database(engine: Engine, project: str, sent: Sent) -> None:
    with engine.connect() as connection:
        reports = connection.execute(
            select(StageReport.run_id, StageReport.stage, StageReport.body).where(
                StageReport.project_id == project
            )
        ).all()
        index = {
            row.id: int(row.key[1:])
            for row in connection.execute(
                select(Task.id, Task.key).where(Task.project_id == project)
            )
        }
    with Session(engine) as session:
        # What readers see before the fold (folded rows plus deltas) is what the fold stores.
        seen_cells, seen_levels = current_statistics(session, project)
        version = estimates_version(session, project)
        fold_now(session, project)
        session.commit()
        assert estimates_version(session, project) == version
        session.commit()
    with Session(engine) as session:
        cells = session.scalars(select(Estimate).where(Estimate.project_id == project)).all()
        levels = session.scalars(select(LevelStats).where(LevelStats.project_id == project)).all()
    assert {
        (c.effect, c.src_task_id, c.dst_task_id, c.count, c.sum_x, c.sum_x2) for c in cells
    } == {(c.effect, c.src_task_id, c.dst_task_id, c.count, c.sum_x, c.sum_x2) for c in seen_cells}
    assert {(row.task_id, row.count, row.sum_y, row.sum_y2) for row in levels} == {
        (row.task_id, row.count, row.sums[5], row.sums[8]) for row in seen_levels
    }
    observing = sum(1 for _, stage, _ in reports if stage >= 1)
    assert version == observing  # one version per observing report, none lost
    with engine.connect() as connection:
        observation_count = len(
            connection.execute(
                select(Observation.id).where(Observation.project_id == project)
            ).all()
        )
    assert len(reports) == REPORTERS * REPORTS_EACH
    for run_id, stage, body in reports:
        # Stored as validated: the optional fields the reporters left out are null.
        assert body == ReportCreate.model_validate(sent.bodies[(run_id, stage)]).model_dump()
    expected = _expected_stats(sent)
    assert observation_count == sum(stats.count for stats in expected.cells.values())
    stored = {
        (c.effect, index[c.src_task_id], index[c.dst_task_id]): (c.count, c.sum_x, c.sum_x2)
        for c in cells
    }
    assert len(stored) == len(expected.cells)
    for (kind, i, j), stats in expected.cells.items():
        count, sum_x, sum_x2 = stored[(kind.value, i, j)]
        assert count == stats.count
        assert _close(sum_x, stats.sum_x), (kind, i, j)
        assert _close(sum_x2, stats.sum_x2), (kind, i, j)
    for row in levels:
        reg = expected.levels[index[row.task_id]]
        assert row.count == reg.count
        assert _close(row.sum_y, reg.sum_y)
        assert _close(row.sum_uh, reg.sum_xx[1])


def test_no_lost_updates(server: LiveServer) -> None:
    project, headers, schedule = _setup(server)
    sent = Sent()
    threads = [
        threading.Thread(target=_reporter, args=(i, server, project, headers, schedule, sent))
        for i in range(REPORTERS)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed_s = time.monotonic() - started
    server_errors = sum(1 for status in sent.statuses if status >= 500)
    logger.warning(
        "no-lost-updates on %s: %d reports (%d resent), %d requests, %d 5xx, %.1f s",
        server.database_url.split(":")[0],
        len(sent.bodies),
        len(sent.resent_pairs),
        len(sent.statuses),
        server_errors,
        elapsed_s,
    )
    assert server_errors == 0
    assert set(sent.statuses) <= {200, 201}, sorted(set(sent.statuses))
    assert len(sent.bodies) == REPORTERS * REPORTS_EACH
    assert len(sent.resent_pairs) == REPORTERS * REPORTS_EACH // RESEND_EVERY
    assert all(first == second for first, second in sent.resent_pairs)
    engine = build_engine(Settings(database_url=server.database_url))
    try:
        _check_database(engine, project, sent)
    finally:
        engine.dispose()
    recomputed = httpx.post(
        f"{server.base_url}/v1/projects/{project}/estimates/recompute",
        headers=server.admin_headers,
        timeout=60,
    )
    assert recomputed.status_code == 200, recomputed.text
    assert recomputed.json()["changed_cells"] == 0
