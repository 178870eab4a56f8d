"""The Python client against a live server process (SQLite and PostgreSQL), no mocked transport."""

from __future__ import annotations

import secrets

import pytest
from ordo_client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from ordo_client.models import PriorEntry, TaskSpec

from tests.client.conftest import ProjectAccess
from tests.conftest import LiveServer

SIX_TASKS = [
    TaskSpec(key="math", kind="structured", reward="verifiable"),
    TaskSpec(key="code", kind="structured", reward="verifiable"),
    TaskSpec(key="qa", kind="structured", reward="verifiable"),
    TaskSpec(key="writing", kind="open_ended", reward="preference"),
    TaskSpec(key="dialogue", kind="open_ended", reward="preference"),
    TaskSpec(key="summarization", kind="open_ended", reward="preference"),
]


def test_health_and_readiness(admin: Client) -> None:
    assert admin.health().status == "ok"
    ready = admin.ready()
    assert ready.status == "ok"
    assert ready.checks == {"database": "ok", "schema": "ok"}


def test_url_and_token_come_from_the_environment(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_URL", server.base_url + "/")
    monkeypatch.setenv("ORDO_TOKEN", server.admin_token)
    with Client() as client:
        assert client.url == server.base_url
        name = f"env-{secrets.token_hex(4)}"
        created = client.create_project(name)
        assert client.get_project(created.id).name == name
    with Client(token="wrong-token") as client, pytest.raises(AuthenticationError) as caught:
        client.list_projects()
    assert caught.value.status == 401


def test_projects_keys_and_pagination(admin: Client) -> None:
    names = [f"page-{secrets.token_hex(3)}-{i}" for i in range(5)]
    ids = {admin.create_project(name, description="paged").id for name in names}
    page = admin.list_projects(limit=2)
    assert len(page) == 2
    seen = [project.id for project in admin.iter_projects(page_size=2)]
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))
    project_id = next(iter(ids))
    created = admin.create_api_key(project_id, name="ci", role="trainer")
    assert created.key.startswith(created.prefix)
    listed = admin.list_api_keys(project_id)
    assert [key.key_id for key in listed] == [created.key_id]
    assert "key" not in listed[0].model_dump()
    admin.revoke_api_key(project_id, created.key_id)
    with Client(admin.url, created.key) as revoked, pytest.raises(AuthenticationError):
        revoked.get_project(project_id)


def test_errors_carry_the_problem_details(admin: Client, access: ProjectAccess) -> None:
    name = f"dup-{secrets.token_hex(4)}"
    admin.create_project(name)
    with pytest.raises(ConflictError) as conflict:
        admin.create_project(name)
    assert conflict.value.status == 409
    assert conflict.value.title == "Conflict"
    assert name in conflict.value.detail
    with pytest.raises(BadRequestError) as invalid:
        admin.create_tasks(access.id, [{"key": "ok"}, {"key": "bad key!"}])
    assert invalid.value.status == 422
    assert invalid.value.code == "validation_failed"
    assert [e.field for e in invalid.value.errors] == ["tasks[1].key"]
    assert "tasks[1].key" in str(invalid.value)
    with pytest.raises(NotFoundError) as missing:
        admin.get_task(access.id, "nope")
    assert missing.value.problem["status"] == 404
    with access.trainer() as trainer, pytest.raises(PermissionDeniedError):
        trainer.create_tasks(access.id, [TaskSpec(key="x")])


def test_tasks_priors_and_estimates(access: ProjectAccess) -> None:
    with access.admin() as client:
        tasks = client.create_tasks(access.id, SIX_TASKS)
        assert [(t.key, t.index) for t in tasks] == [(s.key, i) for i, s in enumerate(SIX_TASKS)]
        assert [t.key for t in client.list_tasks(access.id)] == [s.key for s in SIX_TASKS]
        updated = client.update_task(access.id, "qa", weight=2.0, scale=100.0)
        assert (updated.weight, updated.scale) == (2.0, 100.0)
        assert client.get_task(access.id, "qa").weight == 2.0

        long_form = client.import_priors(
            access.id,
            [
                PriorEntry(effect="B", src="code", dst="writing", mean=-0.1, std=0.02),
                {"effect": "L", "dst": "math", "mean": 0.6, "std": 0.05},
            ],
        )
        assert long_form.imported == 2
        keys = ["math", "code", "writing"]
        f_mean: list[list[float | None]] = [[None, 0.02, None], [0.03, None, None], [None] * 3]
        wide = client.import_prior_matrix(
            access.id,
            effect="F",
            tasks=keys,
            mean=f_mean,
            std=0.01,
        )
        assert wide.imported == 2
        assert wide.estimates_version > long_form.estimates_version

        estimates = client.get_estimates(access.id)
        assert estimates.version == wide.estimates_version
        assert estimates.tasks == [s.key for s in SIX_TASKS]
        mean, std = estimates.pair("B", "code", "writing")
        assert mean == pytest.approx(-0.1)
        assert std == pytest.approx(0.02)
        assert list(estimates.pair("F", "code", "math")) == pytest.approx([0.03, 0.01])
        assert estimates.L.mean[0] == pytest.approx(0.6)
        assert estimates.F.mean[0][0] is None

        csv_text = client.get_estimates_csv(access.id)
        lines = csv_text.strip().splitlines()
        assert lines[0] == "effect,src,dst,mean,std,count"
        assert any(line.startswith("B,code,writing,-0.1") for line in lines)
