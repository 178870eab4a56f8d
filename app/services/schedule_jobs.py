"""``POST .../schedules`` as a job: answered inline when the solve is short, 202 when it is long.

The request is checked (policy, task keys, constraints: 422 at once) and queued in one short
transaction; the solve runs as a job (``app/services/planning.py``: read one snapshot, solve
holding no lock, store). The request waits up to ``schedule_wait_s`` for it: a job that ends in
time answers as a synchronous solve would (201 with the schedule, or the solver's problem); a
longer one answers 202 with the job, to poll at ``GET .../schedules/jobs/{job_id}``. A client
that sends ``Prefer: respond-async`` gets the 202 at once.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from ordo_server.app.commit_hooks import after_commit
from ordo_server.app.errors import ErrorCode, NotFoundError
from ordo_server.app.logging_config import REQUEST_ID
from ordo_server.app.repositories import jobs as job_repo
from ordo_server.app.repositories import runs as run_repo
from ordo_server.app.schemas.schedule import (
    JobProblem,
    ScheduleCreate,
    ScheduleJobRead,
    ScheduleJobStatus,
)
from ordo_server.app.services.auth import ProjectContext
from ordo_server.app.services.job_events import wake_workers
from ordo_server.app.services.planning import SCHEDULE_PAYLOAD_REQUEST
from ordo_server.app.services.schedules import check_policy, validate_request
from ordo_server.app.settings import Settings
from ordo_server.models import Job

_STATUS = {
    job_repo.TODO: ScheduleJobStatus.QUEUED,
    job_repo.DOING: ScheduleJobStatus.RUNNING,
    job_repo.DONE: ScheduleJobStatus.SUCCEEDED,
    job_repo.FAILED: ScheduleJobStatus.FAILED,
}


def runs_here(settings: Settings) -> bool:
    """Whether a request waiting for a schedule job runs it itself: only where no worker will.

    An embedded runner without its thread has no one else; anywhere else a worker takes the
    job, so a long solve never holds a request past ``schedule_wait_s``.
    """
    return settings.job_runner == "embedded" and not settings.job_thread


def submit(
    session: Session, context: ProjectContext, request: ScheduleCreate, *, settings: Settings
) -> int:
    """Check ``request`` (422 for what the solve would refuse before solving) and queue it."""
    check_policy(session, context, request)
    validate_request(session, context, request, settings=settings)
    job_id = job_repo.enqueue_schedule(
        session,
        context.id,
        at=run_repo.db_now(session),
        request_id=REQUEST_ID.get(),
        payload={SCHEDULE_PAYLOAD_REQUEST: request.model_dump(mode="json")},
    )
    after_commit(session, wake_workers)
    return job_id


def parse_job_id(job_id: str) -> int:
    """The job's row id; 404 for anything that is not one (ids are decimal strings)."""
    if not job_id.isdecimal() or len(job_id) > 18:
        raise NotFoundError(f"No schedule job {job_id!r} in this project.")
    return int(job_id)


def get_job(session: Session, context: ProjectContext, job_id: str) -> ScheduleJobRead:
    """The project's schedule job (404 for another project's, or a run's plan job)."""
    job = job_repo.get_job(session, context.id, parse_job_id(job_id))
    if job is None or job.kind != job_repo.SCHEDULE:
        raise NotFoundError(f"No schedule job {job_id!r} in this project.")
    return read(job)


def read(job: Job) -> ScheduleJobRead:
    """The API's view of a schedule job."""
    result = job.result or {}
    status = _STATUS[job.status]
    problem = None
    if status is ScheduleJobStatus.FAILED:
        problem = JobProblem.model_validate(result) if "code" in result else _crashed(job)
    return ScheduleJobRead(
        id=str(job.id),
        status=status,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        schedule_id=result.get("schedule_id"),
        problem=problem,
    )


def _crashed(job: Job) -> JobProblem:
    """A job that failed on every attempt with an unexpected error (logged by the worker)."""
    return JobProblem(
        status=503,
        code=ErrorCode.UNAVAILABLE,
        detail=f"The solve failed on each of its {job.attempts} attempts; retry later.",
    )
