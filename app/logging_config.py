"""JSON logs, one object per line, each carrying the id of the request it belongs to.

``ordo serve`` hands :func:`logging_config` to uvicorn, so its own lines (startup, errors) and
the app's (``app.*``, the access lines of ``ordo.access``) go to standard output through
:class:`JsonFormatter`. The request id lives in :data:`REQUEST_ID`, set by
``app.middleware.RequestContextMiddleware`` for the request's task (and copied into the
threads that serve it). Lines hold the message and chosen fields only, never request headers.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("ordo_request_id", default=None)
ACCESS_LOGGER = "ordo.access"
# Fields a log call may add with ``extra=`` that the formatter writes out.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "client")


class JsonFormatter(logging.Formatter):
    """``{"timestamp", "level", "logger", "message", "request_id", ...}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object (no newline inside: exceptions are escaped)."""
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        for field in EXTRA_FIELDS:
            if field in record.__dict__:
                line[field] = record.__dict__[field]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def logging_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (uvicorn's ``log_config``): everything as JSON lines."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        # uvicorn's loggers keep no handlers of their own: their lines go through the root.
        "loggers": {
            name: {"handlers": [], "level": level, "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
