"""Routes of calibration and of the recomputation of the estimates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ordo_server.app.deps import PROJECT_ROUTE_ERRORS, ProjectAdmin, ProjectReader, SessionDep
from ordo_server.app.errors import error_responses
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.calibration import CalibrationRead, RecomputeRead
from ordo_server.app.schemas.common import MAX_LIST_LIMIT
from ordo_server.app.services import calibration as calibration_service
from ordo_server.app.services import reports as report_service

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
