"""Runs planned on the whole-run model (``level_model: run_model``, solver.learning)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ordo_server.app.metrics import SOLVE_DURATION
from ordo_server.app.services import schedules as schedule_service
from ordo_server.models import Project, Schedule, Task
from ordo_server.solver import solve_ordering
from ordo_server.solver.estimation import TaskKind
from ordo_server.solver.learning import RunRecord
from ordo_server.solver.recommend import explore_order, plan_seed, recommend
from tests.factories import ProjectKeys, create_project_with_keys, four_task_utilities

KINDS = {"math": "structured", "code": "structured", "poetry": "open_ended", "chat": "open_ended"}
KEYS = tuple(KINDS)


@pytest.fixture
def project(session: Session) -> ProjectKeys:
    """A project with two structured and two open-ended tasks.

    Named, so that its runs' seeds (from the project's name) and so its plans are the same in
    every run of the suite. This name's plans train two runs that report the same final: the
    exploit re-plan's incumbent then has to be told apart by the posterior (a random name met
    that case in CI once in about thirty)."""
    keys = create_project_with_keys(session, name="project-68-801e9e")
    session.add_all(
        Task(project_id=keys.id, key=key, index=i, name=key, meta={}, kind=kind)
        for i, (key, kind) in enumerate(KINDS.items())
    )
    session.commit()
    return keys


def _runs(project: ProjectKeys) -> str:
    return f"/v1/projects/{project.id}/runs"


def _evaluation(trained: list[str]) -> list[dict[str, Any]]:
    """Every task's utility and the policy entropy after training ``trained`` in order."""
    index = [KEYS.index(key) for key in trained]
    utility = four_task_utilities(index)
    entropy = 1.0 + 0.1 * sum(1 if KINDS[key] == "open_ended" else -1 for key in trained)
    return [
        {"task": key, "value": float(utility[j]), "entropy": entropy} for j, key in enumerate(KEYS)
    ]


def _holder(project: ProjectKeys, run: dict[str, Any]) -> dict[str, str]:
    """The trainer's headers with the run's lease token."""
    return {**project.trainer, "Ordo-Lease-Token": str(run["lease"]["token"])}


def _report(client: TestClient, project: ProjectKeys, run: dict[str, Any], stage: int) -> Any:
    """Ask for the next stage, as a trainer does (a pending re-plan runs), then report it."""
    following = client.get(f"{_runs(project)}/{run['id']}/next", headers=project.trainer).json()
    assert following["stage"] == stage, following
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    trained = [s["task"] for s in view["stages"][:stage]]
    body = {"evaluations": _evaluation(trained)}
    response = client.put(
        f"{_runs(project)}/{run['id']}/reports/{stage}", json=body, headers=_holder(project, run)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _train(client: TestClient, project: ProjectKeys, body: dict[str, Any]) -> dict[str, Any]:
    """Create a run, report every stage, complete it; the final view."""
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    return _finish(client, project, run)


def _finish(client: TestClient, project: ProjectKeys, run: dict[str, Any]) -> dict[str, Any]:
    """Report every stage of a created run and complete it; the final view."""
    for stage in range(len(KEYS) + 1):
        _report(client, project, run, stage)
    done = client.post(f"{_runs(project)}/{run['id']}/complete", headers=_holder(project, run))
    assert done.status_code == 200, done.text
    view: dict[str, Any] = done.json()
    return view


def _order(view: dict[str, Any]) -> list[str]:
    return [stage["task"] for stage in view["stages"]]


def _records(client: TestClient, project: ProjectKeys) -> list[RunRecord]:
    """Every run's record rebuilt from the API's view (task indexes in project order)."""
    records = []
    for summary in client.get(_runs(project), headers=project.trainer).json()["items"][::-1]:
        view = client.get(f"{_runs(project)}/{summary['id']}", headers=project.trainer).json()
        utilities = [
            {KEYS.index(e["task"]): e["utility"] for e in report["evaluations"]}
            for report in view["reports"]
        ]
        entropies = [
            {KEYS.index(e["task"]): e["entropy"] for e in report["evaluations"]}
            for report in view["reports"]
        ]
        trained = tuple(KEYS.index(task) for task in _order(view)[: len(utilities) - 1])
        records.append(RunRecord(trained, utilities, entropies))
    return records


def test_runs_default_to_the_run_model_and_adaptive_runs_to_thompson(
    client: TestClient, project: ProjectKeys
) -> None:
    cases = [
        ({"adaptive": True}, ("thompson", "run_model")),
        ({"adaptive": False}, ("exploit", "run_model")),
        ({"adaptive": True, "strategy": "exploit"}, ("exploit", "run_model")),
        ({"adaptive": True, "strategy": "mean_variance"}, ("mean_variance", "constant")),
        ({"adaptive": False, "level_model": "constant"}, ("exploit", "constant")),
    ]
    for body, expected in cases:
        response = client.post(_runs(project), json=body, headers=project.trainer)
        assert response.status_code == 201, response.text
        assert (response.json()["strategy"], response.json()["level_model"]) == expected


def test_run_model_does_not_plan_mean_variance(client: TestClient, project: ProjectKeys) -> None:
    body = {"adaptive": True, "strategy": "mean_variance", "level_model": "run_model"}
    response = client.post(_runs(project), json=body, headers=project.trainer)
    assert response.status_code == 422, response.text
    assert "thompson" in response.json()["detail"] + str(response.json()["errors"])


def _kinds() -> list[TaskKind | None]:
    return [TaskKind(KINDS[key]) for key in KEYS]


def test_an_exploit_replan_is_the_ensembles_recommendation_from_every_report(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _train(client, project, {"adaptive": True})
    _train(client, project, {"adaptive": True})
    third = client.post(
        _runs(project), json={"adaptive": True, "strategy": "exploit"}, headers=project.trainer
    ).json()
    _report(client, project, third, 0)
    assert _report(client, project, third, 1)["plan_pending"] is True
    following = client.get(f"{_runs(project)}/{third['id']}/next", headers=project.trainer)
    assert following.json()["plan_pending"] is False
    view = client.get(f"{_runs(project)}/{third['id']}", headers=project.trainer).json()
    replan = session.get(Schedule, view["schedule_id"])
    assert replan is not None
    assert (replan.status, replan.bound, replan.gap) == ("feasible", None, None)
    assert replan.method == "ensemble:exploit"
    # The service only feeds the ensemble the project's runs (all three, the current one
    # included): the same inputs through the solver give the same posterior. Its search also
    # starts from the constrained solver's order after the prefix, which the API does not
    # show, so the order itself is checked by what the recommendation guarantees: the prefix
    # kept, the stored mean the posterior's, never below an observed order with that prefix.
    records = _records(client, project)
    assert [len(r.utilities) for r in records] == [5, 5, 2]
    expected = recommend(records, kinds=_kinds(), weights=np.ones(4), current=records[-1])
    order = tuple(KEYS.index(key) for key in replan.order)
    assert sorted(order) == [0, 1, 2, 3]
    assert order[:1] == records[-1].trained
    mean, _ = expected.posterior.moments([order])
    assert replan.objective == pytest.approx(float(mean[0]), rel=1e-9)
    assert replan.predicted["objective"]["mean"] == pytest.approx(float(mean[0]), rel=1e-9)
    if expected.best_observed_mean is not None:
        assert float(mean[0]) >= expected.best_observed_mean - 1e-12


def test_a_thompson_run_explores_seeded_by_project_name_and_client_id(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _train(client, project, {"adaptive": True})
    _train(client, project, {"adaptive": True})
    body = {"adaptive": True, "client_id": "job-3"}
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    schedule = session.get(Schedule, run["schedule_id"])
    assert schedule is not None
    assert schedule.method == "ensemble:explore"
    stored = session.get(Project, project.id)
    assert stored is not None
    records = _records(client, project)[:2]
    seed = plan_seed(stored.name, "job-3")
    # What the measured loop plans (no constraints: no start from the constrained solver).
    order = explore_order(records, kinds=_kinds(), weights=np.ones(4), seed=seed)
    assert _order(run) == [KEYS[t] for t in order]


def test_a_runs_searches_start_from_the_constrained_solver_only_under_constraints(
    client: TestClient, project: ProjectKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adaptive run's plans search from where the measured loop's do (``bench.closed_loop``
    passes no start); the constrained solver's order joins them only as a feasible start where
    the run has constraints. The solver is the real one, counted."""
    solved: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(args[0])
        return solve_ordering(*args, **kwargs)

    monkeypatch.setattr(schedule_service, "solve_ordering", counted)
    free = {"adaptive": True, "client_id": "free"}
    # The first plan of a project is a Thompson draw, which climbs from its start orders.
    assert client.post(_runs(project), json=free, headers=project.trainer).status_code == 201
    assert solved == []
    pinned = [{"type": "pinned", "task": "poetry", "position": "first"}]
    held = {"adaptive": True, "client_id": "held", "schedule": {"constraints": pinned}}
    run = client.post(_runs(project), json=held, headers=project.trainer).json()
    assert len(solved) == 1
    assert _order(run)[0] == "poetry"


def test_a_first_run_explores_on_the_ensemble_fitted_to_its_own_reports(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    """No run has completed: the first plan is one draw of the ensemble on its priors, and each
    re-plan is the ensemble's fitted to the run's own reports so far (what
    ``bench.closed_loop`` measures in process)."""
    stored = session.get(Project, project.id)
    assert stored is not None
    body = {"adaptive": True, "client_id": "job-1"}
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    first = session.get(Schedule, run["schedule_id"])
    assert first is not None
    assert first.method == "ensemble:explore"
    seed = plan_seed(stored.name, "job-1")
    assert _order(run) == [
        KEYS[t] for t in explore_order([], kinds=_kinds(), weights=np.ones(4), seed=seed)
    ]
    _report(client, project, run, 0)
    assert _report(client, project, run, 1)["plan_pending"] is True
    following = client.get(f"{_runs(project)}/{run['id']}/next", headers=project.trainer).json()
    assert following["plan_pending"] is False
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    replan = session.get(Schedule, view["schedule_id"])
    assert replan is not None
    assert (replan.run_stage, replan.method) == (1, "ensemble:explore")
    (record,) = _records(client, project)
    expected = explore_order(
        [record], kinds=_kinds(), weights=np.ones(4), seed=seed, current=record
    )
    assert replan.order == [KEYS[t] for t in expected]


def test_with_imported_priors_the_first_two_runs_explore_on_the_pairwise_estimates(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    """The ensemble's models do not read imported priors: the pairwise estimates, which do,
    plan exploration and draws until two runs have completed."""
    priors = [{"effect": "F", "src": "poetry", "dst": "math", "mean": 0.3, "std": 0.05}]
    imported = client.post(f"/v1/projects/{project.id}/priors", json=priors, headers=project.admin)
    assert imported.status_code == 200, imported.text
    schedules = f"/v1/projects/{project.id}/schedules"
    for completed in (0, 1, 2):
        run = client.post(_runs(project), json={"adaptive": True}, headers=project.trainer)
        plan = session.get(Schedule, run.json()["schedule_id"])
        assert plan is not None
        assert plan.method.startswith("ensemble") is (completed >= 2), (completed, plan.method)
        draw = client.post(schedules, json={"objective": "thompson"}, headers=project.admin)
        assert draw.json()["method"].startswith("ensemble") is (completed >= 2)
        if completed < 2:
            _finish(client, project, run.json())


def _solves(kind: str) -> dict[str, float]:
    """How many plans of ``kind`` ``ordo_solve_duration_seconds`` counted, by method."""
    return {
        sample.labels["method"]: sample.value
        for metric in SOLVE_DURATION.collect()
        for sample in metric.samples
        if sample.name.endswith("_count") and sample.labels["kind"] == kind
    }


def test_an_exploration_that_scores_every_completion_solves_no_estimates(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    """Four tasks: exploration scores all 24 orders, so the pairwise solve that would only seed
    its search is never run; the plan's time and its metric are the planner's."""
    _train(client, project, {"adaptive": True})
    _train(client, project, {"adaptive": True})
    before = _solves("run")
    run = client.post(_runs(project), json={"adaptive": True}, headers=project.trainer).json()
    after = _solves("run")
    schedule = session.get(Schedule, run["schedule_id"])
    assert schedule is not None
    assert schedule.method == "ensemble:explore"
    assert schedule.wall_time_s > 0.0
    assert after.get("ensemble:explore", 0.0) - before.get("ensemble:explore", 0.0) == 1.0
    assert {m: c for m, c in after.items() if m != "ensemble:explore"} == {
        m: c for m, c in before.items() if m != "ensemble:explore"
    }


def test_the_schedule_default_is_the_recommendation_once_a_run_completed(
    client: TestClient, project: ProjectKeys
) -> None:
    """The recommendation needs one completed run (it holds on to the best run so far); a
    posterior draw (objective ``thompson``) is the ensemble's from the start."""
    schedules = f"/v1/projects/{project.id}/schedules"
    before = client.post(schedules, json={}, headers=project.admin).json()
    assert not before["method"].startswith("ensemble")  # pairwise estimates until then
    first_draw = client.post(schedules, json={"objective": "thompson"}, headers=project.admin)
    assert first_draw.json()["method"] == "ensemble:thompson"
    for completed in (1, 2):
        _train(client, project, {"adaptive": True})
        after = client.post(schedules, json={}, headers=project.admin)
        assert after.status_code == 201, after.text
        body = after.json()
        assert body["method"] == "ensemble:exploit"
        # The same runs and the same start (the constrained solver's order on the pairwise
        # estimates) through the solver give the same order and posterior mean.
        pairwise = client.post(schedules, json={"model": "pairwise"}, headers=project.admin)
        assert not pairwise.json()["method"].startswith("ensemble")
        start = tuple(KEYS.index(key) for key in pairwise.json()["order"])
        records = _records(client, project)
        assert len(records) == completed
        expected = recommend(records, kinds=_kinds(), weights=np.ones(4), starts=[start])
        assert body["order"] == [KEYS[t] for t in expected.order]
        assert body["predicted"]["objective"]["mean"] == pytest.approx(expected.mean, rel=1e-9)
        # The best run so far (any of them on a tie: in this noise-free world two orders can
        # end with the very same utilities), or an order the posterior puts above it.
        best = max(map(_final_objective, records))
        best_runs = {r.trained for r in records if _final_objective(r) >= best - 1e-12}
        assert expected.best_observed in best_runs
        if expected.order != expected.best_observed:
            assert expected.best_observed_mean is not None
            assert expected.mean > expected.best_observed_mean
        draw = client.post(schedules, json={"objective": "thompson"}, headers=project.admin)
        assert draw.json()["method"] == "ensemble:thompson"


def _final_objective(record: RunRecord) -> float:
    return sum(record.utilities[-1].values())


def test_a_run_model_replan_keeps_the_prefix_and_respects_the_constraints(
    client: TestClient, project: ProjectKeys, session: Session
) -> None:
    _train(client, project, {"adaptive": True})
    _train(client, project, {"adaptive": True})
    constraints = [
        {"type": "precedence", "before": "chat", "after": "math"},
        {"type": "pinned", "task": "code", "position": "last"},
    ]
    body = {"adaptive": True, "schedule": {"constraints": constraints}}
    run = client.post(_runs(project), json=body, headers=project.trainer).json()
    for stage in range(3):
        answer = _report(client, project, run, stage)
    assert answer["plan_pending"] is True
    following = client.get(f"{_runs(project)}/{run['id']}/next", headers=project.trainer).json()
    view = client.get(f"{_runs(project)}/{run['id']}", headers=project.trainer).json()
    assert len(view["schedules"]) == 3  # the first plan and two re-plans
    plans = [session.get(Schedule, s["id"]) for s in view["schedules"]]
    trained = [report["task"] for report in view["reports"][1:]]
    for k, plan in enumerate(plans):
        assert plan is not None
        assert plan.order[:k] == trained[:k]
        assert plan.order.index("chat") < plan.order.index("math")
        assert plan.order[-1] == "code"
        assert plan.method.startswith("ensemble")
    current = plans[-1]
    assert current is not None
    assert [stage["task"] for stage in view["stages"]] == current.order
    assert following["task"] == current.order[2]


@pytest.mark.parametrize(("count", "rho"), [(4, 1.0), (13, 0.0)])
def test_a_subset_plan_fits_the_run_model_only_up_to_its_size_limit(
    client: TestClient, session: Session, count: int, rho: float
) -> None:
    """An exploit run over some of the tasks solves the run model (``rho = 1``) in a small
    project and the pairwise estimates (the project's ``rho``, 0) above RUN_MODEL_MAX_TASKS."""
    keys = create_project_with_keys(session, task_keys=[f"t{i}" for i in range(count)])
    session.commit()
    body = {
        "strategy": "exploit",
        "level_model": "run_model",
        "schedule": {"tasks": ["t0", "t1", "t2"]},
    }
    response = client.post(_runs(keys), json=body, headers=keys.trainer)
    assert response.status_code == 201, response.text
    schedule = session.get(Schedule, response.json()["schedule_id"])
    assert schedule is not None
    assert schedule.request["rho"] == rho
