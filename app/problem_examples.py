"""Examples of the API's problem+json answers, shown per status in the OpenAPI spec.

Each route declares its error statuses with :func:`app.errors.error_responses`; every status
gets the examples named in :data:`DEFAULT_EXAMPLES` unless the route names its own (``examples=``)
from :data:`PROBLEM_EXAMPLES`, e.g. the 409s a report can meet. The bodies are what the server
answers (``tests/app/test_openapi.py`` checks each against the ``Problem`` model and its status).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

Example = dict[str, Any]


def _problem(
    status: int,
    code: str,
    detail: str,
    *,
    errors: Iterable[tuple[str, str]] = (),
    **extra: Any,
) -> Example:
    body: Example = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    issues = [{"field": field, "reason": reason} for field, reason in errors]
    if issues:
        body["errors"] = issues
    body.update(extra)
    return body


# name -> (summary shown in the docs, body)
PROBLEM_EXAMPLES: Mapping[str, tuple[str, Example]] = {
    "unauthorized": (
        "No key, or an unknown, revoked or expired one",
        _problem(401, "unauthorized", "Missing or invalid API key."),
    ),
    "forbidden": (
        "A trainer key on an admin route",
        _problem(403, "forbidden", "This action needs an admin key."),
    ),
    "not_global_admin": (
        "A project key where the global admin token is needed",
        _problem(403, "forbidden", "This action needs the global admin token."),
    ),
    "not_found": (
        "No such object in this project",
        _problem(404, "not_found", "Run not found."),
    ),
    "project_exists": (
        "The name is taken",
        _problem(409, "conflict", "A project named 'llm-posttrain' already exists."),
    ),
    "task_exists": (
        "A task key is taken",
        _problem(409, "conflict", "Tasks already exist: math."),
    ),
    "client_id_conflict": (
        "The client_id names a run started with another request",
        _problem(
            409,
            "client_id_conflict",
            "client_id 'job-2026-11-27-a' names run 82862022-93c8-4f8e-b395-a8af086e791b, "
            "created with a different request; send the same request to get that run back, or "
            "use a new client_id for a new run.",
            errors=[
                (
                    "client_id",
                    "Names run 82862022-93c8-4f8e-b395-a8af086e791b, created with a different "
                    "request",
                ),
                ("adaptive", "Differs from the request that created the run"),
            ],
        ),
    ),
    "run_finished": (
        "The run is completed or failed",
        _problem(409, "run_finished", "The run is completed; it takes no more reports."),
    ),
    "run_already_finished": (
        "The run ended the other way before",
        _problem(409, "run_finished", "The run already failed."),
    ),
    "report_mismatch": (
        "The stage was reported before, with another body",
        _problem(
            409,
            "report_mismatch",
            "Stage 1 was already reported with a different body.",
            errors=[("body", "Differs from the stored report of this stage")],
        ),
    ),
    "stage_out_of_turn": (
        "Not the stage the run expects",
        _problem(
            409,
            "stage_out_of_turn",
            "Stage 3 is out of turn: the run expects stage 2.",
            errors=[("stage", "Expected stage 2")],
        ),
    ),
    "plan_pending": (
        "A training stage before the run's first plan",
        _problem(
            409,
            "plan_pending",
            "The run's first plan is still being made: ask `GET .../next` for the stage to train.",
            errors=[("stage", "No plan yet")],
        ),
    ),
    "lease_lost": (
        "Another holder re-claimed the run",
        _problem(
            409,
            "lease_lost",
            "Lease token 1 does not hold the run: token 2 holds it now (the run was re-claimed "
            "by its `client_id`); stop working on it.",
            errors=[("header.Ordo-Lease-Token", "Current token is 2")],
        ),
    ),
    "content_too_large": (
        "The body is over `ORDO_MAX_BODY_BYTES`",
        _problem(413, "content_too_large", "The request body is over the limit of 1048576 bytes."),
    ),
    "validation_failed": (
        "A field out of range",
        _problem(
            422,
            "validation_failed",
            "The request is invalid; see `errors`.",
            errors=[("tasks[0].weight", "Input should be greater than or equal to 0")],
        ),
    ),
    "unknown_task": (
        "A task key the project does not have",
        _problem(
            422,
            "validation_failed",
            "Unknown task keys: chess.",
            errors=[("evaluations[2].task", "Unknown task key 'chess'")],
        ),
    ),
    "infeasible": (
        "Constraints that admit no order",
        _problem(
            422,
            "infeasible",
            "The constraints form a precedence cycle: math -> code -> math.",
            errors=[
                ("constraints[0]", "precedence: math before code"),
                ("constraints[1]", "precedence: code before math"),
            ],
        ),
    ),
    "lease_token_required": (
        "A run write without the holder's lease token",
        _problem(
            428,
            "lease_token_required",
            "A write on a run needs the holder's lease token in the `Ordo-Lease-Token` header "
            "(`lease.token` of the run as created or claimed).",
            errors=[("header.Ordo-Lease-Token", "Field required")],
        ),
    ),
    "rate_limited": (
        "Too many requests",
        _problem(429, "rate_limited", "Too many requests; retry after 2 seconds."),
    ),
    "internal_error": (
        "An unexpected error (logged with the request id)",
        _problem(500, "internal_error", "Internal server error."),
    ),
    "database_unavailable": (
        "The database does not answer (with `Retry-After`)",
        _problem(503, "database_unavailable", "The database is unavailable; retry later."),
    ),
    "schema_not_migrated": (
        "The database schema is behind the code",
        _problem(
            503,
            "schema_not_migrated",
            "The database schema is not migrated; run `ordo db upgrade`.",
        ),
    ),
    "solver_unavailable": (
        "No order found within the time limit",
        _problem(503, "unavailable", "no order found within 5 s (CP-SAT status UNKNOWN)"),
    ),
    "not_ready": (
        "`/readyz`: the schema is behind",
        _problem(
            503,
            "not_ready",
            "Not ready: schema: behind head 0004",
            checks={"database": "ok", "schema": "behind head 0004"},
        ),
    ),
}

# The examples a status gets when its route names none.
DEFAULT_EXAMPLES: Mapping[int, tuple[str, ...]] = {
    401: ("unauthorized",),
    403: ("forbidden",),
    404: ("not_found",),
    409: ("task_exists",),
    413: ("content_too_large",),
    422: ("validation_failed",),
    428: ("lease_token_required",),
    429: ("rate_limited",),
    500: ("internal_error",),
    503: ("database_unavailable", "schema_not_migrated"),
}


def problem_examples(status: int, names: Iterable[str] | None = None) -> dict[str, Example]:
    """OpenAPI ``examples`` (name -> summary and value) of ``status``: ``names`` or the defaults.

    Raises ``KeyError`` for a status with no default examples or an unknown name, and
    ``ValueError`` for an example of another status, so a route cannot declare one silently.
    """
    chosen = tuple(names) if names is not None else DEFAULT_EXAMPLES[status]
    examples: dict[str, Example] = {}
    for name in chosen:
        summary, value = PROBLEM_EXAMPLES[name]
        if value["status"] != status:
            raise ValueError(f"example {name!r} is a {value['status']}, not a {status}")
        examples[name] = {"summary": summary, "value": value}
    return examples
