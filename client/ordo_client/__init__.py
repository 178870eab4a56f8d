"""Python client of the Ordo curriculum scheduling service (needs only httpx and pydantic).

>>> from ordo_client import Client
>>> with Client() as ordo:  # ORDO_URL and ORDO_TOKEN
...     run = ordo.start_run(project_id, adaptive=True, client_id="job-42")
...     with ordo.lease(run):
...         for stage in run.stages():  # stage 0 first: the baseline evaluation
...             if stage.task is not None:
...                 train(stage.task)
...             run.report(stage.stage, evaluate_every_task())
...     run.complete()

``AsyncClient`` is the asyncio twin: the same methods as awaitables, ``AsyncRun`` and
``async with ordo.lease(run):``.
"""

from __future__ import annotations

from ordo_client._async import AsyncClient, AsyncLeaseKeeper, AsyncRun
from ordo_client._client import Client
from ordo_client._lease import LeaseKeeper
from ordo_client._retry import NO_RETRY, RetryPolicy
from ordo_client._run import Run
from ordo_client._version import __version__
from ordo_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    LeaseFencedError,
    LeaseLostError,
    LeaseTokenRequiredError,
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
    "AsyncClient",
    "AsyncLeaseKeeper",
    "AsyncRun",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "FieldError",
    "LeaseFencedError",
    "LeaseKeeper",
    "LeaseLostError",
    "LeaseTokenRequiredError",
    "NotFoundError",
    "OrdoConnectionError",
    "OrdoError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RetryPolicy",
    "Run",
    "ServerError",
    "UnavailableError",
    "__version__",
]
