"""A project with real runs, made through the HTTP API, for the dashboard's browser test.

The runs train the simulated tasks of ``ordo demo`` (``app/simulation.py``): every report carries
each task's evaluation and entropy, as a training job's would. Two fixed runs and an adaptive one
complete (so calibration and the ensemble recommendation have data); a last adaptive run stays
active after its first stage, for the live view. The remaining stages of that run are reported by
:func:`report_next_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ordo_server.app.simulation import DEMO_TASKS, STRUCTURED, Simulator, demo_world

PROJECT_NAME = "dashboard-demo"
TASK_KEYS = tuple(key for key, _kind, _name in DEMO_TASKS)
# Seconds the solver may take per plan: the plans are small, and the test has a budget.
SOLVE_LIMIT_S = 2.0
HTTP_TIMEOUT_S = 60.0
# Every run here keeps its first holder: lease token 1.
LEASE = {"Ordo-Lease-Token": "1"}


@dataclass
class PopulatedProject:
    """The project's id and keys, its runs, and the simulator of the run left active."""

    id: str
    admin_key: str
    trainer_key: str
    completed_run_ids: list[str]
    active_run_id: str
    active_simulator: Simulator = field(repr=False)

    @property
    def trainer(self) -> dict[str, str]:
        """Headers of the trainer key."""
        return {"Authorization": f"Bearer {self.trainer_key}"}


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def _report(
    http: httpx.Client,
    project: PopulatedProject | tuple[str, dict[str, str]],
    run_id: str,
    simulator: Simulator,
    stage: int,
    task: str | None,
) -> Any:
    project_id, headers = (
        (project.id, project.trainer) if isinstance(project, PopulatedProject) else project
    )
    if task is not None:
        simulator.train(TASK_KEYS.index(task))
    evaluation = simulator.evaluate()
    body = {
        "evaluations": [
            {
                "task": TASK_KEYS[j],
                "value": round(value, 6),
                "entropy": round(max(evaluation.entropies[j], 0.0), 6),
            }
            for j, value in evaluation.values.items()
        ],
        "steps": 1000 * stage,
    }
    url = f"/v1/projects/{project_id}/runs/{run_id}/reports/{stage}"
    return _ok(http.put(url, json=body, headers={**headers, **LEASE}))


def _drive(
    http: httpx.Client,
    project_id: str,
    headers: dict[str, str],
    run_id: str,
    simulator: Simulator,
    *,
    stop_after: int | None = None,
) -> None:
    """Report stages as the server assigns them (re-plans included), up to ``stop_after``."""
    while True:
        step = _ok(http.get(f"/v1/projects/{project_id}/runs/{run_id}/next", headers=headers))
        if step["done"] or (stop_after is not None and step["stage"] > stop_after):
            return
        _report(http, (project_id, headers), run_id, simulator, step["stage"], step["task"])


def populate(http: httpx.Client, admin_headers: dict[str, str]) -> PopulatedProject:
    """Create the project, its tasks, priors, runs and a recommendation; ``http`` has base_url."""
    world = demo_world(seed=0)
    project = _ok(
        http.post(
            "/v1/projects",
            json={"name": PROJECT_NAME, "description": "six simulated post-training tasks"},
            headers=admin_headers,
        )
    )
    project_id = project["id"]
    admin_key = _ok(
        http.post(
            f"/v1/projects/{project_id}/keys",
            json={"name": "dashboard admin", "role": "admin"},
            headers=admin_headers,
        )
    )["key"]
    trainer_key = _ok(
        http.post(
            f"/v1/projects/{project_id}/keys",
            json={"name": "dashboard trainer", "role": "trainer"},
            headers=admin_headers,
        )
    )["key"]
    admin = {"Authorization": f"Bearer {admin_key}"}
    trainer = {"Authorization": f"Bearer {trainer_key}"}
    tasks = [
        {
            "key": key,
            "name": name,
            "kind": kind,
            "reward": "verifiable" if kind == STRUCTURED else "preference",
            "weight": 1.0 if kind == STRUCTURED else 0.5,
        }
        for key, kind, name in DEMO_TASKS
    ]
    _ok(http.post(f"/v1/projects/{project_id}/tasks", json={"tasks": tasks}, headers=admin))
    _ok(
        http.post(
            f"/v1/projects/{project_id}/priors",
            json={"effect": "L", "tasks": list(TASK_KEYS), "mean": [0.6] * 6, "std": 0.1},
            headers=admin,
        )
    )
    runs = f"/v1/projects/{project_id}/runs"
    fixed_plan = {"model": "pairwise", "objective": "thompson", "time_limit_s": SOLVE_LIMIT_S}
    completed: list[str] = []
    for number, adaptive in enumerate((False, False, True)):
        # Two fixed runs on the pairwise estimates, each one Thompson draw (the default level
        # model would follow the ensemble's recommendation once a run has completed).
        body = {
            "schedule": {**fixed_plan, "seed": number, "label": f"run {number + 1}"},
            "adaptive": adaptive,
            "level_model": "constant",
            "client_id": f"dashboard-run-{number + 1}",
        }
        if adaptive:
            body = {
                "schedule": {"time_limit_s": SOLVE_LIMIT_S, "label": "adaptive"},
                "adaptive": True,
                "strategy": "exploit",
                "client_id": f"dashboard-run-{number + 1}",
            }
        run_id = _ok(http.post(runs, json=body, headers=trainer))["id"]
        _drive(http, project_id, trainer, run_id, Simulator(world, seed=number))
        _ok(http.post(f"{runs}/{run_id}/complete", headers={**trainer, **LEASE}))
        completed.append(run_id)
    _ok(
        http.post(
            f"/v1/projects/{project_id}/schedules",
            json={"time_limit_s": SOLVE_LIMIT_S, "label": "recommendation"},
            headers=admin,
        )
    )
    active = _ok(
        http.post(
            runs,
            json={
                "schedule": {"time_limit_s": SOLVE_LIMIT_S},
                "adaptive": True,
                "strategy": "exploit",
                "client_id": "dashboard-live",
            },
            headers=trainer,
        )
    )
    simulator = Simulator(world, seed=10)
    _drive(http, project_id, trainer, active["id"], simulator, stop_after=1)
    return PopulatedProject(
        id=project_id,
        admin_key=admin_key,
        trainer_key=trainer_key,
        completed_run_ids=completed,
        active_run_id=active["id"],
        active_simulator=simulator,
    )


def report_next_stage(http: httpx.Client, project: PopulatedProject) -> int:
    """Report the active run's next stage as the trainer would; returns the stage reported."""
    runs = f"/v1/projects/{project.id}/runs/{project.active_run_id}"
    step = _ok(http.get(f"{runs}/next", headers=project.trainer))
    assert not step["done"], step
    _report(
        http, project, project.active_run_id, project.active_simulator, step["stage"], step["task"]
    )
    stage: int = step["stage"]
    return stage
