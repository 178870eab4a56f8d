"""SQLAlchemy ORM models of Ordo (one module per aggregate); importing needs no database."""

from ordo_server.models.base import NAMING_CONVENTION, Base
from ordo_server.models.estimate import (
    EFFECTS,
    PAIR_EFFECTS,
    TASK_EFFECTS,
    Estimate,
    Observation,
    StatDelta,
)
from ordo_server.models.job import JOB_STATUSES, Job
from ordo_server.models.project import ApiKey, Project
from ordo_server.models.run import Run, StageEvaluation, StageReport
from ordo_server.models.schedule import Schedule
from ordo_server.models.task import Task

__all__ = [
    "EFFECTS",
    "JOB_STATUSES",
    "NAMING_CONVENTION",
    "PAIR_EFFECTS",
    "TASK_EFFECTS",
    "ApiKey",
    "Base",
    "Estimate",
    "Job",
    "Observation",
    "Project",
    "Run",
    "Schedule",
    "StageEvaluation",
    "StageReport",
    "StatDelta",
    "Task",
]
