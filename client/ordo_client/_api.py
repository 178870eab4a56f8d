"""Builders of the ``Call`` of each endpoint (paths as in the server's ``openapi.json``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from ordo_client._calls import (
    Call,
    dump,
    dump_all,
    list_parser,
    model_parser,
    no_content,
    params,
    segment,
    text_parser,
)
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
    PriorEntry,
    PriorMatrix,
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
    TaskSpec,
)

TaskInput = TaskSpec | Mapping[str, Any]
PriorInput = PriorEntry | Mapping[str, Any]
ScheduleInput = ScheduleRequest | Mapping[str, Any]


LEASE_TOKEN_HEADER = "Ordo-Lease-Token"


def lease_headers(lease_token: int | None) -> dict[str, str]:
    """The fencing header of a write on a run (none without a token: the server answers 428)."""
    return {} if lease_token is None else {LEASE_TOKEN_HEADER: str(lease_token)}


def project_path(project: str, *rest: str) -> str:
    """``/v1/projects/{project}/...`` with every segment encoded."""
    return "/".join(["/v1/projects", segment(project), *(segment(part) for part in rest)])


# --- request bodies built from method arguments ---


def schedule_request(request: ScheduleInput | None, options: Mapping[str, Any]) -> ScheduleRequest:
    """A ``ScheduleRequest`` from a request (or dict) and keyword options, the options winning."""
    body = dump(request) if request is not None else {}
    body.update(options)
    return ScheduleRequest(**body)


def predict_body(
    orders: Sequence[Sequence[str]],
    *,
    tasks: Sequence[str] | None,
    rho: float | None,
    objective: Objective,
    kappa: float,
) -> dict[str, Any]:
    """The body of a prediction request (``tasks`` and ``rho`` only when given)."""
    body: dict[str, Any] = {
        "orders": [list(order) for order in orders],
        "objective": objective,
        "kappa": kappa,
    }
    if tasks is not None:
        body["tasks"] = list(tasks)
    if rho is not None:
        body["rho"] = rho
    return body


def run_body(
    *,
    adaptive: bool,
    strategy: Strategy,
    schedule_id: str | None,
    schedule: ScheduleInput | None,
    client_id: str | None,
) -> dict[str, Any]:
    """The body of run creation; without a ``client_id`` a unique one, so it can be retried."""
    body: dict[str, Any] = {
        "adaptive": adaptive,
        "strategy": strategy,
        "client_id": client_id or f"ordo-client-{uuid.uuid4().hex}",
    }
    if schedule_id is not None:
        body["schedule_id"] = schedule_id
    if schedule is not None:
        body["schedule"] = dump(schedule)
    return body


# --- health ---


def health() -> Call[Health]:
    return Call("GET", "/healthz", model_parser(Health), retry_safe=True)


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", model_parser(Readiness), retry_safe=True)


# --- projects and keys ---


def create_project(
    name: str, *, description: str, settings: ProjectSettings | Mapping[str, Any] | None
) -> Call[Project]:
    body: dict[str, Any] = {"name": name, "description": description}
    if settings is not None:
        body["settings"] = dump(settings)
    return Call("POST", "/v1/projects", model_parser(Project), json=body)


def list_projects(*, limit: int, offset: int) -> Call[list[Project]]:
    return Call(
        "GET",
        "/v1/projects",
        list_parser(Project),
        params=params(limit=limit, offset=offset),
        retry_safe=True,
    )


def get_project(project: str) -> Call[Project]:
    return Call("GET", project_path(project), model_parser(Project), retry_safe=True)


def create_api_key(
    project: str, *, name: str, role: str, expires_at: datetime | None
) -> Call[ApiKeyCreated]:
    body: dict[str, Any] = {"name": name, "role": role}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return Call("POST", project_path(project, "keys"), model_parser(ApiKeyCreated), json=body)


def list_api_keys(project: str) -> Call[list[ApiKey]]:
    return Call("GET", project_path(project, "keys"), list_parser(ApiKey), retry_safe=True)


def revoke_api_key(project: str, key_id: str) -> Call[None]:
    # Revoking twice leaves the same state, but the second answer differs: not retried.
    return Call("DELETE", project_path(project, "keys", key_id), no_content)


# --- tasks ---


def create_tasks(project: str, tasks: Sequence[TaskInput]) -> Call[list[Task]]:
    body = {"tasks": dump_all(tasks)}
    return Call("POST", project_path(project, "tasks"), list_parser(Task), json=body)


def list_tasks(project: str) -> Call[list[Task]]:
    return Call("GET", project_path(project, "tasks"), list_parser(Task), retry_safe=True)


def get_task(project: str, key: str) -> Call[Task]:
    return Call("GET", project_path(project, "tasks", key), model_parser(Task), retry_safe=True)


def update_task(project: str, key: str, changes: Mapping[str, Any]) -> Call[Task]:
    # Not retried: a repeat of a PATCH that renamed the task would look for the old key.
    return Call(
        "PATCH", project_path(project, "tasks", key), model_parser(Task), json=dict(changes)
    )


# --- priors and estimates ---


def import_priors(project: str, priors: Sequence[PriorInput]) -> Call[PriorsImported]:
    return Call(
        "POST", project_path(project, "priors"), model_parser(PriorsImported), json=dump_all(priors)
    )


def import_prior_matrix(
    project: str,
    *,
    effect: EffectName,
    tasks: Sequence[str],
    mean: Sequence[Sequence[float | None]] | Sequence[float | None],
    std: float | Sequence[Sequence[float | None]] | Sequence[float | None],
) -> Call[PriorsImported]:
    matrix = PriorMatrix(effect=effect, tasks=list(tasks), mean=list(mean), std=std)
    return Call(
        "POST",
        project_path(project, "priors"),
        model_parser(PriorsImported),
        json=matrix.model_dump(mode="json"),
    )


def get_estimates(project: str) -> Call[Estimates]:
    return Call("GET", project_path(project, "estimates"), model_parser(Estimates), retry_safe=True)


def get_estimates_csv(project: str) -> Call[str]:
    return Call(
        "GET",
        project_path(project, "estimates"),
        text_parser,
        params={"format": "csv"},
        retry_safe=True,
    )


# --- schedules and predictions ---


def create_schedule(
    project: str, request: ScheduleInput, *, timeout_s: float
) -> Call[Schedule | ScheduleJob]:
    """The schedule (201), or the job solving it when the solve outlasts the server's wait (202)."""
    return Call(
        "POST",
        project_path(project, "schedules"),
        schedule_or_job,
        json=dump(request),
        timeout_s=timeout_s,
    )


def schedule_or_job(response: httpx.Response) -> Schedule | ScheduleJob:
    """Parse a ``POST .../schedules`` answer: 202 carries a job, 201 the schedule."""
    if response.status_code == 202:
        return ScheduleJob.model_validate_json(response.content)
    return Schedule.model_validate_json(response.content)


def get_schedule_job(project: str, job_id: str) -> Call[ScheduleJob]:
    return Call(
        "GET",
        project_path(project, "schedules", "jobs", job_id),
        model_parser(ScheduleJob),
        retry_safe=True,
    )


def list_schedules(
    project: str, *, page_size: int, page_token: str | None, run_id: str | None
) -> Call[SchedulePage]:
    return Call(
        "GET",
        project_path(project, "schedules"),
        model_parser(SchedulePage),
        params=params(page_size=page_size, page_token=page_token, run_id=run_id),
        retry_safe=True,
    )


def get_schedule(project: str, schedule_id: str) -> Call[Schedule]:
    return Call(
        "GET",
        project_path(project, "schedules", schedule_id),
        model_parser(Schedule),
        retry_safe=True,
    )


def predict(project: str, body: Mapping[str, Any]) -> Call[Predictions]:
    # A POST only because orders do not fit a query string: it changes nothing on the server,
    # so repeating it is as safe as a GET.
    return Call(
        "POST",
        project_path(project, "predictions"),
        model_parser(Predictions),
        json=dict(body),
        retry_safe=True,
    )


# --- runs and reports ---


def create_run(project: str, body: Mapping[str, Any], *, timeout_s: float) -> Call[RunInfo]:
    # The server returns the existing run for a known client_id: safe to repeat only with one.
    return Call(
        "POST",
        project_path(project, "runs"),
        model_parser(RunInfo),
        json=dict(body),
        retry_safe=body.get("client_id") is not None,
        timeout_s=timeout_s,
    )


def list_runs(
    project: str, *, page_size: int, page_token: str | None, status: str | None
) -> Call[RunPage]:
    return Call(
        "GET",
        project_path(project, "runs"),
        model_parser(RunPage),
        params=params(page_size=page_size, page_token=page_token, status=status),
        retry_safe=True,
    )


def get_run(project: str, run_id: str) -> Call[RunInfo]:
    return Call(
        "GET", project_path(project, "runs", run_id), model_parser(RunInfo), retry_safe=True
    )


def next_stage(project: str, run_id: str) -> Call[NextStage]:
    return Call(
        "GET",
        project_path(project, "runs", run_id, "next"),
        model_parser(NextStage),
        retry_safe=True,
    )


def put_report(
    project: str,
    run_id: str,
    stage: int,
    body: Mapping[str, Any],
    *,
    lease_token: int | None,
    timeout_s: float,
) -> Call[ReportAccepted]:
    # Idempotent: the same body for the same stage returns the stored answer.
    return Call(
        "PUT",
        project_path(project, "runs", run_id, "reports", str(stage)),
        model_parser(ReportAccepted),
        json=dict(body),
        headers=lease_headers(lease_token),
        retry_safe=True,
        timeout_s=timeout_s,
    )


def heartbeat(project: str, run_id: str, lease_token: int | None) -> Call[Lease]:
    # Not retried here: the lease thread beats again on its own schedule.
    return Call(
        "POST",
        project_path(project, "runs", run_id, "heartbeat"),
        model_parser(Lease),
        headers=lease_headers(lease_token),
    )


def complete_run(project: str, run_id: str, *, lease_token: int | None) -> Call[RunInfo]:
    # The server documents complete and fail as idempotent: a repeat returns the same run.
    return Call(
        "POST",
        project_path(project, "runs", run_id, "complete"),
        model_parser(RunInfo),
        headers=lease_headers(lease_token),
        retry_safe=True,
    )


def fail_run(project: str, run_id: str, reason: str, *, lease_token: int | None) -> Call[RunInfo]:
    return Call(
        "POST",
        project_path(project, "runs", run_id, "fail"),
        model_parser(RunInfo),
        json={"reason": reason},
        headers=lease_headers(lease_token),
        retry_safe=True,
    )


# --- calibration ---


def get_calibration(project: str, *, limit: int) -> Call[Calibration]:
    return Call(
        "GET",
        project_path(project, "calibration"),
        model_parser(Calibration),
        params=params(limit=limit),
        retry_safe=True,
    )
