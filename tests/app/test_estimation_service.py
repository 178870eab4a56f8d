"""Estimates from reports: EB priors by kind pair, kinds from entropy drift, a recovered additive
truth, and the recomputation (endpoint and CLI) equal to the incremental statistics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ordo_server.app.cli import cli
from ordo_server.app.main import create_app
from ordo_server.app.repositories.estimates import StatIncrement, add_statistics
from ordo_server.app.schemas.project import ProjectSettings
from ordo_server.app.security import Role
from ordo_server.app.services.auth import Principal, ProjectContext
from ordo_server.app.services.estimates import project_estimates
from ordo_server.app.services.statistics import current_statistics, fold_now
from ordo_server.app.settings import Settings, get_settings
from ordo_server.models import Estimate, Task
from ordo_server.models.base import utcnow
from ordo_server.solver.estimation import TaskKind
from tests.conftest import ADMIN_TOKEN, migrated_sqlite_url
from tests.factories import ProjectKeys, bearer, create_project_with_keys

# --- helpers -------------------------------------------------------------------------------------


def _project(session: Session, kinds: dict[str, str]) -> ProjectKeys:
    keys = create_project_with_keys(session, task_keys=tuple(kinds))
    for task in session.scalars(select(Task).where(Task.project_id == keys.id)):
        task.kind = kinds[task.key]
    session.commit()
    return keys


def _ids(session: Session, project_id: str) -> dict[str, str]:
    return {t.key: t.id for t in session.scalars(select(Task).where(Task.project_id == project_id))}


def _add(session: Session, project_id: str, cells: list[tuple[str, str, str, list[float]]]) -> None:
    ids = _ids(session, project_id)
    increments = [
        StatIncrement(effect, ids[src], ids[dst], len(xs), sum(xs), sum(x * x for x in xs))
        for effect, src, dst, xs in cells
    ]
    add_statistics(session, project_id, increments, at=utcnow())
    session.commit()


def _estimates(client: TestClient, project: ProjectKeys) -> Any:
    response = client.get(f"/v1/projects/{project.id}/estimates", headers=project.trainer)
    assert response.status_code == 200
    return response.json()


def _context(project: ProjectKeys) -> ProjectContext:
    principal = Principal(key_id="test", role=Role.ADMIN, project_id=project.id)
    return ProjectContext(
        id=project.id, settings=ProjectSettings(), principal=principal, name=project.name
    )


# --- priors and kinds ----------------------------------------------------------------------------

KINDS = {"a": "structured", "b": "structured", "p": "open_ended", "q": "open_ended"}
# Every run here keeps its first holder: lease token 1.
LEASE = {"Ordo-Lease-Token": "1"}


def test_empirical_bayes_prior_by_kind_pair(client: TestClient, session: Session) -> None:
    project = _project(session, KINDS)
    _add(session, project.id, [("F", "a", "p", [0.2, 0.2, 0.2]), ("F", "b", "q", [0.4])])
    body = _estimates(client, project)
    a, b, p, q = (body["tasks"].index(k) for k in "abpq")
    # Unobserved structured -> open_ended cells: the mean of the group's observed cell means.
    assert body["F"]["mean"][a][q] == pytest.approx(0.3)
    assert body["F"]["mean"][b][p] == pytest.approx(0.3)
    # Their variance: the spread of those means net of sampling variance, shrunk to the default
    # 0.1^2 with 2 pseudo-dof. sigma_p^2 pools F[a][p] (SSR 0, 2 dof) with 4 pseudo-dof of
    # 0.05^2; sigma_q^2 is the default (one observation). A difference has variance 2 sigma^2.
    sigma2_p, sigma2_q = 4 * 0.05**2 / (4 + 2), 0.05**2
    sampling = 2 * sigma2_p / 3 + 2 * sigma2_q / 1
    spread = (0.2**2 + 0.4**2 - 0.6**2 / 2) / 1 - sampling / 2
    prior_var = (2 * 0.1**2 + 1 * spread) / (2 + 1)
    assert body["F"]["std"][a][q] == pytest.approx(math.sqrt(prior_var))
    # Another kind pair has no observed cell: the default prior.
    assert (body["F"]["mean"][p][a], body["F"]["std"][p][a]) == (0.0, pytest.approx(0.1))
    # An observed cell: prior from the *other* cell of its group (0.4, default variance), data
    # with variance 2 sigma_p^2 each: precision 1/0.01 + 3 / (2 sigma_p^2) = 100 + 900.
    assert body["F"]["count"][a][p] == 3
    assert body["F"]["mean"][a][p] == pytest.approx((0.4 * 100 + 0.6 * 300) / 1000)
    assert body["F"]["std"][a][p] == pytest.approx(math.sqrt(1 / 1000))


def test_imported_priors_win_over_empirical_bayes(client: TestClient, session: Session) -> None:
    project = _project(session, KINDS)
    _add(session, project.id, [("F", "a", "p", [0.2]), ("F", "b", "q", [0.4])])
    prior = [{"effect": "F", "src": "a", "dst": "q", "mean": -0.5, "std": 0.05}]
    client.post(f"/v1/projects/{project.id}/priors", json=prior, headers=project.admin)
    body = _estimates(client, project)
    a, q = body["tasks"].index("a"), body["tasks"].index("q")
    assert (body["F"]["mean"][a][q], body["F"]["std"][a][q]) == (-0.5, 0.05)


def test_unknown_kinds_are_classified_from_entropy_drift(
    client: TestClient, session: Session
) -> None:
    project = _project(session, {"x": "other", "y": "other", "z": "other"})
    _add(
        session,
        project.id,
        [("D", "x", "x", [-0.5, -0.6, -0.4, -0.5]), ("D", "y", "y", [0.5, 0.4, 0.6, 0.5])],
    )
    kinds = project_estimates(session, _context(project)).estimates.kinds
    keys = [t.key for t in session.scalars(select(Task).where(Task.project_id == project.id))]
    assert dict(zip(keys, kinds, strict=True)) == {
        "x": TaskKind.STRUCTURED,
        "y": TaskKind.OPEN_ENDED,
        "z": None,  # no drift observed: undecided
    }


# --- an additive world, recovered through the API ------------------------------------------------


def _additive_world(rng: np.random.Generator, n: int) -> dict[str, Any]:
    forward = rng.normal(0.0, 0.08, size=(n, n))
    backward = rng.normal(-0.03, 0.06, size=(n, n))
    np.fill_diagonal(forward, 0.0)
    np.fill_diagonal(backward, 0.0)
    return {
        "base": rng.uniform(0.2, 0.4, size=n),
        "level": rng.uniform(0.4, 0.8, size=n),
        "F": forward,
        "B": backward,
    }


def _utilities(world: dict[str, Any], trained: list[int], n: int) -> npt.NDArray[np.float64]:
    """The additive truth (rho = 0): a task resets to L when trained, then only B moves it."""
    u: npt.NDArray[np.float64] = world["base"].copy()
    for k, i in enumerate(trained):
        for j in range(n):
            if j == i:
                u[j] = world["level"][j]
            elif j in trained[:k]:
                u[j] += world["B"][i, j]
            else:
                u[j] += world["F"][i, j]
    return u


def test_posterior_intervals_cover_an_additive_truth(client: TestClient, session: Session) -> None:
    n, noise_sd = 4, 0.01
    keys = [f"t{i}" for i in range(n)]
    project = _project(session, dict.fromkeys(keys, "structured"))
    rng = np.random.default_rng(7)
    world = _additive_world(rng, n)
    runs = f"/v1/projects/{project.id}/runs"
    for _ in range(8):
        order = [int(t) for t in rng.permutation(n)]
        pinned = [
            {"type": "pinned", "task": keys[t], "position": k + 1} for k, t in enumerate(order)
        ]
        run = client.post(
            runs, json={"schedule": {"constraints": pinned}}, headers=project.trainer
        ).json()
        assert [s["task"] for s in run["stages"]] == [keys[t] for t in order]
        for stage in range(n + 1):
            truth = _utilities(world, order[:stage], n)
            values = truth + rng.normal(0.0, noise_sd, size=n)
            body = {
                "evaluations": [
                    {"task": k, "value": float(v)} for k, v in zip(keys, values, strict=True)
                ]
            }
            response = client.put(
                f"{runs}/{run['id']}/reports/{stage}",
                json=body,
                headers={**project.trainer, **LEASE},
            )
            assert response.status_code == 200, response.text
    body = _estimates(client, project)
    covered, cells, errors = 0, 0, []
    for effect in ("F", "B"):
        for i in range(n):
            for j in range(n):
                if i == j or body[effect]["count"][i][j] == 0:
                    continue
                mean, std = body[effect]["mean"][i][j], body[effect]["std"][i][j]
                cells += 1
                covered += abs(mean - world[effect][i, j]) <= 1.96 * std
                errors.append(abs(mean - world[effect][i, j]))
    for j in range(n):
        cells += 1
        covered += abs(body["L"]["mean"][j] - world["level"][j]) <= 1.96 * body["L"]["std"][j]
    assert cells >= 20
    assert covered / cells >= 0.85
    assert float(np.mean(errors)) < 0.03


# --- recomputation -------------------------------------------------------------------------------


def _stats(
    session: Session, project_id: str
) -> dict[tuple[str, str, str], tuple[int, float, float]]:
    """The statistics readers see (folded rows plus unfolded deltas)."""
    session.expire_all()
    cells, _ = current_statistics(session, project_id)
    session.commit()
    return {(r.effect, r.src_task_id, r.dst_task_id): (r.count, r.sum_x, r.sum_x2) for r in cells}


def _same(a: dict[Any, tuple[int, float, float]], b: dict[Any, tuple[int, float, float]]) -> bool:
    return a.keys() == b.keys() and all(
        a[k][0] == b[k][0]
        and all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
            for x, y in zip(a[k][1:], b[k][1:], strict=True)
        )
        for k in a
    )


def _run_reports(
    client: TestClient, project: ProjectKeys, keys: list[str], runs: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    path = f"/v1/projects/{project.id}/runs"
    for _ in range(runs):
        run = client.post(path, json={"adaptive": True}, headers=project.trainer).json()
        for stage in range(len(keys) + 1):
            body = {
                "evaluations": [
                    {
                        "task": k,
                        "value": float(rng.uniform()),
                        "entropy": float(rng.uniform(0.1, 2)),
                    }
                    for k in keys
                ]
            }
            assert (
                client.put(
                    f"{path}/{run['id']}/reports/{stage}",
                    json=body,
                    headers={**project.trainer, **LEASE},
                ).status_code
                == 200
            )


def test_recompute_equals_the_incremental_statistics(client: TestClient, session: Session) -> None:
    project = _project(session, KINDS)
    _run_reports(client, project, list(KINDS), runs=3, seed=1)
    incremental = _stats(session, project.id)
    # Per stage: G, L, three F or B, D.
    assert sum(count for count, _, _ in incremental.values()) == 3 * 4 * 6
    path = f"/v1/projects/{project.id}/estimates/recompute"
    assert client.post(path, headers=project.trainer).status_code == 403
    response = client.post(path, headers=project.admin)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["observations"], result["changed_cells"]) == (72, 0)
    # 12 observing reports, their deltas unfolded until now, then the recomputation.
    assert result["estimates_version"] == 13
    assert result["cells"] == len(incremental)
    assert _same(_stats(session, project.id), incremental)


def test_recompute_repairs_drifted_statistics(client: TestClient, session: Session) -> None:
    project = _project(session, KINDS)
    _run_reports(client, project, list(KINDS), runs=1, seed=2)
    correct = _stats(session, project.id)
    fold_now(session, project.id)  # the folded rows, then drift them
    session.execute(
        update(Estimate)
        .where(Estimate.project_id == project.id, Estimate.effect == "G")
        .values(count=Estimate.count + 5)
    )
    session.commit()
    result = client.post(
        f"/v1/projects/{project.id}/estimates/recompute", headers=project.admin
    ).json()
    assert result["changed_cells"] == 4  # one G cell per task
    assert _same(_stats(session, project.id), correct)


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    url = migrated_sqlite_url(tmp_path / "cli.sqlite")
    monkeypatch.setenv("ORDO_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_cli_recomputes_a_project(cli_database: str) -> None:
    app = create_app(Settings(database_url=cli_database, admin_token=ADMIN_TOKEN))
    with TestClient(app) as client:
        admin = bearer(ADMIN_TOKEN)
        project_id = client.post("/v1/projects", json={"name": "cli"}, headers=admin).json()["id"]
        client.post(
            f"/v1/projects/{project_id}/tasks",
            json={"tasks": [{"key": "a"}, {"key": "b"}]},
            headers=admin,
        )
        run = client.post(f"/v1/projects/{project_id}/runs", json={}, headers=admin).json()
        for stage in range(3):
            body = {
                "evaluations": [{"task": "a", "value": 0.1 * stage}, {"task": "b", "value": 0.2}]
            }
            client.put(
                f"/v1/projects/{project_id}/runs/{run['id']}/reports/{stage}",
                json=body,
                headers={**admin, **LEASE},
            ).raise_for_status()
    result = CliRunner().invoke(cli, ["db", "recompute-estimates", "--project", project_id])
    assert result.exit_code == 0, result.output
    # Two training stages: G, L and one F or B each, in 6 distinct cells (no entropy, no D).
    assert "Recomputed 6 cells from 6 observations; 0 differed" in result.output
    missing = CliRunner().invoke(cli, ["db", "recompute-estimates", "--project", "nope"])
    assert missing.exit_code == 1
    assert "No project" in missing.output
