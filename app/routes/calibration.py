"""Routes of calibration and of the recomputation of the estimates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import PROJECT_ROUTE_ERRORS, ProjectAdmin, ProjectReader, SessionDep
from app.errors import error_responses
from app.retry import RetryingRoute
from app.schemas.calibration import CalibrationRead, RecomputeRead
from app.schemas.common import MAX_LIST_LIMIT
from app.services import calibration as calibration_service
from app.services import reports as report_service

router = APIRouter(route_class=RetryingRoute, prefix="/v1/projects/{project_id}")


@router.get(
    "/calibration",
    operation_id="get_calibration",
    summary="Compare predicted and observed outcomes of finished runs",
    tags=["runs"],
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 422),
)
def get_calibration(
    project: ProjectReader,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Most recent runs.")] = 100,
) -> CalibrationRead:
    """Compare predicted and observed final utilities of completed runs (mean absolute error)."""
    return calibration_service.calibration(session, project, limit=limit)


@router.post(
    "/estimates/recompute",
    operation_id="recompute_estimates",
    summary="Recompute the estimates from the raw observations",
    tags=["estimates"],
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 403),
)
def recompute_estimates(project: ProjectAdmin, session: SessionDep) -> RecomputeRead:
    """Rebuild every estimate's statistics from the raw observations."""
    return report_service.recompute_statistics(session, project.id)
