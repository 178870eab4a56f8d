"""The synchronous client."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from ordo_client import _api
from ordo_client._calls import Call
from ordo_client._exchange import Backoff, after_response, after_transport_error, request_options
from ordo_client._jobs import SCHEDULE_POLL_S, finished_schedule_id, timed_out
from ordo_client._lease import LeaseKeeper
from ordo_client._retry import RetryPolicy
from ordo_client._run import Run
from ordo_client._version import __version__
from ordo_client.errors import LeaseLostError
from ordo_client.models import (
    ApiKey,
    ApiKeyCreated,
    Calibration,
    EffectName,
    Estimates,
    Health,
    Objective,
    Predictions,
    PriorsImported,
    Project,
    ProjectSettings,
    Readiness,
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

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "ORDO_URL"
TOKEN_ENV = "ORDO_TOKEN"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
PAGE_SIZE = 100


def resolve_url(url: str | None) -> str:
    """The argument, else ``ORDO_URL``, else the local default; without a trailing slash."""
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def resolve_token(token: str | None) -> str | None:
    """The argument, else ``ORDO_TOKEN``, else no token."""
    return token or os.environ.get(TOKEN_ENV) or None


def client_headers(token: str | None) -> dict[str, str]:
    """Default headers: JSON, a user agent and the bearer token when there is one."""
    headers = {"Accept": "application/json", "User-Agent": f"ordo-client/{__version__}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def http_timeout(timeout_s: float, connect_timeout_s: float) -> httpx.Timeout:
    """One timeout for reads, writes and the pool; a shorter one to connect."""
    return httpx.Timeout(timeout_s, connect=connect_timeout_s)


class Client:
    """Synchronous client of an Ordo server.

    Parameters
    ----------
    url : str, optional
        Server base URL; default ``ORDO_URL``, else ``http://127.0.0.1:8000``.
    token : str, optional
        API key; default ``ORDO_TOKEN``.
    timeout_s : float
        Read/write timeout of one attempt (seconds); solving a schedule may take longer and has
        its own, ``solve_timeout_s``.
    connect_timeout_s : float
        Time to establish a connection (seconds).
    retry : RetryPolicy
        Attempts and backoff for calls that are safe to repeat.
    transport : httpx.BaseTransport, optional
        Replaces the network transport (for proxies or in-process servers).

    Use it as a context manager, or call :meth:`close`, to release its connections.
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.token = resolve_token(token)
        self.retry = retry or RetryPolicy()
        self.solve_timeout_s = solve_timeout_s
        self._http = httpx.Client(
            base_url=self.url,
            headers=client_headers(self.token),
            timeout=http_timeout(timeout_s, connect_timeout_s),
            transport=transport,
        )

    # --- plumbing ---

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def execute(self, call: Call[T]) -> T:
        """Send ``call``, repeating it when it is safe and the failure is transient."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(**request_options(call))
            except httpx.TransportError as exc:
                outcome: T | Backoff = after_transport_error(
                    call, exc, attempt=attempt, policy=self.retry, base_url=self.url
                )
            else:
                outcome = after_response(call, response, attempt=attempt, policy=self.retry)
            if not isinstance(outcome, Backoff):
                return outcome
            time.sleep(outcome.delay_s)

    # --- health ---

    def health(self) -> Health:
        """Liveness of the server process."""
        return self.execute(_api.health())

    def ready(self) -> Readiness:
        """Readiness: the database answers and its schema is at head (retried while not)."""
        return self.execute(_api.ready())

    # --- projects and keys ---

    def create_project(
        self,
        name: str,
        *,
        description: str = "",
        settings: ProjectSettings | Mapping[str, Any] | None = None,
    ) -> Project:
        """Create a project (global admin token only)."""
        return self.execute(_api.create_project(name, description=description, settings=settings))

    def list_projects(self, *, limit: int = PAGE_SIZE, offset: int = 0) -> list[Project]:
        """One page of the projects the token can see."""
        return self.execute(_api.list_projects(limit=limit, offset=offset))

    def iter_projects(self, *, page_size: int = PAGE_SIZE) -> Iterator[Project]:
        """Every project the token can see, fetched page by page."""
        offset = 0
        while True:
            page = self.list_projects(limit=page_size, offset=offset)
            yield from page
            if len(page) < page_size:
                return
            offset += len(page)

    def get_project(self, project: str) -> Project:
        """One project by id."""
        return self.execute(_api.get_project(project))

    def create_api_key(
        self,
        project: str,
        *,
        name: str = "",
        role: str = "trainer",
        expires_at: datetime | None = None,
    ) -> ApiKeyCreated:
        """Create a key of the project; ``.key`` holds the full token, shown only now."""
        return self.execute(
            _api.create_api_key(project, name=name, role=role, expires_at=expires_at)
        )

    def list_api_keys(self, project: str) -> list[ApiKey]:
        """The project's keys (display prefixes only)."""
        return self.execute(_api.list_api_keys(project))

    def revoke_api_key(self, project: str, key_id: str) -> None:
        """Revoke a key; it answers 401 from then on."""
        self.execute(_api.revoke_api_key(project, key_id))

    # --- tasks ---

    def create_tasks(self, project: str, tasks: Sequence[_api.TaskInput]) -> list[Task]:
        """Add tasks in one batch (all or none); each gets the next free index."""
        return self.execute(_api.create_tasks(project, tasks))

    def list_tasks(self, project: str) -> list[Task]:
        """The project's tasks in index order."""
        return self.execute(_api.list_tasks(project))

    def get_task(self, project: str, key: str) -> Task:
        """One task by key."""
        return self.execute(_api.get_task(project, key))

    def update_task(self, project: str, key: str, **changes: Any) -> Task:
        """Change fields of a task (``weight=2.0``, ``scale=100.0``, ``key="new"``...)."""
        return self.execute(_api.update_task(project, key, changes))

    # --- priors and estimates ---

    def import_priors(self, project: str, priors: Sequence[_api.PriorInput]) -> PriorsImported:
        """Import priors in long form: ``{"effect", "src", "dst", "mean", "std"}`` each."""
        return self.execute(_api.import_priors(project, priors))

    def import_prior_matrix(
        self,
        project: str,
        *,
        effect: EffectName,
        tasks: Sequence[str],
        mean: Sequence[Sequence[float | None]] | Sequence[float | None],
        std: float | Sequence[Sequence[float | None]] | Sequence[float | None],
    ) -> PriorsImported:
        """Import priors in wide form: an n x n matrix (F, B) or an n-vector (L, G, D)."""
        return self.execute(
            _api.import_prior_matrix(project, effect=effect, tasks=tasks, mean=mean, std=std)
        )

    def get_estimates(self, project: str) -> Estimates:
        """Current posterior mean, std and count of every effect."""
        return self.execute(_api.get_estimates(project))

    def get_estimates_csv(self, project: str) -> str:
        """The estimates as CSV: ``effect,src,dst,mean,std,count``."""
        return self.execute(_api.get_estimates_csv(project))

    # --- schedules and predictions ---

    def solve_schedule(
        self,
        project: str,
        request: ScheduleRequest | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Schedule:
        """Solve for the best order over the current estimates; stored as a new schedule.

        Give a ``ScheduleRequest`` (or dict), or its fields as keywords:
        ``solve_schedule(pid, objective="maximin", constraints=[...], time_limit_s=5)``.
        Not retried (each solve stores a schedule). A long solve is a job on the server (202):
        it is polled until it ends, up to ``solve_timeout_s`` in all.
        """
        started = time.monotonic()
        answer = self.execute(
            _api.create_schedule(
                project, _api.schedule_request(request, options), timeout_s=self.solve_timeout_s
            )
        )
        while isinstance(answer, ScheduleJob):
            schedule_id = finished_schedule_id(answer, url=self.url)
            if schedule_id is not None:
                return self.get_schedule(project, schedule_id)
            waited_s = time.monotonic() - started
            if waited_s >= self.solve_timeout_s:
                raise timed_out(answer, waited_s)
            time.sleep(SCHEDULE_POLL_S)
            answer = self.get_schedule_job(project, answer.id)
        return answer

    def get_schedule_job(self, project: str, job_id: str) -> ScheduleJob:
        """A schedule solve the server answered with 202: ``queued``, ``running``,
        ``succeeded`` (with ``schedule_id``) or ``failed`` (with its ``problem``)."""
        return self.execute(_api.get_schedule_job(project, job_id))

    def list_schedules(
        self,
        project: str,
        *,
        page_size: int = 50,
        page_token: str | None = None,
        run_id: str | None = None,
    ) -> SchedulePage:
        """One page of the schedule history, newest first (``next_page_token`` for more)."""
        return self.execute(
            _api.list_schedules(project, page_size=page_size, page_token=page_token, run_id=run_id)
        )

    def iter_schedules(
        self, project: str, *, page_size: int = 50, run_id: str | None = None
    ) -> Iterator[Schedule]:
        """Every schedule of the history, newest first, fetched page by page."""
        token: str | None = None
        while True:
            page = self.list_schedules(
                project, page_size=page_size, page_token=token, run_id=run_id
            )
            yield from page.items
            if page.next_page_token is None:
                return
            token = page.next_page_token

    def get_schedule(self, project: str, schedule_id: str) -> Schedule:
        """One schedule, with the estimates version it used."""
        return self.execute(_api.get_schedule(project, schedule_id))

    def predict(
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
        return self.execute(_api.predict(project, body))

    # --- runs ---

    def start_run(
        self,
        project: str,
        *,
        adaptive: bool = False,
        strategy: Strategy = "exploit",
        schedule_id: str | None = None,
        schedule: ScheduleRequest | Mapping[str, Any] | None = None,
        client_id: str | None = None,
    ) -> Run:
        """Start a run from a stored schedule, or by solving now with ``schedule``'s options.

        ``client_id`` makes creation idempotent: the same id returns the same run, so a trainer
        that restarts gets its run back. Without one the client makes a unique id, so that
        creation can still be retried safely after a lost answer.
        """
        body = _api.run_body(
            adaptive=adaptive,
            strategy=strategy,
            schedule_id=schedule_id,
            schedule=schedule,
            client_id=client_id,
        )
        info = self.execute(_api.create_run(project, body, timeout_s=self.solve_timeout_s))
        return Run(self, project, info)

    def run(self, project: str, run_id: str, *, lease_token: int | None = None) -> Run:
        """Attach to an existing run (after a restart, for instance).

        ``lease_token``: the token this holder was given (``run.lease_token``, kept across the
        restart), so that its writes are fenced off if another holder took the run over since.
        Without one the run's current token is taken: the caller declares itself the holder (an
        operator ending a run, a process that knows no other holder exists).
        """
        return Run(self, project, self.get_run(project, run_id), lease_token=lease_token)

    def get_run(self, project: str, run_id: str) -> RunInfo:
        """One run: stages, schedules followed, reports and lease."""
        return self.execute(_api.get_run(project, run_id))

    def get_calibration(self, project: str, *, limit: int = 100) -> Calibration:
        """Predicted against observed final utilities of the ``limit`` latest completed runs."""
        return self.execute(_api.get_calibration(project, limit=limit))

    def list_runs(
        self,
        project: str,
        *,
        page_size: int = 50,
        page_token: str | None = None,
        status: str | None = None,
    ) -> RunPage:
        """One page of the project's runs, newest first."""
        return self.execute(
            _api.list_runs(project, page_size=page_size, page_token=page_token, status=status)
        )

    def lease(
        self,
        run: Run,
        *,
        interval_s: float | None = None,
        lost_after_s: float | None = None,
        on_lost: Callable[[LeaseLostError], None] | None = None,
    ) -> LeaseKeeper:
        """``with client.lease(run):`` heartbeats from a daemon thread until the block ends.

        A lost lease is surfaced: ``keeper.lost``/``keeper.check()``, the ``on_lost`` callback
        and ``LeaseLostError`` when the block ends.
        """
        return LeaseKeeper(run, interval_s=interval_s, lost_after_s=lost_after_s, on_lost=on_lost)
