"""SQLAlchemy ORM models of Ordo (one module per aggregate); importing needs no database."""

from models.base import NAMING_CONVENTION, Base
from models.estimate import EFFECTS, PAIR_EFFECTS, TASK_EFFECTS, Estimate, Observation
from models.job import JOB_STATUSES, Job
from models.project import ApiKey, Project
from models.run import Run, StageEvaluation, StageReport
from models.schedule import Schedule
from models.task import Task

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
    "Task",
]
