"""Input no database can store, unbounded numbers and unparsable JSON: 422 naming the field.

NUL and unpaired surrogates in bodies (fields, nested values, keys), path and query parameters;
non-finite numbers and deep nesting in free-form JSON; out-of-range numeric parameters; bodies
with huge integers, nesting too deep to parse or bytes that are not UTF-8. Each case runs against
SQLite and PostgreSQL and checks that no row changed.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ordo_server.app.schemas.common import MAX_JSON_DEPTH, MAX_OFFSET, UNSTORABLE_TEXT
from ordo_server.app.schemas.estimate import MIN_STD
from ordo_server.models.base import Base
from tests.app.route_cases import ROUTE_CASES, SUBJECT_TASKS, Subject, create_subject_run
from tests.factories import create_project_with_keys

PROBLEM = "application/problem+json"
NESTED_TOO_DEEP = f"Nested deeper than {MAX_JSON_DEPTH} levels"


@pytest.fixture
def subject(session: Session) -> Subject:
    """A project with tasks math and code, and an active run without a plan."""
    keys = create_project_with_keys(session, task_keys=SUBJECT_TASKS)
    run_id = create_subject_run(session, keys.id)
    session.commit()
    return Subject(project=keys, trainer_key_id=keys.trainer_token.split("_")[1], run_id=run_id)


def _rows(session: Session) -> dict[str, list[str]]:
    """Every row of every table, to compare before and after a refused request."""
    return {
        table.name: sorted(repr(tuple(row)) for row in session.execute(select(table)))
        for table in Base.metadata.sorted_tables
    }


def _send(client: TestClient, method: str, url: str, body: Any, headers: dict[str, str]) -> Any:
    """``body`` as ASCII JSON: NUL and lone surrogates travel as ``\\u`` escapes."""
    return client.request(
        method,
        url,
        content=json.dumps(body).encode("ascii"),
        headers={**headers, "content-type": "application/json"},
    )


def _send_raw(client: TestClient, url: str, content: bytes, headers: dict[str, str]) -> Any:
    return client.post(
        url, content=content, headers={**headers, "content-type": "application/json"}
    )


def _errors(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "validation_failed"
    errors: list[dict[str, str]] = problem["errors"]
    return errors


def _project(s: Subject) -> str:
    return f"/v1/projects/{s.project.id}"


# (method, path, body, field): each body holds one thing no database can store.
UNSTORABLE_BODIES: dict[str, tuple[str, Any, Any, str]] = {
    "project description": (
        "POST",
        lambda s: "/v1/projects",
        {"name": "nul-project", "description": "RL\u0000 curriculum"},
        "description",
    ),
    "project description, lone surrogate": (
        "POST",
        lambda s: "/v1/projects",
        {"name": "surrogate-project", "description": "half \ud800 a pair"},
        "description",
    ),
    "run fail reason": (
        "POST",
        lambda s: f"{_project(s)}/runs/{s.run_id}/fail",
        {"reason": "oom\u0000"},
        "reason",
    ),
    "task metadata, nested value": (
        "POST",
        lambda s: f"{_project(s)}/tasks",
        {"tasks": [{"key": "poetry", "metadata": {"a": {"b": ["fine", "x\u0000"]}}}]},
        "tasks[0].metadata.a.b[1]",
    ),
    "task metadata, nested key": (
        "POST",
        lambda s: f"{_project(s)}/tasks",
        {"tasks": [{"key": "poetry"}, {"key": "prose", "metadata": {"a": [{"k\u0000": 1}]}}]},
        "tasks[1].metadata.a[0].k\\u0000",
    ),
    "task metadata, lone surrogate": (
        "PATCH",
        lambda s: f"{_project(s)}/tasks/math",
        {"metadata": {"source": "\udc00"}},
        "metadata.source",
    ),
    "key name": (
        "POST",
        lambda s: f"{_project(s)}/keys",
        {"name": "\u0000", "role": "trainer"},
        "name",
    ),
    "schedule label": (
        "POST",
        lambda s: f"{_project(s)}/schedules",
        {"label": "nightly\u0000"},
        "label",
    ),
    "nested schedule of a run": (
        "POST",
        lambda s: f"{_project(s)}/runs",
        {"schedule": {"label": "\u0000"}},
        "schedule.label",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE_BODIES))
def test_unstorable_text_in_a_body_is_422_naming_the_field(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    subject: Subject,
    case: str,
) -> None:
    method, path, body, field = UNSTORABLE_BODIES[case]
    headers = admin_headers if path(subject) == "/v1/projects" else subject.project.admin
    before = _rows(session)
    response = _send(client, method, path(subject), body, headers)
    assert _errors(response) == [{"field": field, "reason": UNSTORABLE_TEXT}]
    assert _rows(session) == before


def test_report_with_nul_in_a_task_key_is_422(
    client: TestClient, session: Session, subject: Subject
) -> None:
    before = _rows(session)
    body = {"evaluations": [{"task": "ma\u0000th", "value": 0.5}, {"task": "code", "value": 0.4}]}
    url = f"{_project(subject)}/runs/{subject.run_id}/reports/0"
    response = _send(client, "PUT", url, body, subject.project.trainer)
    assert [e["field"] for e in _errors(response)] == ["evaluations[0].task"]
    assert _rows(session) == before


def test_a_lone_surrogate_in_a_metadata_key_is_422(
    client: TestClient, session: Session, subject: Subject
) -> None:
    before = _rows(session)
    body = {"tasks": [{"key": "poetry", "metadata": {"\ud800": 1}}]}
    response = _send(client, "POST", f"{_project(subject)}/tasks", body, subject.project.admin)
    [error] = _errors(response)
    # pydantic refuses the key itself, and names it by a lossy copy: only the prefix is exact.
    assert error["field"].startswith("tasks[0].metadata.")
    assert error["reason"] == UNSTORABLE_TEXT
    assert _rows(session) == before


def test_nul_in_any_path_parameter_of_any_route_is_422(
    client: TestClient, session: Session, subject: Subject
) -> None:
    valid = {
        "project_id": subject.project.id,
        "key_id": subject.trainer_key_id,
        "task_key": "math",
        "run_id": subject.run_id,
        "stage": "0",
        "schedule_id": str(uuid.uuid4()),
        "job_id": "999999999999",
    }
    before = _rows(session)
    checked = 0
    for (method, template), case in sorted(ROUTE_CASES.items()):
        body = case.body(subject) if case.body else None
        for name in re.findall(r"{(\w+)}", template):
            url = template.format(**{**valid, name: "x%00y"})
            response = client.request(
                method, url, json=body, params=case.query, headers=subject.project.admin
            )
            errors = _errors(response)
            assert [e["field"] for e in errors] == [f"path.{name}"], (method, template)
            if name != "stage":  # an integer: the NUL fails its parsing first
                assert errors[0]["reason"] == UNSTORABLE_TEXT
            checked += 1
    assert checked >= len(ROUTE_CASES)
    assert _rows(session) == before


@pytest.mark.parametrize(
    ("path", "param"),
    [("runs", "page_token"), ("schedules", "page_token"), ("schedules", "run_id")],
)
def test_nul_in_a_query_parameter_is_422(
    client: TestClient, subject: Subject, path: str, param: str
) -> None:
    response = client.get(
        f"{_project(subject)}/{path}", params={param: "a\u0000b"}, headers=subject.project.admin
    )
    assert _errors(response) == [{"field": f"query.{param}", "reason": UNSTORABLE_TEXT}]


def test_a_forged_runs_page_token_carrying_nul_is_422(client: TestClient, subject: Subject) -> None:
    cursor = json.dumps(["2026-01-01T00:00:00+00:00", "run\u0000"]).encode()
    token = base64.urlsafe_b64encode(cursor).decode().rstrip("=")
    response = client.get(
        f"{_project(subject)}/runs", params={"page_token": token}, headers=subject.project.admin
    )
    assert [e["field"] for e in _errors(response)] == ["page_token"]


# --- numeric parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/projects?offset=9223372036854775808", "query.offset"),
        (f"/v1/projects?offset={MAX_OFFSET + 1}", "query.offset"),
        ("/v1/projects?offset=-1", "query.offset"),
        ("/v1/projects?limit=1001", "query.limit"),
        ("{project}/runs?page_size=100000000000000000000", "query.page_size"),
        ("{project}/schedules?page_size=1001", "query.page_size"),
        ("{project}/calibration?limit=9223372036854775808", "query.limit"),
        ("{run}/reports/1001", "path.stage"),
        ("{run}/reports/9223372036854775808", "path.stage"),
        ("{run}/reports/-1", "path.stage"),
    ],
)
def test_numeric_parameters_out_of_range_are_422(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    subject: Subject,
    path: str,
    field: str,
) -> None:
    url = path.format(project=_project(subject), run=f"{_project(subject)}/runs/{subject.run_id}")
    headers = admin_headers if url.startswith("/v1/projects?") else subject.project.admin
    before = _rows(session)
    body = {"evaluations": [{"task": "math", "value": 0.5}, {"task": "code", "value": 0.4}]}
    method = "PUT" if "/reports/" in url else "GET"
    response = client.request(method, url, json=body if method == "PUT" else None, headers=headers)
    assert [e["field"] for e in _errors(response)] == [field]
    assert _rows(session) == before


def test_the_largest_offset_is_accepted(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.get("/v1/projects", params={"offset": MAX_OFFSET}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json() == []


# --- bodies Python's JSON parser refuses, and free-form JSON --------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            b'{"name": "big", "settings": {"rho": ' + b"1" * 5000 + b"}}",
            "JSON numbers must have at most 4300 digits",
        ),
        (
            b'{"name": "deep", "settings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "JSON nested too deeply to parse",
        ),
        (b'{"name": "latin-\xff"}', "The body is not valid UTF-8"),
    ],
    ids=["huge-integer", "deep-nesting", "not-utf8"],
)
def test_unparsable_json_is_422_naming_the_body(
    client: TestClient,
    session: Session,
    admin_headers: dict[str, str],
    content: bytes,
    reason: str,
) -> None:
    before = _rows(session)
    response = _send_raw(client, "/v1/projects", content, admin_headers)
    assert _errors(response) == [{"field": "body", "reason": reason}]
    assert _rows(session) == before


def test_a_huge_integer_in_task_metadata_is_422(
    client: TestClient, session: Session, subject: Subject
) -> None:
    before = _rows(session)
    content = b'{"tasks": [{"key": "poetry", "metadata": {"n": ' + b"9" * 5000 + b"}}]}"
    response = _send_raw(client, f"{_project(subject)}/tasks", content, subject.project.admin)
    assert [e["field"] for e in _errors(response)] == ["body"]
    assert _rows(session) == before


def _nested(levels: int) -> dict[str, Any]:
    """Metadata ``levels`` containers deep, counting the metadata object itself."""
    value: Any = "leaf"
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


def test_task_metadata_nests_at_most_max_json_depth(
    client: TestClient, session: Session, subject: Subject
) -> None:
    url = f"{_project(subject)}/tasks"
    before = _rows(session)
    too_deep = {"tasks": [{"key": "poetry", "metadata": _nested(MAX_JSON_DEPTH + 1)}]}
    response = _send(client, "POST", url, too_deep, subject.project.admin)
    assert _errors(response) == [{"field": "tasks[0].metadata", "reason": NESTED_TOO_DEEP}]
    assert _rows(session) == before

    deepest = _nested(MAX_JSON_DEPTH)
    response = _send(
        client,
        "POST",
        url,
        {"tasks": [{"key": "poetry", "metadata": deepest}]},
        subject.project.admin,
    )
    assert response.status_code == 201, response.text
    stored = client.get(f"{url}/poetry", headers=subject.project.admin)
    assert stored.json()["metadata"] == deepest


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_numbers_in_task_metadata_are_422(
    client: TestClient, session: Session, subject: Subject, literal: bytes
) -> None:
    before = _rows(session)
    content = b'{"tasks": [{"key": "poetry", "metadata": {"a": [1, ' + literal + b"]}}]}"
    response = _send_raw(client, f"{_project(subject)}/tasks", content, subject.project.admin)
    assert _errors(response) == [
        {"field": "tasks[0].metadata.a[1]", "reason": "Numbers must be finite"}
    ]
    assert _rows(session) == before


@pytest.mark.parametrize("field", ["default_prior_std", "default_noise_std"])
def test_a_std_whose_square_underflows_is_422_for_project_settings(
    client: TestClient, admin_headers: dict[str, str], field: str
) -> None:
    """A denormal std once passed ``> 0``: its variance underflowed to zero, every schedule job
    of the project crashed and its predictions answered 500 (found by schemathesis)."""
    body = {"name": f"tiny-{uuid.uuid4().hex[:8]}", "settings": {field: 5e-324}}

    response = client.post("/v1/projects", json=body, headers=admin_headers)

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [f"settings.{field}"]


def test_a_prior_std_whose_square_underflows_is_422(client: TestClient, subject: Subject) -> None:
    prior = {"effect": "L", "dst": "math", "mean": 0.5, "std": 5e-324}

    response = client.post(
        f"{_project(subject)}/priors", json=[prior], headers=subject.project.admin
    )

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["[0].std"]


def test_the_smallest_stds_still_schedule_and_predict(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    settings = {"default_prior_std": MIN_STD, "default_noise_std": MIN_STD}
    name = f"smallest-{uuid.uuid4().hex[:8]}"
    created = client.post(
        "/v1/projects", json={"name": name, "settings": settings}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    base = f"/v1/projects/{created.json()['id']}"
    keys = ["math", "code", "poetry"]
    tasks = {"tasks": [{"key": key} for key in keys]}
    assert client.post(f"{base}/tasks", json=tasks, headers=admin_headers).status_code == 201
    prior = [{"effect": "F", "src": "math", "dst": "code", "mean": 0.2, "std": MIN_STD}]
    assert client.post(f"{base}/priors", json=prior, headers=admin_headers).status_code == 200

    schedule = client.post(f"{base}/schedules", json={}, headers=admin_headers)
    predicted = client.post(f"{base}/predictions", json={"orders": [keys]}, headers=admin_headers)

    assert schedule.status_code == 201, schedule.text
    assert predicted.status_code == 200, predicted.text
    assert sorted(schedule.json()["order"]) == sorted(keys)
