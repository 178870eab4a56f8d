"""Following a schedule solve that the server answered with 202 (a job), for both clients."""

from __future__ import annotations

from ordo_client.errors import OrdoError, error_from_problem
from ordo_client.models import ScheduleJob

# Seconds between two polls of a schedule job (the server's Retry-After is 1 s).
SCHEDULE_POLL_S = 1.0


def finished_schedule_id(job: ScheduleJob, *, url: str = "") -> str | None:
    """The schedule a job stored once it ``succeeded``; ``None`` while it is queued or running.

    Raises
    ------
    OrdoError
        The job ``failed``: the error the solve would have answered inline (``BadRequestError``
        for constraints that admit no order, ``UnavailableError`` for no order in time...).
    """
    if job.status == "succeeded" and job.schedule_id is not None:
        return job.schedule_id
    if job.status == "failed":
        raise error_from_problem(job.problem or {}, url=url)
    return None


def timed_out(job: ScheduleJob, waited_s: float) -> OrdoError:
    """The error of a job still unfinished when the client stops waiting."""
    return OrdoError(
        status=202,
        title="Accepted",
        detail=f"Schedule job {job.id} is still {job.status} after {waited_s:.0f} s; follow it "
        "with get_schedule_job() (raise solve_timeout_s to wait longer).",
        code="",
        problem=job.model_dump(mode="json"),
    )
