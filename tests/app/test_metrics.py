"""/metrics behind a token (metrics token or global admin key) and Ordo's domain metrics."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ordo_server.app.cli import _multiprocess_metrics
from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.metrics import MULTIPROC_ENV, HttpMetrics, HttpMetricsMiddleware
from ordo_server.app.settings import Settings
from ordo_server.models import Run
from tests.conftest import (
    ADMIN_TOKEN,
    LiveServer,
    migrated_sqlite_url,
    postgres_database,
    require_postgres,
    run_live_server,
)
from tests.factories import ProjectKeys, bearer, create_project_with_keys

METRICS_TOKEN = "metrics-" + secrets.token_hex(16)
TASKS = ("math", "code", "poetry")
PROBLEM = "application/problem+json"
# Every run here keeps its first holder: lease token 1.
LEASE = {"Ordo-Lease-Token": "1"}


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of a /metrics text named ``name`` whose labels include ``labels``
    (0 when none): e.g. the solves of one kind, whatever their method."""
    return sum(
        float(found.value)
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == name and all(found.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The test settings with a metrics token."""
    return Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        metrics_token=METRICS_TOKEN,
        job_thread=False,
    )


# --- HTTP metrics by route template --------------------------------------------------------------


def _failing(request: Request) -> PlainTextResponse:
    raise RuntimeError("the route failed")


def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params.get("item_id", "ok"))


def test_http_metrics_name_the_route_that_answered() -> None:
    """Labels are route templates (never raw paths), an error is a 5xx, a path no route took
    and the probes are not recorded."""
    registry = CollectorRegistry()
    routes = [
        Route("/items/{item_id}", _item),
        Route("/fails", _failing),
        Route("/healthz", _item),
    ]
    metrics = HttpMetrics.in_registry(registry)
    app = HttpMetricsMiddleware(Starlette(routes=routes), metrics=metrics)
    with TestClient(app, raise_server_exceptions=False) as client:
        for item in ("a", "b", "c"):
            assert client.get(f"/items/{item}").status_code == 200
        refused = client.post("/items/a", content=b"12345")  # the route matched its path only
        assert refused.status_code == 405
        assert client.get("/fails").status_code == 500
        assert client.get("/nowhere").status_code == 404
        assert client.get("/healthz").status_code == 200
    text = generate_latest(registry).decode()
    handlers = {
        found.labels["handler"]
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if "handler" in found.labels
    }
    assert handlers == {"/items/{item_id}", "/fails"}
    item = "/items/{item_id}"
    assert sample(text, "http_requests_total", handler=item, method="GET", status="2xx") == 3.0
    assert sample(text, "http_requests_total", handler=item, method="POST", status="4xx") == 1.0
    assert sample(text, "http_requests_total", handler="/fails", status="5xx") == 1.0
    assert sample(text, "http_request_duration_seconds_count", handler=item, method="GET") == 3.0
    assert sample(text, "http_request_duration_seconds_sum", handler=item, method="GET") > 0.0
    assert sample(text, "http_request_duration_highr_seconds_count") == 5.0
    # Sizes are the Content-Length headers: the POST's 5 bytes in; "a", "b", "c" out, and the
    # answers of the 405 and the 500.
    assert sample(text, "http_request_size_bytes_sum", handler=item) == 5.0
    assert sample(text, "http_request_size_bytes_count", handler=item) == 4.0
    assert sample(text, "http_response_size_bytes_sum", handler=item) == 3 + len(refused.content)


# --- /metrics needs a token ----------------------------------------------------------------------


def test_metrics_token_must_be_long() -> None:
    with pytest.raises(ValidationError, match="ORDO_METRICS_TOKEN must be at least 32") as info:
        Settings(metrics_token="short-token")
    assert "short-token" not in str(info.value)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer wrong-" + "x" * 32, "Basic dXNlcjpwYXNz", f"Bearer {METRICS_TOKEN}x"],
    ids=["none", "empty", "wrong", "basic", "token-plus-one"],  # stable ids (xdist)
)
def test_metrics_without_a_valid_token_is_401(
    client: TestClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == 'Bearer realm="ordo"'
    assert response.json()["code"] == "unauthorized"
    assert "ordo_" not in response.text.replace('"code":"unauthorized"', "")


def test_metrics_refuse_project_keys(client: TestClient, project: ProjectKeys) -> None:
    for headers in (project.admin, project.trainer):
        assert client.get("/metrics", headers=headers).status_code == 401


def test_metrics_accept_the_metrics_token_and_global_admin_keys(
    client: TestClient, global_admin_key: str
) -> None:
    for token in (METRICS_TOKEN, ADMIN_TOKEN, global_admin_key):
        response = client.get("/metrics", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        assert "# TYPE ordo_reports_stored_total counter" in response.text


def test_metrics_stay_out_of_the_spec(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


# --- domain metrics ------------------------------------------------------------------------------


def _report(client: TestClient, project: ProjectKeys, run_id: str, stage: int) -> Any:
    body = {"evaluations": [{"task": key, "value": 0.5 + 0.01 * stage} for key in TASKS]}
    response = client.put(
        f"/v1/projects/{project.id}/runs/{run_id}/reports/{stage}",
        json=body,
        headers={**project.trainer, **LEASE},
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_domain_metrics_count_reports_replans_and_solves(
    client: TestClient, session: Session
) -> None:
    project = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    metrics = bearer(METRICS_TOKEN)
    before = client.get("/metrics", headers=metrics).text
    assert sample(before, "ordo_queue_depth") == 0.0
    # Exported from the start (tests/app/test_rate_limits.py may have counted 429s already).
    assert "ordo_rate_limited_requests_total" in before
    assert "Requests answered 429" in before
    assert "Plan jobs waiting" in before
    run = client.post(
        f"/v1/projects/{project.id}/runs", json={"adaptive": True}, headers=project.trainer
    )
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    assert _report(client, project, run_id, 0)["plan_pending"] is False  # baseline: no re-plan
    assert _report(client, project, run_id, 1)["plan_pending"] is True  # a re-plan job
    _report(client, project, run_id, 1)  # a replay stores nothing
    # The job runs in the request that waits for it.
    next_stage = client.get(
        f"/v1/projects/{project.id}/runs/{run_id}/next", headers=project.trainer
    )
    assert next_stage.json()["plan_pending"] is False
    after = client.get("/metrics", headers=metrics).text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("ordo_reports_stored_total") == 2.0
    assert delta("ordo_replans_total", outcome="replanned") == 1.0
    assert delta("ordo_replans_total", outcome="kept") == 0.0
    assert delta("ordo_solve_duration_seconds_count", kind="run") == 1.0
    assert delta("ordo_solve_duration_seconds_count", kind="replan") == 1.0
    assert delta("ordo_solve_duration_seconds_sum", kind="replan") > 0.0
    assert delta("ordo_stale_runs_observed_total", event="report") == 0.0  # the lease was live


def test_stale_runs_are_counted_once_committed(client: TestClient, session: Session) -> None:
    tasked = create_project_with_keys(session, task_keys=TASKS)
    session.commit()
    run = client.post(
        f"/v1/projects/{tasked.id}/runs", json={"client_id": "job-1"}, headers=tasked.trainer
    ).json()
    session.execute(update(Run).where(Run.id == run["id"]).values(lease_expires_at=Run.created_at))
    session.commit()
    metrics = bearer(METRICS_TOKEN)
    before = client.get("/metrics", headers=metrics).text
    heartbeat = client.post(
        f"/v1/projects/{tasked.id}/runs/{run['id']}/heartbeat",
        headers={**tasked.trainer, **LEASE},
    )
    assert heartbeat.status_code == 200, heartbeat.text
    after = client.get("/metrics", headers=metrics).text
    labels = {"event": "heartbeat"}
    assert sample(after, "ordo_stale_runs_observed_total", **labels) - sample(
        before, "ordo_stale_runs_observed_total", **labels
    ) == pytest.approx(1.0)


def test_after_commit_records_on_commit_only(session: Session) -> None:
    """A rolled-back transaction's records are dropped, not carried into the next commit."""
    recorded: list[str] = []
    session.execute(select(1))
    after_commit(session, lambda: recorded.append("rolled back"))
    session.rollback()
    assert recorded == []
    session.execute(select(1))
    after_commit(session, lambda: recorded.append("committed"))
    assert recorded == []
    session.commit()
    assert recorded == ["committed"]


# --- live servers --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        yield migrated_sqlite_url(tmp_path / "ordo.sqlite")
        return
    with postgres_database(require_postgres()) as url:
        yield url


def _live_metrics(server: LiveServer, token: str | None) -> httpx.Response:
    headers = bearer(token) if token else {}
    return httpx.get(f"{server.base_url}/metrics", headers=headers, timeout=10)


def test_live_metrics_need_a_token_and_sum_over_workers(server_url: str, tmp_path: Path) -> None:
    """Two workers with PROMETHEUS_MULTIPROC_DIR: /metrics counts every worker's requests."""
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = {"ORDO_METRICS_TOKEN": METRICS_TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with run_live_server(server_url, env=env, workers=2) as server:
        assert _live_metrics(server, None).status_code == 401
        assert _live_metrics(server, "wrong-" + "x" * 40).status_code == 401
        assert _live_metrics(server, ADMIN_TOKEN).status_code == 200
        with httpx.Client(base_url=server.base_url, headers=server.admin_headers) as http:
            project = http.post("/v1/projects", json={"name": "metrics"}).json()
            keys = [{"key": key} for key in TASKS]
            assert http.post(f"/v1/projects/{project['id']}/tasks", json={"tasks": keys}).is_success
            trainer = http.post(
                f"/v1/projects/{project['id']}/keys", json={"role": "trainer", "name": "t"}
            ).json()["key"]
            for _ in range(20):  # fresh connections: spread over both workers
                assert httpx.get(f"{server.base_url}/v1/projects", headers=server.admin_headers)
        with httpx.Client(base_url=server.base_url, headers=bearer(trainer)) as http:
            runs = f"/v1/projects/{project['id']}/runs"
            run_id = http.post(runs, json={"adaptive": True}).json()["id"]
            for stage in (0, 1):
                body = {"evaluations": [{"task": key, "value": 0.5 + stage} for key in TASKS]}
                url = f"{runs}/{run_id}/reports/{stage}"
                assert http.put(url, json=body, headers=LEASE).is_success
            # The re-plan is a job of either worker's thread; `next` waits for it.
            assert http.get(f"{runs}/{run_id}/next").json()["plan_pending"] is False
        text = _live_metrics(server, METRICS_TOKEN).text
    labels = {"handler": "/v1/projects", "method": "GET", "status": "2xx"}
    assert sample(text, "http_requests_total", **labels) == 20.0
    assert sample(text, "ordo_reports_stored_total") == 2.0
    assert sample(text, "ordo_replans_total", outcome="replanned") == 1.0
    assert sample(text, "ordo_solve_duration_seconds_count", kind="run") == 1.0
    assert sample(text, "ordo_solve_duration_seconds_count", kind="replan") == 1.0
    assert sample(text, "ordo_queue_depth") == 0.0


def test_ordo_serve_gives_several_workers_a_temporary_multiprocess_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with _multiprocess_metrics(1):
        assert MULTIPROC_ENV not in os.environ
    with _multiprocess_metrics(3):
        directory = Path(os.environ[MULTIPROC_ENV])
        assert directory.is_dir()
        assert list(directory.iterdir()) == []
    assert MULTIPROC_ENV not in os.environ
    assert not directory.exists()
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with _multiprocess_metrics(3):
        assert os.environ[MULTIPROC_ENV] == str(tmp_path)
    assert tmp_path.is_dir()
