"""Schedules: solving with every objective and constraint, history paging, errors.

The effects are the worked example of docs/design.md §2 (math, code, poetry; rho = 0, unit
weights) imported as priors. Without observations the posterior equals the prior, so every
optimum below is hand-computed from ``S_j = L[j] + sum_{i after j} B[i][j]``: (math, code,
poetry) is worth 1.51, (poetry, math, code) 1.35, and the other four orders 1.49 (code, math,
poetry), 1.43 (code, poetry, math), 1.41 (math, poetry, code) and 1.33 (poetry, code, math).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.schemas.schedule import ScheduleCreate
from ordo_server.app.security import Role
from ordo_server.app.services import schedules as schedule_service
from ordo_server.app.services.auth import Principal, ProjectContext
from ordo_server.models import Run, Schedule
from tests.conftest import LiveServer
from tests.factories import ProjectKeys, bearer, store_plans

TASKS = [
    {"key": "math", "kind": "structured"},
    {"key": "code", "kind": "structured"},
    {"key": "poetry", "kind": "open_ended"},
]
LEVELS = {"math": 0.60, "code": 0.40, "poetry": 0.50}
# B[src][dst]: change of dst's utility when src is trained after dst.
BACKWARD = {
    ("code", "poetry"): -0.10,
    ("math", "poetry"): -0.08,
    ("poetry", "math"): -0.02,
    ("code", "math"): 0.03,
    ("math", "code"): 0.01,
    ("poetry", "code"): 0.0,
}
STD = 0.001  # prior std of every imported effect


def worked_example_priors(
    std: dict[tuple[str, str], float] | None = None,
) -> list[dict[str, Any]]:
    """The worked example as long-form priors; ``std`` overrides single B cells."""
    levels = [{"effect": "L", "dst": k, "mean": m, "std": STD} for k, m in LEVELS.items()]
    backward = [
        {
            "effect": "B",
            "src": src,
            "dst": dst,
            "mean": mean,
            "std": (std or {}).get((src, dst), STD),
        }
        for (src, dst), mean in BACKWARD.items()
    ]
    return levels + backward


def setup_worked_example(
    client: TestClient, project: ProjectKeys, priors: list[dict[str, Any]] | None = None
) -> None:
    """Create the three tasks and import their priors through the API."""
    url = f"/v1/projects/{project.id}"
    created = client.post(f"{url}/tasks", json={"tasks": TASKS}, headers=project.admin)
    assert created.status_code == 201, created.text
    imported = client.post(
        f"{url}/priors", json=priors or worked_example_priors(), headers=project.admin
    )
    assert imported.status_code == 200, imported.text


@pytest.fixture
def example(client: TestClient, project: ProjectKeys) -> ProjectKeys:
    """``project`` with the worked example's tasks and priors (estimates version 1)."""
    setup_worked_example(client, project)
    return project


def _url(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/schedules"


def solve(client: TestClient, project: ProjectKeys, **body: Any) -> Any:
    """POST a schedule and return the response."""
    return client.post(_url(project), json=body, headers=project.admin)


def solved(client: TestClient, project: ProjectKeys, **body: Any) -> dict[str, Any]:
    """POST a schedule that must succeed; its body."""
    response = solve(client, project, **body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# --- solving -------------------------------------------------------------------------------------


def test_expected_optimum_is_the_worked_example(client: TestClient, example: ProjectKeys) -> None:
    body = solved(client, example, label="first plan")
    assert body["order"] == ["math", "code", "poetry"]
    assert body["objective"] == pytest.approx(1.51)
    assert body["status"] == "optimal"
    assert body["bound"] == pytest.approx(1.51, abs=1e-6)
    assert body["gap"] == pytest.approx(0.0, abs=1e-6)
    assert body["version"] == 1
    assert body["estimates_version"] == 1
    assert body["label"] == "first plan"
    assert (body["run_id"], body["parent_id"]) == (None, None)
    predicted = {p["task"]: p for p in body["predicted"]["tasks"]}
    assert [p["task"] for p in body["predicted"]["tasks"]] == body["order"]
    assert predicted["math"]["mean"] == pytest.approx(0.61)
    assert predicted["code"]["mean"] == pytest.approx(0.40)
    assert predicted["poetry"]["mean"] == pytest.approx(0.50)
    # math carries L and two B cells: Var = 3 * STD^2.
    assert predicted["math"]["std"] == pytest.approx(STD * 3**0.5)
    assert predicted["math"]["upper"] == pytest.approx(0.61 + 1.959964 * STD * 3**0.5)
    assert body["predicted"]["objective"]["mean"] == pytest.approx(1.51)


def test_stored_record_equals_the_response(
    client: TestClient, example: ProjectKeys, session: Session
) -> None:
    body = solved(client, example, seed=3, time_limit_s=2.5)
    fetched = client.get(f"{_url(example)}/{body['id']}", headers=example.trainer)
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert body["request"] == {
        "objective": "expected",
        "model": "ensemble",
        "rho": 0.0,
        "kappa": 0.0,
        "constraints": [],
        "tasks": None,
        "time_limit_s": 2.5,
        "seed": 3,
        "label": "",
        "prefix": [],
    }
    row = session.scalar(select(Schedule).where(Schedule.id == body["id"]))
    assert row is not None
    assert (row.project_id, row.estimates_version, row.order) == (example.id, 1, body["order"])


def test_new_priors_bump_the_estimates_version_a_schedule_records(
    client: TestClient, example: ProjectKeys
) -> None:
    assert solved(client, example)["estimates_version"] == 1
    # Poetry after math now helps math (+0.10 instead of -0.02): the optimum gains 0.12.
    cell = {"effect": "B", "src": "poetry", "dst": "math", "mean": 0.10, "std": STD}
    client.post(f"/v1/projects/{example.id}/priors", json=[cell], headers=example.admin)
    body = solved(client, example)
    assert body["estimates_version"] == 2
    assert body["version"] == 2
    assert body["objective"] == pytest.approx(1.63)


@pytest.mark.parametrize(
    ("objective", "extra", "value", "orders"),
    [
        ("expected", {}, 1.51, [["math", "code", "poetry"]]),
        # The worst task is code at 0.40 unless math comes after it (+0.01); poetry then at 0.50
        # or 0.42, math at 0.58 or 0.60: two orders tie at 0.41.
        ("maximin", {}, 0.41, [["code", "math", "poetry"], ["code", "poetry", "math"]]),
        ("thompson", {"seed": 11}, None, None),
    ],
)
def test_each_objective(
    client: TestClient,
    example: ProjectKeys,
    objective: str,
    extra: dict[str, Any],
    value: float | None,
    orders: list[list[str]] | None,
) -> None:
    body = solved(client, example, objective=objective, **extra)
    assert body["request"]["objective"] == objective
    assert sorted(body["order"]) == ["code", "math", "poetry"]
    if value is not None:
        assert body["objective"] == pytest.approx(value)
        assert body["order"] in (orders or [])


def test_mean_variance_avoids_the_uncertain_pair(client: TestClient, project: ProjectKeys) -> None:
    # B[poetry][math] counts whenever poetry follows math; with std 0.5 and kappa 1 it costs 0.25
    # in (math, code, poetry), (math, poetry, code) and (code, math, poetry). The best of the
    # rest is (code, poetry, math) = 1.43, minus kappa times 6 variances of STD^2.
    setup_worked_example(client, project, worked_example_priors({("poetry", "math"): 0.5}))
    body = solved(client, project, objective="mean_variance", kappa=1.0)
    assert body["order"] == ["code", "poetry", "math"]
    assert body["objective"] == pytest.approx(1.43 - 6 * STD**2)
    expected = solved(client, project, objective="expected")
    assert expected["order"] == ["math", "code", "poetry"]


def test_thompson_is_deterministic_for_a_seed(client: TestClient, project: ProjectKeys) -> None:
    # Wide posteriors, so that samples disagree about the best order.
    setup_worked_example(client, project, worked_example_priors(dict.fromkeys(BACKWARD, 0.3)))
    first = solved(client, project, objective="thompson", seed=5)
    again = solved(client, project, objective="thompson", seed=5)
    assert (again["order"], again["objective"]) == (first["order"], first["objective"])
    assert again["predicted"] == first["predicted"]
    samples = {
        (tuple(b["order"]), b["objective"])
        for b in (solved(client, project, objective="thompson", seed=s) for s in range(8))
    }
    assert len(samples) > 1, "different seeds should draw different models"


@pytest.mark.parametrize(
    ("constraint", "order", "value"),
    [
        ({"type": "precedence", "before": "poetry", "after": "math"},
         ["code", "poetry", "math"], 1.43),
        ({"type": "pinned", "task": "poetry", "position": "first"},
         ["poetry", "math", "code"], 1.35),
        ({"type": "pinned", "task": "math", "position": "last"}, ["code", "poetry", "math"], 1.43),
        ({"type": "pinned", "task": "code", "position": 1}, ["code", "math", "poetry"], 1.49),
        ({"type": "window", "task": "poetry", "earliest": 1, "latest": 2},
         ["code", "poetry", "math"], 1.43),
        ({"type": "forbidden_adjacency", "first": "math", "second": "code"},
         ["code", "math", "poetry"], 1.49),
        ({"type": "required_adjacency", "first": "poetry", "second": "math"},
         ["code", "poetry", "math"], 1.43),
        ({"type": "kind_order", "earlier": "open_ended", "later": "structured"},
         ["poetry", "math", "code"], 1.35),
        ({"type": "contiguous", "tasks": ["math", "poetry"]}, ["code", "math", "poetry"], 1.49),
    ],
)  # fmt: skip
def test_each_constraint_type_binds(
    client: TestClient,
    example: ProjectKeys,
    constraint: dict[str, Any],
    order: list[str],
    value: float,
) -> None:
    body = solved(client, example, constraints=[constraint])
    assert body["order"] == order
    assert body["objective"] == pytest.approx(value)
    assert body["status"] == "optimal"
    assert body["request"]["constraints"] == [constraint]


def test_a_task_subset_is_scheduled_alone(client: TestClient, example: ProjectKeys) -> None:
    body = solved(client, example, tasks=["poetry", "code"])
    # code before poetry: 0.40 + 0.50; poetry before code: 0.40 + 0.40.
    assert body["order"] == ["code", "poetry"]
    assert body["objective"] == pytest.approx(0.90)
    kind_order = {"type": "kind_order", "earlier": "open_ended", "later": "structured"}
    # No structured task is scheduled besides code: the constraint still binds on it.
    assert solved(client, example, tasks=["poetry", "code"], constraints=[kind_order])["order"] == [
        "poetry",
        "code",
    ]


# --- the service function runs and re-planning call --------------------------------------------


def _context(project: ProjectKeys) -> ProjectContext:
    principal = Principal(key_id="test", role=Role.ADMIN, project_id=project.id)
    return ProjectContext(
        id=project.id, settings=ProjectSettings(), principal=principal, name=project.name
    )


def test_replanning_keeps_the_prefix_and_links_run_and_parent(
    client: TestClient, example: ProjectKeys, session: Session
) -> None:
    first = solved(client, example)
    run = Run(project_id=example.id, client_id="job-1")
    session.add(run)
    session.flush()
    solved_plan = schedule_service.solve_schedule(
        session,
        _context(example),
        ScheduleCreate(),
        run_id=run.id,
        parent_id=first["id"],
        prefix=["poetry"],
    )
    [replanned_id] = store_plans(session, example.id, [(solved_plan, 1)])
    session.commit()
    assert replanned_id is not None
    replanned = schedule_service.get_schedule(session, _context(example), replanned_id)
    assert replanned.order == ["poetry", "math", "code"]
    assert replanned.objective == pytest.approx(1.35)
    assert (replanned.run_id, replanned.parent_id, replanned.version) == (run.id, first["id"], 2)
    assert replanned.request["prefix"] == ["poetry"]
    history = client.get(_url(example), params={"run_id": run.id}, headers=example.trainer)
    assert [item["id"] for item in history.json()["items"]] == [replanned.id]
    fetched = client.get(f"{_url(example)}/{replanned.id}", headers=example.trainer).json()
    assert fetched == replanned.model_dump(mode="json")


# --- history ------------------------------------------------------------------------------------


def test_history_pages_newest_first_without_gaps(client: TestClient, example: ProjectKeys) -> None:
    ids = [solved(client, example, label=f"plan {i}")["id"] for i in range(7)]
    seen: list[dict[str, Any]] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"page_size": 3}
        if token is not None:
            params["page_token"] = token
        response = client.get(_url(example), params=params, headers=example.trainer)
        assert response.status_code == 200
        page = response.json()
        pages += 1
        assert len(page["items"]) == (3 if pages < 3 else 1)
        seen.extend(page["items"])
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3
    assert [item["version"] for item in seen] == [7, 6, 5, 4, 3, 2, 1]
    assert [item["id"] for item in seen] == ids[::-1]
    everything = client.get(_url(example), headers=example.trainer).json()
    assert len(everything["items"]) == 7
    assert everything["next_page_token"] is None
    exact = client.get(_url(example), params={"page_size": 7}, headers=example.trainer).json()
    assert (len(exact["items"]), exact["next_page_token"]) == (7, None)


def test_empty_history(client: TestClient, example: ProjectKeys) -> None:
    body = client.get(_url(example), headers=example.trainer).json()
    assert body == {"items": [], "next_page_token": None}


def test_other_projects_schedule_is_404_like_a_missing_one(
    client: TestClient, example: ProjectKeys, other_project: ProjectKeys
) -> None:
    setup_worked_example(client, other_project)
    theirs = solved(client, other_project)
    mine = solved(client, example)
    response = client.get(f"{_url(example)}/{theirs['id']}", headers=example.admin)
    missing = client.get(f"{_url(example)}/{'0' * 36}", headers=example.admin)
    assert response.status_code == missing.status_code == 404
    assert response.content == missing.content
    listed = client.get(_url(example), headers=example.admin).json()["items"]
    assert [item["id"] for item in listed] == [mine["id"]]


# --- errors ------------------------------------------------------------------------------------


def test_precedence_cycle_is_named_task_by_task(client: TestClient, example: ProjectKeys) -> None:
    cycle = [
        {"type": "pinned", "task": "code", "position": "last"},
        {"type": "precedence", "before": "math", "after": "code"},
        {"type": "precedence", "before": "code", "after": "poetry"},
        {"type": "precedence", "before": "poetry", "after": "math"},
    ]
    response = solve(client, example, constraints=cycle)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "infeasible"
    rotations = ["math -> code -> poetry -> math", "code -> poetry -> math -> code",
                 "poetry -> math -> code -> poetry"]  # fmt: skip
    assert any(path in body["detail"] for path in rotations), body["detail"]
    assert sorted(e["field"] for e in body["errors"]) == [
        "constraints[1]",
        "constraints[2]",
        "constraints[3]",
    ]
    reasons = {e["field"]: e["reason"] for e in body["errors"]}
    assert reasons["constraints[3]"] == "precedence: poetry before math"
    assert client.get(_url(example), headers=example.admin).json()["items"] == []


def test_two_tasks_pinned_first_is_a_named_conflict(
    client: TestClient, example: ProjectKeys
) -> None:
    constraints = [
        {"type": "precedence", "before": "math", "after": "poetry"},
        {"type": "pinned", "task": "code", "position": "first"},
        {"type": "pinned", "task": "math", "position": 1},
    ]
    response = solve(client, example, constraints=constraints)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "infeasible"
    assert body["errors"] == [
        {"field": "constraints[1]", "reason": "pinned: code at the first stage"},
        {"field": "constraints[2]", "reason": "pinned: math at stage 1"},
    ]


def test_conflict_found_by_search_is_named(client: TestClient, example: ProjectKeys) -> None:
    # Each holds alone; together poetry must be both right after math and before it.
    constraints = [
        {"type": "required_adjacency", "first": "math", "second": "poetry"},
        {"type": "window", "task": "poetry", "earliest": 1, "latest": 1},
    ]
    response = solve(client, example, constraints=constraints)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"constraints[0]", "constraints[1]"}


def test_unknown_task_key_names_the_field(client: TestClient, example: ProjectKeys) -> None:
    constraints = [
        {"type": "precedence", "before": "math", "after": "code"},
        {"type": "contiguous", "tasks": ["math", "haiku"]},
    ]
    response = solve(client, example, constraints=constraints, tasks=["math", "code", "poetry"])
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "constraints[1].tasks[1]", "reason": "Unknown task key 'haiku'"}
    ]
    pinned = {"type": "pinned", "task": "poetry", "position": "first"}
    subset = solve(client, example, tasks=["math", "code"], constraints=[constraints[0], pinned])
    assert subset.json()["errors"] == [
        {"field": "constraints[1].task", "reason": "Task 'poetry' is not among the scheduled tasks"}
    ]
    unknown_subset = solve(client, example, tasks=["math", "limerick"])
    assert unknown_subset.json()["errors"] == [
        {"field": "tasks[1]", "reason": "Unknown task key 'limerick'"}
    ]


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"time_limit_s": 31}, "time_limit_s", "At most 30 seconds on this server"),
        ({"time_limit_s": 0}, "time_limit_s", "Input should be greater than 0"),
        ({"rho": 1.5}, "rho", "Input should be less than or equal to 1"),
        ({"objective": "greedy"}, "objective", None),
        ({"constraints": [{"type": "sometimes", "task": "math"}]}, "constraints[0]", None),
        ({"constraints": [{"type": "precedence", "before": "math"}]}, "constraints[0].after",
         "Field required"),
        ({"constraints": [{"type": "pinned", "task": "math", "position": 4}]},
         "constraints[0].position", "Stage 4 does not exist: 3 tasks are scheduled"),
        ({"constraints": [{"type": "pinned", "task": "math", "position": 0}]},
         "constraints[0].position", None),
        ({"constraints": [{"type": "window", "task": "math", "earliest": 3, "latest": 2}]},
         "constraints[0].latest", "Must be at least `earliest`"),
        ({"constraints": [{"type": "precedence", "before": "math", "after": "math"}]},
         "constraints[0].after", "Must name a different task"),
        ({"constraints": [{"type": "kind_order", "earlier": "other", "later": "other"}]},
         "constraints[0].later", "Must differ from `earlier`"),
        ({"seed": -1}, "seed", "Input should be greater than or equal to 0"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_invalid_input_names_field_and_reason(
    client: TestClient, example: ProjectKeys, body: dict[str, Any], field: str, reason: str | None
) -> None:
    response = client.post(_url(example), json=body, headers=example.admin)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == [field]
    if reason is not None:
        assert errors[0]["reason"] == reason


def test_bad_page_tokens_are_422(client: TestClient, example: ProjectKeys) -> None:
    for token in ("nonsense", "djA", "dnN1cmU", "!!!", "djAx"):
        response = client.get(_url(example), params={"page_token": token}, headers=example.admin)
        assert response.status_code == 422, token
        assert response.json()["errors"] == [
            {"field": "query.page_token", "reason": "Not a page token issued by this API"}
        ]
    assert (
        client.get(_url(example), params={"page_size": 0}, headers=example.admin).status_code == 422
    )
    too_big = client.get(_url(example), params={"page_size": 1001}, headers=example.admin)
    assert too_big.json()["errors"][0]["field"] == "query.page_size"


def test_no_order_within_the_time_limit_is_503_with_retry_after(
    client: TestClient, project: ProjectKeys
) -> None:
    # 60 tasks with adjacency, contiguity and a window go to CP-SAT, which cannot even find a
    # feasible order in a millisecond.
    tasks = [{"key": f"t{i}"} for i in range(60)]
    client.post(f"/v1/projects/{project.id}/tasks", json={"tasks": tasks}, headers=project.admin)
    constraints = [
        {"type": "required_adjacency", "first": "t0", "second": "t1"},
        {"type": "forbidden_adjacency", "first": "t2", "second": "t3"},
        {"type": "contiguous", "tasks": ["t4", "t5", "t6", "t7"]},
        {"type": "window", "task": "t8", "earliest": 11, "latest": 13},
        {"type": "precedence", "before": "t9", "after": "t8"},
    ]
    response = solve(client, project, constraints=constraints, time_limit_s=0.001)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    assert response.json()["code"] == "unavailable"
    assert client.get(_url(project), headers=project.admin).json()["items"] == []


def test_project_without_tasks_is_422(client: TestClient, project: ProjectKeys) -> None:
    response = solve(client, project)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "tasks", "reason": "The project has no tasks"}]


def test_trainer_may_read_but_not_solve(client: TestClient, example: ProjectKeys) -> None:
    assert client.post(_url(example), json={}, headers=example.trainer).status_code == 403
    assert client.get(_url(example), headers=example.trainer).status_code == 200


# --- concurrency on a real server ----------------------------------------------------------------


def _concurrent_versions(server: LiveServer, solves: int) -> list[int]:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        project = http.post("/v1/projects", json={"name": "race"}, headers=server.admin_headers)
        project_id = project.json()["id"]
        key = http.post(
            f"/v1/projects/{project_id}/keys", json={"role": "admin"}, headers=server.admin_headers
        ).json()["key"]
        headers = bearer(key)
        http.post(f"/v1/projects/{project_id}/tasks", json={"tasks": TASKS}, headers=headers)

        def post(i: int) -> int:
            response = http.post(
                f"/v1/projects/{project_id}/schedules", json={"seed": i}, headers=headers
            )
            assert response.status_code == 201, response.text
            version: int = response.json()["version"]
            return version

        with concurrent.futures.ThreadPoolExecutor(max_workers=solves) as pool:
            return sorted(pool.map(post, range(solves)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_live_server(request: pytest.FixtureRequest) -> LiveServer:
    """The SQLite or the PostgreSQL live server."""
    name = "live_server" if request.param == "sqlite" else "live_server_pg"
    server: LiveServer = request.getfixturevalue(name)
    return server


def test_concurrent_solves_get_contiguous_versions(any_live_server: LiveServer) -> None:
    assert _concurrent_versions(any_live_server, 8) == list(range(1, 9))


def _set_policy(client: TestClient, project: ProjectKeys, **policy: Any) -> dict[str, Any]:
    response = client.patch(
        f"/v1/projects/{project.id}", json={"settings": policy}, headers=project.admin
    )
    assert response.status_code == 200, response.text
    settings: dict[str, Any] = response.json()["settings"]
    return settings


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"time_limit_s": 5.5}, "time_limit_s",
         "At most 5 seconds by the project's policy (settings.max_time_limit_s)"),
        ({"constraints": [{"type": "precedence", "before": "math", "after": "code"}] * 2},
         "constraints",
         "At most 1 constraints by the project's policy (settings.max_constraints), got 2"),
        ({}, "tasks", "At most 2 tasks per schedule by the project's policy (settings.max_tasks), "
         "got 3"),
    ],
)  # fmt: skip
def test_request_past_the_project_policy_is_422(
    client: TestClient, example: ProjectKeys, body: dict[str, Any], field: str, reason: str
) -> None:
    _set_policy(client, example, max_time_limit_s=5, max_constraints=1, max_tasks=2)
    if field != "tasks":
        body = {**body, "tasks": ["math", "code"]}
    response = client.post(_url(example), json=body, headers=example.admin)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"] == [{"field": field, "reason": reason}]
    assert client.get(_url(example), headers=example.admin).json()["items"] == []


def test_request_within_the_project_policy_is_201(client: TestClient, example: ProjectKeys) -> None:
    _set_policy(client, example, max_time_limit_s=5, max_constraints=1, max_tasks=2)
    body = {
        "tasks": ["math", "code"],
        "constraints": [{"type": "precedence", "before": "code", "after": "math"}],
        "time_limit_s": 5,
    }
    response = client.post(_url(example), json=body, headers=example.admin)
    assert response.status_code == 201, response.text
    assert response.json()["order"] == ["code", "math"]
    # no time limit asked: the policy's is the default
    default = client.post(_url(example), json={"tasks": ["math"]}, headers=example.admin)
    assert default.status_code == 201, default.text
    assert default.json()["request"]["time_limit_s"] == 5
