"""Proof by attack, 2: SIGKILL the server during a burst of reports; nothing acknowledged is lost.

A live server (SQLite, then PostgreSQL) takes reports from several trainer threads on fixed
runs, each report with the run's lease token (``Ordo-Lease-Token``). Once part of them has been
acknowledged the server is killed with SIGKILL (no shutdown, no cleanup; requests in flight get
no answer), then started again on the same database. The SQLite file passes
``PRAGMA integrity_check``; every report answered 2xx is there with the values sent; a report
that was in flight when the server died is either absent or exactly as sent; and each run's next
stage follows its stored reports, so a trainer picks up where the database says it stopped.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    LiveServer,
    migrated_sqlite_url,
    postgres_database,
    require_postgres,
    run_live_server,
)

pytestmark = pytest.mark.slow

TASKS = ("math", "code", "poetry", "chat", "tools", "safety")
STAGES = len(TASKS) + 1  # the baseline, then one stage a task
RUNS = 12
THREADS = 6
KILL_AFTER = 30  # acknowledged reports before SIGKILL (of RUNS * STAGES = 84)
LEASE_HEADER = "Ordo-Lease-Token"
# Rate limits would throttle the burst (ORDO_RATE_LIMIT_*); leases outlive the test.
SERVER_ENV = {"ORDO_RATE_LIMIT_ENABLED": "false", "ORDO_LEASE_SECONDS": "600"}
PLAN_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Trainer:
    """Where the project's runs live and the trainer key that reports on them."""

    runs_url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """``Authorization`` with the trainer key."""
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True, slots=True)
class TrainedRun:
    """A run as created: its id and its holder's lease token."""

    id: str
    lease_token: int


@dataclass(slots=True)
class Ledger:
    """What the trainers sent, and which reports the server acknowledged (thread-safe)."""

    sent: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    acked: set[tuple[str, int]] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    enough: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url_to_crash(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, migrated database of each kind, outliving the servers the test starts."""
    if request.param == "sqlite":
        yield migrated_sqlite_url(tmp_path_factory.mktemp("crash") / "ordo.sqlite")
        return
    with postgres_database(require_postgres()) as url:
        yield url


def test_reports_acknowledged_before_a_sigkill_survive_it(database_url_to_crash: str) -> None:
    url = database_url_to_crash
    ledger = Ledger()
    with run_live_server(url, env=SERVER_ENV) as server:
        trainer, runs = _project_with_runs(server)
        threads = [
            threading.Thread(
                target=_trainer,
                args=(server.base_url, trainer, runs[i::THREADS], ledger),
                name=f"trainer-{i}",
            )
            for i in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        assert ledger.enough.wait(timeout=60), "the burst never reached KILL_AFTER reports"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        for thread in threads:
            thread.join(timeout=30)
    assert ledger.refused == []
    acked = set(ledger.acked)
    assert KILL_AFTER <= len(acked) < RUNS * STAGES  # killed mid-burst

    if make_url(url).get_backend_name() == "sqlite":
        assert _sqlite_check(url) == ("ok", [])

    with run_live_server(url, env=SERVER_ENV) as server:
        stored = _stored_reports(server, trainer, runs)
    found = {key for key in acked if key in stored}
    in_flight = set(stored) - acked
    print(  # noqa: T201 (the figures the issue asks for, with -s)
        f"crash test on {make_url(url).get_backend_name()}: {len(ledger.sent)} sent, "
        f"{len(acked)} answered 2xx, {len(found)} of them found after restart, "
        f"{len(in_flight)} in flight stored too"
    )
    assert found == acked
    for key, evaluations in stored.items():
        assert evaluations == _values(ledger.sent[key]), key


def _project_with_runs(server: LiveServer) -> tuple[Trainer, list[TrainedRun]]:
    """A project with tasks, a trainer key and RUNS fixed runs whose plans are made."""
    with httpx.Client(base_url=server.base_url, headers=server.admin_headers, timeout=60) as http:
        project = _ok(http.post("/v1/projects", json={"name": "crashed"}))
        base = f"/v1/projects/{project['id']}"
        _ok(http.post(f"{base}/tasks", json={"tasks": [{"key": key} for key in TASKS]}))
        trainer = _ok(http.post(f"{base}/keys", json={"name": "trainer", "role": "trainer"}))
        created = [_ok(http.post(f"{base}/runs", json={"adaptive": False})) for _ in range(RUNS)]
        runs = [TrainedRun(run["id"], run["lease"]["token"]) for run in created]
        deadline = time.monotonic() + PLAN_TIMEOUT_S
        for run in runs:  # a fixed run's plan is a job too; report only once it is made
            while _ok(http.get(f"{base}/runs/{run.id}"))["schedule_id"] is None:
                assert time.monotonic() < deadline, "no plan for a fixed run"
                time.sleep(0.05)
    return Trainer(f"{base}/runs", trainer["key"]), runs


def _trainer(base_url: str, trainer: Trainer, runs: list[TrainedRun], ledger: Ledger) -> None:
    """Report every stage of ``runs``, interleaved, until done or the server is gone."""
    rng = random.Random(runs[0].id)
    with httpx.Client(base_url=base_url, headers=trainer.headers, timeout=30) as http:
        for stage in range(STAGES):
            for run in runs:
                body = {
                    "evaluations": [
                        {"task": key, "value": round(rng.uniform(0, 1), 9), "stderr": 0.01}
                        for key in TASKS
                    ],
                    "steps": stage * 100,
                }
                with ledger.lock:
                    ledger.sent[(run.id, stage)] = body
                try:
                    response = http.put(
                        f"{trainer.runs_url}/{run.id}/reports/{stage}",
                        json=body,
                        headers={LEASE_HEADER: str(run.lease_token)},
                    )
                except httpx.TransportError:
                    return  # killed: this report's fate is unknown
                with ledger.lock:
                    if response.is_success:
                        ledger.acked.add((run.id, stage))
                        if len(ledger.acked) >= KILL_AFTER:
                            ledger.enough.set()
                    else:
                        ledger.refused.append(f"{response.status_code} {response.text}")
                        return


def _sqlite_check(url: str) -> tuple[str, list[Any]]:
    """``PRAGMA integrity_check`` and ``foreign_key_check`` of the file as the crash left it."""
    path = make_url(url).database
    assert path is not None
    assert Path(path).exists()
    connection = sqlite3.connect(path)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        foreign_keys = connection.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        connection.close()
    return integrity, foreign_keys


def _stored_reports(
    server: LiveServer, trainer: Trainer, runs: list[TrainedRun]
) -> dict[tuple[str, int], dict[str, tuple[float, float | None]]]:
    """Every stored report's values by (run, stage); checks each run's next stage follows them."""
    stored: dict[tuple[str, int], dict[str, tuple[float, float | None]]] = {}
    with httpx.Client(base_url=server.base_url, headers=trainer.headers, timeout=60) as http:
        for run in runs:
            view = _ok(http.get(f"{trainer.runs_url}/{run.id}"))
            stages = sorted(report["stage"] for report in view["reports"])
            assert stages == list(range(len(stages))), run.id  # no gap
            assert view["next_stage"] == len(stages), run.id
            for report in view["reports"]:
                stored[(run.id, report["stage"])] = {
                    e["task"]: (e["value"], e["stderr"]) for e in report["evaluations"]
                }
    return stored


def _values(body: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    return {e["task"]: (e["value"], e["stderr"]) for e in body["evaluations"]}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.is_success, response.text
    body: dict[str, Any] = response.json()
    return body
