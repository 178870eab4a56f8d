"""The Python client against a live server process (SQLite and PostgreSQL), no mocked transport."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from ordo_client import (
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    LeaseLostError,
    NotFoundError,
    PermissionDeniedError,
    Run,
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


def _project_with_tasks(access: ProjectAccess) -> list[str]:
    keys = [spec.key for spec in SIX_TASKS[:4]]
    with access.admin() as client:
        client.create_tasks(access.id, SIX_TASKS[:4])
        client.import_priors(
            access.id,
            [
                {"effect": "B", "src": "code", "dst": "writing", "mean": -0.2, "std": 0.01},
                {"effect": "B", "src": "math", "dst": "writing", "mean": -0.15, "std": 0.01},
            ],
        )
    return keys


def test_schedules_history_and_predictions(access: ProjectAccess) -> None:
    keys = _project_with_tasks(access)
    with access.admin() as client:
        first = client.solve_schedule(access.id, label="first")
        # Training writing after code and math costs it: writing goes after both.
        assert first.order.index("writing") > max(first.order.index(k) for k in ("code", "math"))
        assert sorted(first.order) == sorted(keys)
        assert first.status == "optimal"
        pinned = client.solve_schedule(
            access.id,
            {"constraints": [{"type": "pinned", "task": "writing", "position": "first"}]},
            label="pinned",
        )
        assert pinned.order[0] == "writing"
        assert pinned.objective < first.objective
        third = client.solve_schedule(access.id, objective="maximin", seed=3)
        page = client.list_schedules(access.id, page_size=2)
        assert [s.id for s in page.items] == [third.id, pinned.id]
        assert page.next_page_token is not None
        everything = [s.id for s in client.iter_schedules(access.id, page_size=2)]
        assert everything == [third.id, pinned.id, first.id]
        assert client.get_schedule(access.id, first.id).order == first.order

        predictions = client.predict(access.id, [first.order, pinned.order])
        assert [p.order for p in predictions.orders] == [first.order, pinned.order]
        best, worse = predictions.orders
        assert best.objective.mean == pytest.approx(first.objective, abs=1e-6)
        assert worse.objective.mean < best.objective.mean
        assert predictions.random_order.objective.mean < best.objective.mean
        with pytest.raises(BadRequestError) as bad:
            client.solve_schedule(
                access.id,
                constraints=[
                    {"type": "precedence", "before": "math", "after": "code"},
                    {"type": "precedence", "before": "code", "after": "math"},
                ],
            )
        assert bad.value.status == 422


def _values(keys: list[str], stage: int) -> dict[str, float]:
    return {key: 0.5 + 0.01 * stage + 0.001 * i for i, key in enumerate(keys)}


def test_a_run_from_start_to_finish(access: ProjectAccess) -> None:
    keys = _project_with_tasks(access)
    with access.trainer() as client:
        run = client.start_run(access.id, adaptive=True, client_id="job-1")
        assert client.start_run(access.id, adaptive=True, client_id="job-1").id == run.id
        trained = []
        with client.lease(run, interval_s=0.2) as lease:
            for stage in run.stages():
                if stage.task is not None:
                    trained.append(stage.task)
                assert stage.stage == len(trained)
                values, entropy = _values(keys, len(trained)), dict.fromkeys(keys, 1.0)
                accepted = run.report(len(trained), values, entropy=entropy)
                assert accepted.report.stage == len(trained)
                assert run.report(len(trained), values, entropy=entropy) == accepted
        assert lease.beats >= 1
        assert not lease.lost
        assert sorted(trained) == sorted(keys)
        with pytest.raises(ConflictError) as conflict:
            run.report(1, {keys[0]: 0.0})
        assert conflict.value.status == 409
        info = run.refresh()
        assert [r.stage for r in info.reports] == list(range(len(keys) + 1))
        assert [s.task for s in info.stages] == trained
        assert run.complete().status == "completed"
        listed = client.list_runs(access.id)
        assert [r.id for r in listed.items] == [run.id]
        history = list(client.iter_schedules(access.id, run_id=run.id))
        assert len(history) >= 1
        assert all(s.run_id == run.id for s in history)
        estimates = client.get_estimates(access.id)
        assert estimates.B.count[0][1] is not None


class _CountingTransport(httpx.BaseTransport):
    """The client's real transport, counting the ``GET .../next`` requests, and those answered
    with no stage yet (a first plan still being made: ``Run.next`` asks again)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.asked_next = 0
        self.no_stage_yet = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "GET" and request.url.path.endswith("/next"):
            self.asked_next += 1
            answer = json.loads(response.read())
            self.no_stage_yet += answer["plan_pending"] and answer["stage"] is None
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("adaptive", [False, True])
def test_stages_ask_the_server_only_where_the_report_leaves_the_next_stage_open(
    access: ProjectAccess, adaptive: bool
) -> None:
    keys = _project_with_tasks(access)
    transport = _CountingTransport()
    with Client(access.base_url, access.trainer_token, transport=transport) as client:
        run = client.start_run(access.id, adaptive=adaptive)
        trained: list[str] = []
        pending = 0
        for stage in run.stages():
            if stage.task is not None:
                trained.append(stage.task)
            assert stage.stage == len(trained)
            accepted = run.report(len(trained), _values(keys, len(trained)))
            pending += accepted.plan_pending
        info = run.refresh()
    assert sorted(trained) == sorted(keys)
    assert [s.task for s in info.stages] == trained  # the stages the server planned, in turn
    assert [r.stage for r in info.reports] == list(range(len(keys) + 1))
    # Once at the start, then once per plan the server was still making.
    assert transport.asked_next == 1 + pending + transport.no_stage_yet
    # A re-plan after every training stage that leaves a choice (and maybe the first plan).
    assert pending >= len(keys) - 2 if adaptive else pending <= 1


def test_stages_refuse_to_go_on_when_a_stage_was_not_reported(access: ProjectAccess) -> None:
    keys = _project_with_tasks(access)
    with access.trainer() as client:
        run = client.start_run(access.id)
        stages = run.stages()
        assert next(stages).stage == 0
        run.report(0, _values(keys, 0))
        assert next(stages).stage == 1
        with pytest.raises(RuntimeError, match="stage 1 was not reported"):
            next(stages)


def test_failing_a_run_keeps_the_reason(access: ProjectAccess) -> None:
    _project_with_tasks(access)
    with access.trainer() as client:
        run = client.start_run(access.id)
        failed = run.fail("CUDA OOM at stage 1")
        assert (failed.status, failed.fail_reason) == ("failed", "CUDA OOM at stage 1")
        assert client.get_run(access.id, run.id).status == "failed"


def _lose_the_lease(
    client: Client, access: ProjectAccess, run: Run, lost: list[LeaseLostError]
) -> None:
    with client.lease(run, interval_s=0.1, on_lost=lost.append) as lease:
        with access.trainer() as other:
            other.run(access.id, run.id).fail("taken down by the operator")
        deadline = time.monotonic() + 10
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLostError):
            lease.check()


def test_a_lost_lease_is_surfaced(access: ProjectAccess) -> None:
    _project_with_tasks(access)
    lost: list[LeaseLostError] = []
    with access.trainer() as client:
        run = client.start_run(access.id, client_id="job-lost")
        with pytest.raises(LeaseLostError, match="lost"):
            _lose_the_lease(client, access, run, lost)
    assert len(lost) == 1
