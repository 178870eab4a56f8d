"""Routes of /v1/projects/{project_id}/predictions."""

from __future__ import annotations

from fastapi import APIRouter

from ordo_server.app.deps import ProjectReader, SessionDep
from ordo_server.app.errors import error_responses
from ordo_server.app.retry import RetryingRoute
from ordo_server.app.schemas.prediction import PredictionCreate, PredictionRead
from ordo_server.app.services import predictions as prediction_service

router = APIRouter(
    route_class=RetryingRoute, prefix="/v1/projects/{project_id}/predictions", tags=["predictions"]
)


@router.post(
    "",
    operation_id="create_predictions",
    summary="Predict the outcome of given orders",
    responses=error_responses(401, 404, 413, 422, 503),
)
def create_predictions(
    body: PredictionCreate, project: ProjectReader, session: SessionDep
) -> PredictionRead:
    """Predict the final utilities of given orders and of a random order (changes nothing)."""
    return prediction_service.predict(session, project, body)
