"""Python client of the Ordo curriculum scheduling service (needs only httpx and pydantic).

>>> from ordo_client import Client
>>> with Client() as ordo:  # ORDO_URL, ORDO_TOKEN
...     run = ordo.start_run(project_id, client_id="job-42")
...     with ordo.lease(run):
...         while (stage := run.next()) is not None:
...             train(stage.task)
...             run.report(stage.stage, evaluate_all_tasks())
"""

from __future__ import annotations

from ordo_client._client import Client
from ordo_client._retry import NO_RETRY, RetryPolicy
from ordo_client._version import __version__
from ordo_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    LeaseLostError,
    NotFoundError,
    OrdoConnectionError,
    OrdoError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UnavailableError,
)

__all__ = [
    "NO_RETRY",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "FieldError",
    "LeaseLostError",
    "NotFoundError",
    "OrdoConnectionError",
    "OrdoError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "UnavailableError",
    "__version__",
]
