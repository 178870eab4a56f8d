"""Service configuration: one pydantic-settings class read from ``ORDO_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
ADMIN_TOKEN_MIN_CHARS = 32
ADMIN_TOKEN_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
METRICS_TOKEN_MIN_CHARS = 32
# Rate limit counters: in this process, or in Redis (shared by every process and replica).
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


def _long_enough(value: SecretStr | None, variable: str, minimum: int) -> SecretStr | None:
    """``value`` when unset or at least ``minimum`` characters; the error never echoes it."""
    if value is not None and len(value.get_secret_value()) < minimum:
        raise ValueError(
            f"{variable} must be at least {minimum} characters "
            f"(it has {len(value.get_secret_value())}); make one with: {ADMIN_TOKEN_HINT}"
        )
    return value


class Settings(BaseSettings):
    """Everything the service reads from its environment (prefix ``ORDO_``).

    Tests build their own instance and pass it to ``create_app``; nothing else reads the
    environment.
    """

    # hide_input_in_errors: a rejected value (a short admin token) never reaches a log or a trace.
    model_config = SettingsConfigDict(
        env_prefix="ORDO_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    database_url: str = Field(
        default="sqlite:///./ordo.sqlite",
        description="SQLAlchemy URL: a SQLite file (default, in the working directory) or "
        "postgresql+psycopg://user@host:port/db.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    admin_token: SecretStr | None = Field(
        default=None,
        description=f"Global admin token, at least {ADMIN_TOKEN_MIN_CHARS} characters. When "
        "unset, `ordo serve` generates one at first start, stores it hashed and prints it once; "
        "when set, `ordo serve` revokes the generated ones.",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=f"Bearer token of `/metrics` (for a scraper), at least "
        f"{METRICS_TOKEN_MIN_CHARS} characters. A global admin key is accepted too.",
    )
    max_body_bytes: int = Field(default=MIB, gt=0, description="Request body limit (bytes).")
    solver_time_limit_s: float = Field(default=30.0, gt=0)
    solver_workers: int = Field(default=1, ge=1, le=64)

    # SQLite: FULL keeps acknowledged reports across power loss (reliability.md §1.7).
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    # PostgreSQL connection pool and per-connection timeouts (reliability.md §1.6, §1.8).
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=5, ge=0)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)
    db_connect_timeout_s: int = Field(default=5, ge=1)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    db_lock_timeout_ms: int = Field(default=5_000, ge=0)
    db_retry_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description=(
            "Tries of a request whose transaction lost a race (serialization failure, deadlock, "
            "lock timeout, SQLite busy, a concurrent insert of the same key); 1 never retries."
        ),
    )

    key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=60,
        description=(
            "How long an API process remembers a signed-in key, skipping its lookup (seconds; 0: "
            "never). A revocation reaches every process at once on PostgreSQL; on SQLite another "
            "process's revocation (the CLI) within this time."
        ),
    )

    retry_after_s: int = Field(default=2, ge=1, description="Retry-After sent with 503 answers.")

    # Rate limits (app/rate_limits.py), written as "1200/minute" or "5/second;1000/hour".
    rate_limit_enabled: bool = Field(
        default=True, description="Apply the rate limits below (per key, per address, sign-ins)."
    )
    rate_limit_per_key: str = Field(
        default="1200/minute",
        description="Requests of one API key (all its trainers together), counted after sign-in.",
    )
    rate_limit_per_address: str = Field(
        default="2400/minute", description="Requests from one client address, signed in or not."
    )
    auth_failure_limit: str = Field(
        default="20/minute",
        description="Failed sign-ins (answered 401) from one client address; past it, every "
        "request from that address answers 429 before its key is checked.",
    )
    rate_limit_storage_url: str = Field(
        default="memory://",
        description="Where counters live: memory:// (each process its own) or redis://host:port/db "
        "(shared by every process and replica; install the `redis` extra).",
    )
    lease_seconds: float = Field(default=60.0, gt=0, description="Run lease length (seconds).")
    heartbeat_grace_s: float = Field(default=120.0, gt=0)

    job_runner: Literal["embedded", "external"] = Field(
        default="embedded",
        description=(
            "Who runs background jobs (run plans): embedded, a worker thread in each `ordo serve` "
            "process; external, only `ordo worker` processes (scale-out on PostgreSQL)."
        ),
    )
    job_thread: bool = Field(
        default=True,
        description=(
            "Embedded runner only: start the worker thread. Off, a request that waits for a job "
            "(`GET .../next`, `POST .../runs`) runs it itself."
        ),
    )
    job_lease_s: float = Field(
        default=90.0,
        gt=0,
        description="A claimed job not finished within this many seconds is claimed again.",
    )
    job_batch_size: int = Field(
        default=64,
        ge=1,
        le=1000,
        description=(
            "Most plan jobs of one project a worker claims together: one read, one model fit, "
            "each run's plan stored on its own. The lease must cover the whole batch."
        ),
    )
    worker_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description=(
            "How much `ordo worker` lowers its CPU priority (Unix niceness added at start; 0 "
            "keeps it): where workers share cores with `ordo serve`, requests go first and "
            "re-plans take what is left (faster reports, later plans)."
        ),
    )
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    job_retry_backoff_s: float = Field(default=1.0, gt=0)
    job_poll_s: float = Field(
        default=1.0, gt=0, description="Longest sleep of an idle worker between queue checks."
    )
    schedule_wait_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description=(
            "How long `POST .../schedules` waits for its solve (a job) before answering 202 "
            "with the job to poll."
        ),
    )
    plan_wait_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description=(
            "How long `GET .../next` and `POST .../runs` wait for a pending plan before answering "
            "with the current one and `plan_pending: true`."
        ),
    )

    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host header allow-list (TrustedHostMiddleware); unset means no check.",
    )
    docs_enabled: bool = True
    log_level: str = Field(default="info", description="Log level of the server's JSON logs.")

    @field_validator("rate_limit_per_key", "rate_limit_per_address", "auth_failure_limit")
    @classmethod
    def _is_a_rate_limit(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as error:
            raise ValueError(
                f"{value!r} is not a rate limit; write e.g. '1200/minute' or '5/second;1000/hour'"
            ) from error
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _is_a_limit_storage(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme not in RATE_LIMIT_STORAGE_SCHEMES:
            known = ", ".join(f"{s}://" for s in RATE_LIMIT_STORAGE_SCHEMES)
            raise ValueError(f"the rate limit storage must be one of {known}")
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "ORDO_ADMIN_TOKEN", ADMIN_TOKEN_MIN_CHARS)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_long(cls, value: SecretStr | None) -> SecretStr | None:
        return _long_enough(value, "ORDO_METRICS_TOKEN", METRICS_TOKEN_MIN_CHARS)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
