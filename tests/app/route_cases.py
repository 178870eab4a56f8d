"""Sample requests for every API route, for the auth isolation matrix (test_auth_matrix.py).

Every route under ``/v1`` needs one entry here, keyed by ``(method, path template)``; the matrix
test fails for a route without one. Add an entry when you add a route.

``Subject`` is the project under test ("A", with tasks ``math`` and ``code``); ``path``,
``body`` and ``headers`` build the request for it (writes on a run send its lease token).
``admin`` routes answer 403 to A's trainer key; the others answer 2xx to it.
``scope="global"`` marks routes outside any project.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from ordo_server.models import Run
from tests.factories import ProjectKeys

SUBJECT_TASKS = ("math", "code")
# The subject run's lease token, sent by every write on it.
SUBJECT_LEASE_TOKEN = 1


@dataclass(frozen=True, slots=True)
class Subject:
    """What a sample request may refer to: project A's ids and one of its keys' ids."""

    project: ProjectKeys
    trainer_key_id: str
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class RouteCase:
    """How to call one route as project A, and what its own admin key gets back."""

    path: Callable[[Subject], str]
    body: Callable[[Subject], Any] | None = None
    admin: bool = False
    success: int = 200
    scope: Literal["project", "global"] = "project"
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _project(s: Subject) -> str:
    return f"/v1/projects/{s.project.id}"


def create_subject_run(session: Session, project_id: str) -> str:
    """An active run of the project with no plan (enough for every run route); its id."""
    run = Run(
        project_id=project_id,
        adaptive=False,
        strategy="exploit",
        status="active",
        lease_token=SUBJECT_LEASE_TOKEN,
    )
    session.add(run)
    session.flush()
    return run.id


def _run(s: Subject) -> str:
    return f"{_project(s)}/runs/{s.run_id}"


_LEASE = {"Ordo-Lease-Token": str(SUBJECT_LEASE_TOKEN)}
_BASELINE = {"evaluations": [{"task": "math", "value": 0.5}, {"task": "code", "value": 0.4}]}


ROUTE_CASES: dict[tuple[str, str], RouteCase] = {
    ("POST", "/v1/projects"): RouteCase(
        path=lambda s: "/v1/projects",
        body=lambda s: {"name": "matrix-new"},
        admin=True,
        success=201,
        scope="global",
    ),
    ("GET", "/v1/projects"): RouteCase(path=lambda s: "/v1/projects", scope="global"),
    ("GET", "/v1/projects/{project_id}"): RouteCase(path=_project),
    ("PATCH", "/v1/projects/{project_id}"): RouteCase(
        path=_project, body=lambda s: {"settings": {"max_tasks": 50}}, admin=True
    ),
    ("POST", "/v1/projects/{project_id}/keys"): RouteCase(
        path=lambda s: f"{_project(s)}/keys",
        body=lambda s: {"role": "trainer"},
        admin=True,
        success=201,
    ),
    ("GET", "/v1/projects/{project_id}/keys"): RouteCase(
        path=lambda s: f"{_project(s)}/keys", admin=True
    ),
    ("DELETE", "/v1/projects/{project_id}/keys/{key_id}"): RouteCase(
        path=lambda s: f"{_project(s)}/keys/{s.trainer_key_id}", admin=True, success=204
    ),
    ("POST", "/v1/projects/{project_id}/tasks"): RouteCase(
        path=lambda s: f"{_project(s)}/tasks",
        body=lambda s: {"tasks": [{"key": "poetry"}]},
        admin=True,
        success=201,
    ),
    ("GET", "/v1/projects/{project_id}/tasks"): RouteCase(path=lambda s: f"{_project(s)}/tasks"),
    ("GET", "/v1/projects/{project_id}/tasks/{task_key}"): RouteCase(
        path=lambda s: f"{_project(s)}/tasks/math"
    ),
    ("PATCH", "/v1/projects/{project_id}/tasks/{task_key}"): RouteCase(
        path=lambda s: f"{_project(s)}/tasks/math", body=lambda s: {"weight": 2}, admin=True
    ),
    ("POST", "/v1/projects/{project_id}/priors"): RouteCase(
        path=lambda s: f"{_project(s)}/priors",
        body=lambda s: [{"effect": "L", "dst": "math", "mean": 0.5, "std": 0.1}],
        admin=True,
    ),
    ("GET", "/v1/projects/{project_id}/estimates"): RouteCase(
        path=lambda s: f"{_project(s)}/estimates"
    ),
    ("POST", "/v1/projects/{project_id}/estimates/recompute"): RouteCase(
        path=lambda s: f"{_project(s)}/estimates/recompute", admin=True
    ),
    ("POST", "/v1/projects/{project_id}/runs"): RouteCase(
        path=lambda s: f"{_project(s)}/runs", body=lambda s: {}, success=201
    ),
    ("GET", "/v1/projects/{project_id}/runs"): RouteCase(path=lambda s: f"{_project(s)}/runs"),
    ("GET", "/v1/projects/{project_id}/runs/{run_id}"): RouteCase(path=_run),
    ("GET", "/v1/projects/{project_id}/runs/{run_id}/next"): RouteCase(
        path=lambda s: f"{_run(s)}/next"
    ),
    ("POST", "/v1/projects/{project_id}/runs/{run_id}/heartbeat"): RouteCase(
        path=lambda s: f"{_run(s)}/heartbeat", body=lambda s: {}, headers=_LEASE
    ),
    ("POST", "/v1/projects/{project_id}/runs/{run_id}/complete"): RouteCase(
        path=lambda s: f"{_run(s)}/complete", headers=_LEASE
    ),
    ("POST", "/v1/projects/{project_id}/runs/{run_id}/fail"): RouteCase(
        path=lambda s: f"{_run(s)}/fail", body=lambda s: {"reason": "matrix"}, headers=_LEASE
    ),
    ("PUT", "/v1/projects/{project_id}/runs/{run_id}/reports/{stage}"): RouteCase(
        path=lambda s: f"{_run(s)}/reports/0", body=lambda s: _BASELINE, headers=_LEASE
    ),
    ("GET", "/v1/projects/{project_id}/calibration"): RouteCase(
        path=lambda s: f"{_project(s)}/calibration"
    ),
    ("POST", "/v1/projects/{project_id}/schedules"): RouteCase(
        path=lambda s: f"{_project(s)}/schedules",
        body=lambda s: {"constraints": [{"type": "pinned", "task": "code", "position": "first"}]},
        admin=True,
        success=201,
    ),
    ("GET", "/v1/projects/{project_id}/schedules"): RouteCase(
        path=lambda s: f"{_project(s)}/schedules", query={"page_size": "10"}
    ),
    # A fresh subject has no schedule, so its own keys get the schedule's 404 here: the matrix
    # still checks 401s and the other project's 404; test_schedules.py checks the 200.
    ("GET", "/v1/projects/{project_id}/schedules/{schedule_id}"): RouteCase(
        path=lambda s: f"{_project(s)}/schedules/00000000-0000-4000-8000-000000000000",
        success=404,
    ),
    # Likewise for a job: a fresh subject has none (test_schedule_jobs.py checks the 200).
    ("GET", "/v1/projects/{project_id}/schedules/jobs/{job_id}"): RouteCase(
        path=lambda s: f"{_project(s)}/schedules/jobs/999999999999", success=404
    ),
    ("POST", "/v1/projects/{project_id}/predictions"): RouteCase(
        path=lambda s: f"{_project(s)}/predictions",
        body=lambda s: {"orders": [["math", "code"], ["code", "math"]]},
    ),
}

# Routes outside /v1 with their own check: the metrics token or a global admin key
# (tests/app/test_observability.py).
OPERATOR_PATHS = frozenset({"/metrics"})
# Routes that need no key at all; anything else outside /v1 must be listed here or above.
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/docs-assets/redoc.standalone.js",
        "/static-offline-docs",
        # The dashboard's page and assets: static files; the page reads /v1 with the user's key.
        "/dashboard",
        "/dashboard/",
        "/dashboard/{asset}",
    }
)
