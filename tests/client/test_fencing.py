"""The clients keep the lease token they were given and surface a lost lease (live servers).

A run whose holder went silent past the grace period is re-claimed by its ``client_id``; the old
holder's ``Run`` keeps its token, so its ``next`` raises ``LeaseLostError`` and its report,
heartbeat, complete and fail raise ``LeaseFencedError`` (409 ``lease_lost``), storing nothing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest

from ordo_client import (
    AsyncClient,
    Client,
    ConflictError,
    LeaseFencedError,
    LeaseLostError,
    LeaseTokenRequiredError,
    OrdoError,
    _api,
)
from ordo_client.models import TaskSpec
from tests.client.conftest import ProjectAccess, new_project
from tests.conftest import LiveServer, live_server_on

GRACE_S = 1.0
TASKS = [
    TaskSpec(key="math", kind="structured", reward="verifiable"),
    TaskSpec(key="code", kind="structured", reward="verifiable"),
    TaskSpec(key="writing", kind="open_ended", reward="preference"),
]
KEYS = [spec.key for spec in TASKS]
SHORT_LEASE = {"ORDO_HEARTBEAT_GRACE_S": str(GRACE_S), "ORDO_LEASE_SECONDS": str(GRACE_S / 2)}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server whose runs turn stale after ``GRACE_S`` of silence."""
    with live_server_on(request.param, tmp_path_factory, env=SHORT_LEASE) as live:
        yield live


@pytest.fixture
def access(server: LiveServer) -> ProjectAccess:
    """A fresh project with three tasks."""
    with Client(server.base_url, server.admin_token) as admin:
        project = new_project(admin, name=f"fencing-{secrets.token_hex(4)}")
        admin.create_tasks(project.id, TASKS)
    return project


def _values(stage: int) -> dict[str, float]:
    return dict.fromkeys(KEYS, 0.5 + 0.01 * stage)


def _assert_fenced(error: OrdoError) -> None:
    assert isinstance(error, LeaseFencedError)
    assert isinstance(error, ConflictError)
    assert isinstance(error, LeaseLostError)
    assert (error.status, error.code) == (409, "lease_lost")
    assert "token 2 holds it now" in error.detail


def test_a_reclaimed_run_fences_off_the_old_holder(access: ProjectAccess) -> None:
    with access.trainer() as first, access.trainer() as second:
        old = first.start_run(access.id, client_id="job-f")
        assert old.lease_token == 1
        old.report(0, _values(0))
        time.sleep(GRACE_S + 0.3)
        new = second.start_run(access.id, client_id="job-f")
        assert (new.id, new.lease_token) == (old.id, 2)

        with pytest.raises(LeaseLostError, match="token 2 holds it now"):
            old.next()
        assert old.lease_token == 1  # never adopted from next()
        for write in (
            lambda: old.report(1, _values(1)),
            old.heartbeat,
            old.complete,
            lambda: old.fail("stale holder"),
        ):
            with pytest.raises(LeaseFencedError) as fenced:
                write()
            _assert_fenced(fenced.value)
        assert old.lease_token == 1

        # The fenced writes above may outlast the grace period on a loaded machine; the new
        # holder renews its lease first, as a live trainer would.
        assert new.heartbeat().token == 2
        info = new.refresh()
        assert (info.status, info.next_stage, [r.stage for r in info.reports]) == (
            "active",
            1,
            [0],
        )
        assert new.next().stage == 1
        new.report(1, _values(1))
        assert new.complete().status == "completed"


def test_attaching_with_the_kept_token_is_fenced_and_without_takes_the_current(
    access: ProjectAccess,
) -> None:
    with access.trainer() as client:
        run = client.start_run(access.id, client_id="job-a")
        time.sleep(GRACE_S + 0.3)
        client.start_run(access.id, client_id="job-a")  # another holder re-claims it: token 2
        restarted = client.run(access.id, run.id, lease_token=run.lease_token)
        with pytest.raises(LeaseFencedError):
            restarted.report(0, _values(0))
        operator = client.run(access.id, run.id)
        assert operator.lease_token == 2
        assert operator.fail("ended by the operator").status == "failed"


def test_a_write_without_a_token_is_428(access: ProjectAccess) -> None:
    with access.trainer() as client:
        run = client.start_run(access.id)
        with pytest.raises(LeaseTokenRequiredError) as missing:
            client.execute(_api.complete_run(access.id, run.id, lease_token=None))
        assert (missing.value.status, missing.value.code) == (428, "lease_token_required")


def test_the_same_client_id_with_another_request_is_a_conflict(access: ProjectAccess) -> None:
    with access.trainer() as client:
        run = client.start_run(access.id, client_id="job-c")
        assert client.start_run(access.id, client_id="job-c").id == run.id
        with pytest.raises(ConflictError) as conflict:
            client.start_run(access.id, client_id="job-c", adaptive=True)
        assert conflict.value.code == "client_id_conflict"
        assert [e.field for e in conflict.value.errors][:2] == ["client_id", "adaptive"]


def test_the_async_client_keeps_its_token_too(access: ProjectAccess, server: LiveServer) -> None:
    async def scenario() -> None:
        async with (
            AsyncClient(server.base_url, access.trainer_token) as first,
            AsyncClient(server.base_url, access.trainer_token) as second,
        ):
            old = await first.start_run(access.id, client_id="job-async")
            await old.report(0, _values(0))
            await asyncio.sleep(GRACE_S + 0.3)
            new = await second.start_run(access.id, client_id="job-async")
            assert new.lease_token == 2
            with pytest.raises(LeaseLostError):
                await old.next()
            assert old.lease_token == 1
            with pytest.raises(LeaseFencedError) as fenced:
                await old.report(1, _values(1))
            _assert_fenced(fenced.value)
            for write in (old.heartbeat, old.complete):
                with pytest.raises(LeaseFencedError):
                    await write()
            with pytest.raises(LeaseFencedError):
                await old.fail("stale holder")
            await new.report(1, _values(1))
            assert (await new.complete()).status == "completed"

    asyncio.run(scenario())
