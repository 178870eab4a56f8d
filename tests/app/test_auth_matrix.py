"""The tenant isolation matrix over every route (reliability.md S2, S3).

For each route and each credential: own key -> 2xx, another project's key -> 404 (byte-identical
to an unknown project), no key -> 401, malformed key -> 401, revoked key -> 401, trainer key on
an admin route -> 403. Routes come from ``app.routes``, so a new route without an entry in
``route_cases.ROUTE_CASES`` fails ``test_every_route_has_a_case``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ordo_server.app.main import create_app
from ordo_server.app.settings import Settings
from tests.app.route_cases import (
    OPERATOR_PATHS,
    PUBLIC_PATHS,
    ROUTE_CASES,
    SUBJECT_TASKS,
    RouteCase,
    Subject,
    create_subject_run,
)
from tests.factories import ProjectKeys, bearer, create_project_with_keys

MALFORMED = ("Bearer not-a-key", "Bearer ordo_zz_short", "Basic dXNlcjpwYXNz", "Bearer ")


def _paths(app: FastAPI) -> set[tuple[str, str]]:
    """``(method, path)`` of every route, included routers flattened (methods ``*`` for mounts)."""
    found: set[tuple[str, str]] = set()
    for context in iter_route_contexts(app.routes):
        path = context.path or ""
        found.update((method, path) for method in (context.methods or {"*"}))
    return found


def _api_routes(app: FastAPI) -> set[tuple[str, str]]:
    return {(method, path) for method, path in _paths(app) if path.startswith("/v1")}


def test_every_route_has_a_case() -> None:
    app = create_app(Settings(database_url="sqlite://"))
    missing = _api_routes(app) - set(ROUTE_CASES)
    assert not missing, f"add these routes to tests/app/route_cases.py: {sorted(missing)}"
    stale = set(ROUTE_CASES) - _api_routes(app)
    assert not stale, f"route_cases.py lists routes that no longer exist: {sorted(stale)}"


def test_every_other_route_is_declared_public() -> None:
    app = create_app(Settings(database_url="sqlite://"))
    others = {path for _, path in _paths(app) if not path.startswith("/v1")}
    declared = PUBLIC_PATHS | OPERATOR_PATHS
    assert others <= declared, f"undeclared non-API routes: {sorted(others - declared)}"


def _call(client: TestClient, method: str, case: RouteCase, subject: Subject, headers: Any) -> Any:
    body = case.body(subject) if case.body else None
    sent = {**case.headers, **(headers or {})}
    return client.request(method, case.path(subject), json=body, params=case.query, headers=sent)


def _with_project(case: RouteCase, subject: Subject, project_id: str) -> str:
    return case.path(subject).replace(subject.project.id, project_id, 1)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTE_CASES))
def test_isolation_matrix(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    method: str,
    path: str,
) -> None:
    case = ROUTE_CASES[(method, path)]
    a = create_project_with_keys(session, task_keys=SUBJECT_TASKS)
    b = create_project_with_keys(session, task_keys=SUBJECT_TASKS)
    run_id = create_subject_run(session, a.id)
    session.commit()
    subject = Subject(project=a, trainer_key_id=a.trainer_token.split("_")[1], run_id=run_id)

    # Failing credentials first: none of them may change anything.
    assert _call(client, method, case, subject, None).status_code == 401
    for header in MALFORMED:
        response = _call(client, method, case, subject, {"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.headers["content-type"] == "application/problem+json"
    assert _call(client, method, case, subject, bearer(a.revoked_token)).status_code == 401

    if case.scope == "project":
        _check_other_project_is_404(client, method, case, subject, b)
    expected_trainer = 403 if case.admin else case.success
    assert _call(client, method, case, subject, a.trainer).status_code == expected_trainer
    if case.scope == "global" and case.admin:
        assert _call(client, method, case, subject, a.admin).status_code == 403
        own = admin_headers
    else:
        own = admin_headers if case.scope == "global" else a.admin
    response = _call(client, method, case, subject, own)
    assert response.status_code == case.success, response.text


def _check_other_project_is_404(
    client: TestClient, method: str, case: RouteCase, subject: Subject, other: ProjectKeys
) -> None:
    for headers in (other.admin, other.trainer):
        response = _call(client, method, case, subject, headers)
        assert response.status_code == 404, response.text
        unknown_path = _with_project(case, subject, str(uuid.uuid4()))
        body = case.body(subject) if case.body else None
        unknown = client.request(method, unknown_path, json=body, headers=headers)
        assert unknown.status_code == 404
        assert response.content == unknown.content
    # B's own view of itself is untouched and still reachable.
    own_project = client.get(f"/v1/projects/{other.id}", headers=other.trainer)
    assert own_project.status_code == 200
