"""The asynchronous client: the sync client's twin for asyncio code.

It sends the same ``Call`` objects (``_api``) and judges each attempt with the same helpers
(``_exchange``), so paths, bodies, retry safety, error types and backoff are those of
:class:`~ordo_client.Client`; only the I/O differs (``httpx.AsyncClient``, ``asyncio.sleep``,
an asyncio task instead of a thread for the lease).

>>> async with AsyncClient() as ordo:  # ORDO_URL and ORDO_TOKEN
...     run = await ordo.start_run(project_id, adaptive=True, client_id="job-42")
...     async with ordo.lease(run):
...         async for stage in run.stages():
...             if stage.task is not None:
...                 await asyncio.to_thread(train, stage.task)  # keep the loop free to beat
...             await run.report(stage.stage, evaluate_every_task())
...     await run.complete()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ordo_client import _api
from ordo_client._calls import Call
from ordo_client._client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    PAGE_SIZE,
    client_headers,
    http_timeout,
    resolve_token,
    resolve_url,
)
from ordo_client._exchange import Backoff, after_response, after_transport_error, request_options
from ordo_client._jobs import SCHEDULE_POLL_S, finished_schedule_id, timed_out
from ordo_client._lease import (
    beat_interval_s,
    default_lost_after_s,
    lose,
    refusal_reason,
    silence_reason,
)
from ordo_client._retry import RetryPolicy
from ordo_client._run import RunHandle, awaits_plan, report_body, stage_after
from ordo_client.errors import LeaseLostError, OrdoConnectionError, OrdoError
from ordo_client.models import (
    ApiKey,
    ApiKeyCreated,
    Calibration,
    EffectName,
    Estimates,
    Health,
    Lease,
    NextStage,
    Objective,
    Predictions,
    PriorsImported,
    Project,
    ProjectSettings,
    Readiness,
    ReportAccepted,
    RunInfo,
    RunPage,
    Schedule,
    ScheduleJob,
    SchedulePage,
    ScheduleRequest,
    Strategy,
    Task,
)

T = TypeVar("T")
logger = logging.getLogger("ordo_client")


class AsyncClient:
    """Asynchronous client of an Ordo server; the arguments are those of ``Client``.

    Parameters
    ----------
    url : str, optional
        Server base URL; default ``ORDO_URL``, else ``http://127.0.0.1:8000``.
    token : str, optional
        API key; default ``ORDO_TOKEN``.
    timeout_s : float
        Read/write timeout of one attempt (seconds).
    connect_timeout_s : float
        Time to establish a connection (seconds).
    solve_timeout_s : float
        Timeout of calls that may solve a schedule (seconds).
    retry : RetryPolicy
        Attempts and backoff for calls that are safe to repeat.
    transport : httpx.AsyncBaseTransport, optional
        Replaces the network transport.

    Use it with ``async with``, or ``await client.aclose()``, to release its connections.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        solve_timeout_s: float = 300.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        self.retry = retry or RetryPolicy()
        self.solve_timeout_s = solve_timeout_s
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers=client_headers(self.token),
            timeout=http_timeout(timeout_s, connect_timeout_s),
            transport=transport,
        )

    # --- plumbing ---

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    async def execute(self, call: Call[T]) -> T:
        """Send ``call``, repeating it when it is safe and the failure is transient."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(**request_options(call))
            except httpx.TransportError as exc:
                outcome: T | Backoff = after_transport_error(
                    call, exc, attempt=attempt, policy=self.retry, base_url=self.url
                )
            else:
                outcome = after_response(call, response, attempt=attempt, policy=self.retry)
            if not isinstance(outcome, Backoff):
                return outcome
            await asyncio.sleep(outcome.delay_s)

    # --- health ---

    async def health(self) -> Health:
        """Liveness of the server process."""
        return await self.execute(_api.health())

    async def ready(self) -> Readiness:
        """Readiness: the database answers and its schema is at head (retried while not)."""
        return await self.execute(_api.ready())

    # --- projects and keys ---

    async def create_project(
        self,
        name: str,
        *,
        description: str = "",
        settings: ProjectSettings | Mapping[str, Any] | None = None,
    ) -> Project:
        """Create a project (global admin token only)."""
        return await self.execute(
            _api.create_project(name, description=description, settings=settings)
        )

    async def list_projects(self, *, limit: int = PAGE_SIZE, offset: int = 0) -> list[Project]:
        """One page of the projects the token can see."""
        return await self.execute(_api.list_projects(limit=limit, offset=offset))

    async def iter_projects(self, *, page_size: int = PAGE_SIZE) -> AsyncIterator[Project]:
        """Every project the token can see, fetched page by page (``async for``)."""
        offset = 0
        while True:
            page = await self.list_projects(limit=page_size, offset=offset)
            for project in page:
                yield project
            if len(page) < page_size:
                return
            offset += len(page)

    async def get_project(self, project: str) -> Project:
        """One project by id."""
        return await self.execute(_api.get_project(project))

    async def create_api_key(
        self,
        project: str,
        *,
        name: str = "",
        role: str = "trainer",
        expires_at: datetime | None = None,
    ) -> ApiKeyCreated:
        """Create a key of the project; ``.key`` holds the full token, shown only now."""
        return await self.execute(
            _api.create_api_key(project, name=name, role=role, expires_at=expires_at)
        )

    async def list_api_keys(self, project: str) -> list[ApiKey]:
        """The project's keys (display prefixes only)."""
        return await self.execute(_api.list_api_keys(project))

    async def revoke_api_key(self, project: str, key_id: str) -> None:
        """Revoke a key; it answers 401 from then on."""
        await self.execute(_api.revoke_api_key(project, key_id))

    # --- tasks ---

    async def create_tasks(self, project: str, tasks: Sequence[_api.TaskInput]) -> list[Task]:
        """Add tasks in one batch (all or none); each gets the next free index."""
        return await self.execute(_api.create_tasks(project, tasks))

    async def list_tasks(self, project: str) -> list[Task]:
        """The project's tasks in index order."""
        return await self.execute(_api.list_tasks(project))

    async def get_task(self, project: str, key: str) -> Task:
        """One task by key."""
        return await self.execute(_api.get_task(project, key))

    async def update_task(self, project: str, key: str, **changes: Any) -> Task:
        """Change fields of a task (``weight=2.0``, ``scale=100.0``, ``key="new"``...)."""
        return await self.execute(_api.update_task(project, key, changes))

    # --- priors and estimates ---

    async def import_priors(
        self, project: str, priors: Sequence[_api.PriorInput]
    ) -> PriorsImported:
        """Import priors in long form: ``{"effect", "src", "dst", "mean", "std"}`` each."""
        return await self.execute(_api.import_priors(project, priors))

    async def import_prior_matrix(
        self,
        project: str,
        *,
        effect: EffectName,
        tasks: Sequence[str],
        mean: Sequence[Sequence[float | None]] | Sequence[float | None],
        std: float | Sequence[Sequence[float | None]] | Sequence[float | None],
    ) -> PriorsImported:
        """Import priors in wide form: an n x n matrix (F, B) or an n-vector (L, G, D)."""
        return await self.execute(
            _api.import_prior_matrix(project, effect=effect, tasks=tasks, mean=mean, std=std)
        )

    async def get_estimates(self, project: str) -> Estimates:
        """Current posterior mean, std and count of every effect."""
        return await self.execute(_api.get_estimates(project))

    async def get_estimates_csv(self, project: str) -> str:
        """The estimates as CSV: ``effect,src,dst,mean,std,count``."""
        return await self.execute(_api.get_estimates_csv(project))

    # --- schedules and predictions ---

    async def solve_schedule(
        self,
        project: str,
        request: ScheduleRequest | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Schedule:
        """Solve for the best order over the current estimates; stored as a new schedule.

        Give a ``ScheduleRequest`` (or dict), or its fields as keywords. Not retried (each solve
        stores a schedule). A long solve is a job on the server (202): it is polled until it
        ends, up to ``solve_timeout_s`` in all.
        """
        started = time.monotonic()
        answer = await self.execute(
            _api.create_schedule(
                project, _api.schedule_request(request, options), timeout_s=self.solve_timeout_s
            )
        )
        while isinstance(answer, ScheduleJob):
            schedule_id = finished_schedule_id(answer, url=self.url)
            if schedule_id is not None:
                return await self.get_schedule(project, schedule_id)
            waited_s = time.monotonic() - started
            if waited_s >= self.solve_timeout_s:
                raise timed_out(answer, waited_s)
            await asyncio.sleep(SCHEDULE_POLL_S)
            answer = await self.get_schedule_job(project, answer.id)
        return answer

    async def get_schedule_job(self, project: str, job_id: str) -> ScheduleJob:
        """A schedule solve the server answered with 202: ``queued``, ``running``,
        ``succeeded`` (with ``schedule_id``) or ``failed`` (with its ``problem``)."""
        return await self.execute(_api.get_schedule_job(project, job_id))

    async def list_schedules(
        self,
        project: str,
        *,
        page_size: int = 50,
        page_token: str | None = None,
        run_id: str | None = None,
    ) -> SchedulePage:
        """One page of the schedule history, newest first (``next_page_token`` for more)."""
        return await self.execute(
            _api.list_schedules(project, page_size=page_size, page_token=page_token, run_id=run_id)
        )

    async def iter_schedules(
        self, project: str, *, page_size: int = 50, run_id: str | None = None
    ) -> AsyncIterator[Schedule]:
        """Every schedule of the history, newest first, fetched page by page (``async for``)."""
        token: str | None = None
        while True:
            page = await self.list_schedules(
                project, page_size=page_size, page_token=token, run_id=run_id
            )
            for schedule in page.items:
                yield schedule
            if page.next_page_token is None:
                return
            token = page.next_page_token

    async def get_schedule(self, project: str, schedule_id: str) -> Schedule:
        """One schedule, with the estimates version it used."""
        return await self.execute(_api.get_schedule(project, schedule_id))

    async def predict(
        self,
        project: str,
        orders: Sequence[Sequence[str]],
        *,
        tasks: Sequence[str] | None = None,
        rho: float | None = None,
        objective: Objective = "expected",
        kappa: float = 0.0,
    ) -> Predictions:
        """Predicted final utilities of given orders (and of a random order); changes nothing."""
        body = _api.predict_body(orders, tasks=tasks, rho=rho, objective=objective, kappa=kappa)
        return await self.execute(_api.predict(project, body))

    # --- runs ---

    async def start_run(
        self,
        project: str,
        *,
        adaptive: bool = False,
        strategy: Strategy = "exploit",
        schedule_id: str | None = None,
        schedule: ScheduleRequest | Mapping[str, Any] | None = None,
        client_id: str | None = None,
    ) -> AsyncRun:
        """Start a run from a stored schedule, or by solving now with ``schedule``'s options.

        ``client_id`` makes creation idempotent (the same id returns the same run).
        """
        body = _api.run_body(
            adaptive=adaptive,
            strategy=strategy,
            schedule_id=schedule_id,
            schedule=schedule,
            client_id=client_id,
        )
        info = await self.execute(_api.create_run(project, body, timeout_s=self.solve_timeout_s))
        return AsyncRun(self, project, info)

    async def run(self, project: str, run_id: str, *, lease_token: int | None = None) -> AsyncRun:
        """Attach to an existing run (after a restart, for instance); see ``Client.run``."""
        info = await self.get_run(project, run_id)
        return AsyncRun(self, project, info, lease_token=lease_token)

    async def get_run(self, project: str, run_id: str) -> RunInfo:
        """One run: stages, schedules followed, reports and lease."""
        return await self.execute(_api.get_run(project, run_id))

    async def get_calibration(self, project: str, *, limit: int = 100) -> Calibration:
        """Predicted against observed final utilities of the ``limit`` latest completed runs."""
        return await self.execute(_api.get_calibration(project, limit=limit))

    async def list_runs(
        self,
        project: str,
        *,
        page_size: int = 50,
        page_token: str | None = None,
        status: str | None = None,
    ) -> RunPage:
        """One page of the project's runs, newest first."""
        return await self.execute(
            _api.list_runs(project, page_size=page_size, page_token=page_token, status=status)
        )

    def lease(
        self,
        run: AsyncRun,
        *,
        interval_s: float | None = None,
        lost_after_s: float | None = None,
        on_lost: Callable[[LeaseLostError], None] | None = None,
    ) -> AsyncLeaseKeeper:
        """``async with client.lease(run):`` heartbeats from an asyncio task until the block ends.

        The task beats only while the event loop runs: train in ``asyncio.to_thread`` (or
        another process), not in blocking code on the loop. A lost lease is surfaced as by
        ``Client.lease``: ``keeper.lost``/``keeper.check()``, ``on_lost`` and
        ``LeaseLostError`` when the block ends.
        """
        return AsyncLeaseKeeper(
            run, interval_s=interval_s, lost_after_s=lost_after_s, on_lost=on_lost
        )


class AsyncRun(RunHandle["AsyncClient"]):
    """A run bound to the ``AsyncClient`` that started or attached to it (see ``Run``).

    ``info`` is the run as last fetched (``await refresh()`` fetches it again).
    """

    async def refresh(self) -> RunInfo:
        """Fetch the run again (status, stages, schedules, reports, lease)."""
        self.info = await self._client.execute(_api.get_run(self.project, self.id))
        return self.info

    async def next(self) -> NextStage:
        """The stage to report next and the task to train in it (``done`` when none is left).

        While the run's first plan is still being made, asks again (the server waits on each).
        """
        while True:
            call = _api.next_stage(self.project, self.id)
            stage = self._took_stage(await self._client.execute(call))
            if not awaits_plan(stage):
                return stage

    async def stages(self) -> AsyncIterator[NextStage]:
        """Yield the next stage until the run is done; report each before asking again.

        The stage after a report comes from the report's answer where no re-plan is pending,
        from ``next()`` otherwise (see ``Run.stages``).

        Raises
        ------
        RuntimeError
            When the same stage comes back twice: it was not reported in the loop body.
        """
        previous: int | None = None
        while not (stage := await self._stage_after(previous)).done:
            if stage.stage == previous:
                raise RuntimeError(f"stage {stage.stage} was not reported; call run.report(...)")
            previous = stage.stage
            yield stage

    async def _stage_after(self, previous: int | None) -> NextStage:
        known = stage_after(self.last_report, previous)
        return known if known is not None else await self.next()

    async def report(
        self,
        stage: int,
        values: Mapping[str, float],
        *,
        entropy: Mapping[str, float] | None = None,
        stderr: Mapping[str, float] | None = None,
        steps: int | None = None,
        tokens: int | None = None,
        wall_time_s: float | None = None,
    ) -> ReportAccepted:
        """Report stage ``stage``'s evaluations (raw values by task key); safe to repeat.

        A different body for the same stage is a ``ConflictError``.
        """
        body = report_body(
            values,
            entropy=entropy,
            stderr=stderr,
            steps=steps,
            tokens=tokens,
            wall_time_s=wall_time_s,
        )
        accepted = await self._client.execute(
            _api.put_report(
                self.project,
                self.id,
                stage,
                body,
                lease_token=self.lease_token,
                timeout_s=self._client.solve_timeout_s,
            )
        )
        self.last_report = accepted
        return accepted

    async def heartbeat(self) -> Lease:
        """Extend the lease; ``LeaseFencedError`` when another holder took the run over."""
        return await self._client.execute(_api.heartbeat(self.project, self.id, self.lease_token))

    async def complete(self) -> RunInfo:
        """Declare the run finished (``LeaseFencedError`` if this holder lost the lease)."""
        call = _api.complete_run(self.project, self.id, lease_token=self.lease_token)
        self.info = await self._client.execute(call)
        return self.info

    async def fail(self, reason: str) -> RunInfo:
        """Declare the run failed, with the reason (kept with the run)."""
        call = _api.fail_run(self.project, self.id, reason, lease_token=self.lease_token)
        self.info = await self._client.execute(call)
        return self.info


class AsyncLeaseKeeper:
    """The heartbeat task of one run (use it with ``async with``); see ``LeaseKeeper``."""

    def __init__(
        self,
        run: AsyncRun,
        *,
        interval_s: float | None = None,
        lost_after_s: float | None = None,
        on_lost: Callable[[LeaseLostError], None] | None = None,
    ) -> None:
        self.interval_s = beat_interval_s(interval_s, run.heartbeat_interval_s)
        self.lost_after_s = lost_after_s or default_lost_after_s(self.interval_s)
        self.run = run
        self.beats = 0
        self._on_lost = on_lost
        self._error: LeaseLostError | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lost(self) -> bool:
        """Whether the lease was lost."""
        return self._error is not None

    def check(self) -> None:
        """Raise ``LeaseLostError`` if the lease was lost (call it between training steps)."""
        if self._error is not None:
            raise self._error

    def start(self) -> None:
        """Start heartbeating in a task of the running loop (one beat at once)."""
        if self._task is not None:
            raise RuntimeError("the lease keeper was already started")
        self._task = asyncio.create_task(self._loop(), name=f"ordo-lease-{self.run.id}")

    async def stop(self) -> None:
        """Cancel the heartbeat task and wait until it has ended."""
        if self._task is None or self._task.done():
            return
        self._task.cancel()
        # wait() neither raises the task's CancelledError nor hides a cancellation of our own.
        await asyncio.wait([self._task])

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc is None:
            self.check()

    async def _loop(self) -> None:
        clock = asyncio.get_running_loop().time
        last_success = clock()
        while True:
            try:
                await self.run.heartbeat()
            except OrdoError as error:
                if (reason := refusal_reason(error)) is not None:
                    self._error = lose(self.run.id, reason, self._on_lost)
                    return
                logger.warning("heartbeat of run %s failed: %s", self.run.id, error)
            except OrdoConnectionError as error:
                logger.warning("heartbeat of run %s failed: %s", self.run.id, error)
            else:
                self.beats += 1
                last_success = clock()
            reason = silence_reason(clock() - last_success, self.lost_after_s)
            if reason is not None:
                self._error = lose(self.run.id, reason, self._on_lost)
                return
            await asyncio.sleep(self.interval_s)
