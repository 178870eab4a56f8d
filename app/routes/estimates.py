"""Routes of priors and estimates."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from ordo_server.app.deps import PROJECT_ROUTE_ERRORS, ProjectAdmin, ProjectReader, SessionDep
from ordo_server.app.errors import error_responses
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.estimate import EstimatesRead, PriorsImport, PriorsImported
from ordo_server.app.services import estimates as estimate_service

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}", tags=["estimates"]
)

_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON (default) or, with `format=csv`, CSV with the header "
        "`effect,src,dst,mean,std,count`.",
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": "effect,src,dst,mean,std,count\n"
                "F,math,code,0.05,0.06,1\n"
                "B,code,poetry,-0.1,0.03,2\n"
                "L,,math,0.6,0.03,2\n",
            }
        },
    }
}


@router.post(
    "/priors",
    operation_id="import_priors",
    summary="Import prior estimates of the effects",
    responses=error_responses(*PROJECT_ROUTE_ERRORS, 403, 413, 422),
)
def import_priors(
    body: Annotated[PriorsImport, Body()], project: ProjectAdmin, session: SessionDep
) -> PriorsImported:
    """Import priors by task key, in long form (a list) or wide form (a matrix)."""
    return estimate_service.import_priors(session, project, body)


@router.get(
    "/estimates",
    operation_id="get_estimates",
    summary="Get the effect estimates (JSON or CSV)",
    response_model=EstimatesRead,
    responses={**_CSV_RESPONSE, **error_responses(*PROJECT_ROUTE_ERRORS, 422)},
)
def get_estimates(
    project: ProjectReader,
    session: SessionDep,
    format: Annotated[Literal["json", "csv"], Query(description="Response format.")] = "json",
) -> Any:
    """Get the current posterior mean, std and count of every effect."""
    if format == "csv":
        text = estimate_service.estimates_csv(session, project)
        return Response(content=text, media_type="text/csv")
    return estimate_service.get_estimates(session, project)
