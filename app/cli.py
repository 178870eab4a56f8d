"""The server's command line: ``ordo-server serve``, ``worker``,
``db upgrade|current|recompute-estimates`` and ``admin rotate``.

``cli`` is the ``ordo-server`` typer app. ``register`` adds the same commands to another app: the
client distribution's ``ordo`` command loads it through the ``ordo.cli`` entry point, so that with
both installed ``ordo serve`` is ``ordo-server serve``. The server never imports the client.
"""

from __future__ import annotations

import logging.config
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ordo_server.app.settings import Settings

# The server's modules (settings, database, services, solver) and uvicorn are imported inside the
# commands that need them: `ordo --help` and the client commands load none of them.

cli = typer.Typer(
    name="ordo-server",
    help="Ordo's server: serve the API, run job workers, migrate the database.",
    no_args_is_help=True,
    add_completion=False,
)
db_cli = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
SERVER_PANEL = "Server commands (ORDO_DATABASE_URL, ORDO_ADMIN_TOKEN, ...)"
cli.add_typer(db_cli, name="db", rich_help_panel=SERVER_PANEL)
admin_cli = typer.Typer(help="The global admin token.", no_args_is_help=True)
cli.add_typer(admin_cli, name="admin", rich_help_panel=SERVER_PANEL)


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def _load_settings() -> Settings:
    """The settings, or exit 1 naming each invalid variable (never echoing its value)."""
    from pydantic import ValidationError

    from ordo_server.app.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False):
            variable = "ORDO_" + "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            problems.append(message if variable in message else f"{variable}: {message}")
        raise _fail("Invalid settings:\n  " + "\n  ".join(problems)) from None


def _check_schema(settings: Settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from ordo_server.app.db import build_engine, schema_status

    engine = build_engine(settings)
    try:
        status = schema_status(engine)
    except SQLAlchemyError as exc:
        raise _fail(f"Cannot reach the database: {exc.__class__.__name__}: {exc}") from exc
    finally:
        engine.dispose()
    if not status.at_head:
        current = ", ".join(status.current) or "empty (never migrated)"
        raise _fail(
            f"The database schema is behind (at {current}; head is {', '.join(status.head)}). "
            "Run `ordo db upgrade` first."
        )


def _bootstrap_admin(settings: Settings) -> None:
    """Reconcile the global admin with ORDO_ADMIN_TOKEN before serving.

    Unset: at first start, make a token, store it hashed and show it once. Set: the configured
    token replaces the generated ones, so they are revoked.
    """
    from ordo_server.app.db import build_engine, make_database, session_scope
    from ordo_server.app.services.auth import ensure_global_admin, revoke_generated_admins

    engine = build_engine(settings)
    try:
        with session_scope(make_database(engine)) as session:
            if settings.admin_token is None:
                token = ensure_global_admin(session)
                revoked: tuple[str, ...] = ()
            else:
                token = None
                revoked = revoke_generated_admins(session)
    finally:
        engine.dispose()
    if revoked:
        typer.echo(
            f"ORDO_ADMIN_TOKEN is set: revoked {len(revoked)} generated global admin "
            f"token(s) (key id {', '.join(revoked)})."
        )
    if token is not None:
        typer.secho("Generated the global admin token (shown once, stored hashed):", bold=True)
        typer.echo(f"    {token}")


@cli.command(rich_help_panel=SERVER_PANEL)
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default ORDO_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default ORDO_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Serve the API (refuses to start when the schema is behind or the admin token is short)."""
    import uvicorn

    from ordo_server.app.db import is_sqlite
    from ordo_server.app.logging_config import logging_config

    settings = _load_settings()
    host = host or settings.host
    port = port or settings.port
    if workers > 1 and is_sqlite(settings.database_url):
        raise _fail("SQLite allows one writer: run one worker, or use PostgreSQL.")
    _check_schema(settings)
    _bootstrap_admin(settings)
    typer.echo(f"Ordo API docs: http://{host}:{port}/docs")
    with _multiprocess_metrics(workers):
        uvicorn.run(
            "ordo_server.app.main:create_served_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # JSON lines; the app's middleware writes the access lines (with the request id).
            log_config=logging_config(settings.log_level),
            log_level=settings.log_level,
            access_log=False,
        )


@cli.command(rich_help_panel=SERVER_PANEL)
def worker() -> None:
    """Run background jobs (run plans) until interrupted; start any number, on any machine.

    Give the API processes ``ORDO_JOB_RUNNER=external`` when dedicated workers run the jobs.
    """
    import signal
    import threading

    from ordo_server.app.db import build_engine, make_database
    from ordo_server.app.logging_config import logging_config
    from ordo_server.app.runtime import lower_priority, settle_heap
    from ordo_server.app.worker import run_worker

    settings = _load_settings()
    niceness = lower_priority(settings.worker_nice)  # before any thread: threads inherit it
    _check_schema(settings)
    logging.config.dictConfig(logging_config(settings.log_level))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    engine = build_engine(settings)
    settle_heap()
    typer.echo(f"Ordo worker (niceness {niceness}): waiting for jobs (Ctrl-C stops).")
    try:
        run_worker(make_database(engine), settings, stop=stop)
    finally:
        engine.dispose()


@contextmanager
def _multiprocess_metrics(workers: int) -> Iterator[None]:
    """Several workers: a fresh PROMETHEUS_MULTIPROC_DIR (unless set), removed at exit.

    Each worker writes its metrics there and ``/metrics`` sums them (``app.metrics``); the
    workers inherit the variable, set before they start.
    """
    if workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    directory = tempfile.mkdtemp(prefix="ordo-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(directory, ignore_errors=True)


@db_cli.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations up to a revision (default: head)."""
    from alembic import command

    from ordo_server.app.db import alembic_config

    settings = _load_settings()
    command.upgrade(alembic_config(settings.database_url), revision)
    _print_current(settings)


@db_cli.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    _print_current(_load_settings())


@db_cli.command("recompute-estimates")
def db_recompute_estimates(
    project: Annotated[str, typer.Option("--project", help="The project's id.")],
) -> None:
    """Rebuild a project's estimate statistics from its raw observations."""
    from ordo_server.app.db import build_engine, make_database, session_scope
    from ordo_server.app.repositories.projects import get_project
    from ordo_server.app.services.reports import recompute_statistics

    settings = _load_settings()
    engine = build_engine(settings)
    try:
        with session_scope(make_database(engine)) as session:
            if get_project(session, project) is None:
                raise _fail(f"No project with id {project!r}.")
            result = recompute_statistics(session, project)
    finally:
        engine.dispose()
    typer.echo(
        f"Recomputed {result.cells} cells from {result.observations} observations; "
        f"{result.changed_cells} differed from the stored statistics; "
        f"estimates version {result.estimates_version}."
    )


@admin_cli.command("rotate")
def admin_rotate() -> None:
    """Issue a new global admin token (shown once) and revoke the generated ones at once."""
    settings = _load_settings()
    if settings.admin_token is not None:
        raise _fail(
            "ORDO_ADMIN_TOKEN is set, and `ordo serve` revokes generated tokens while it is: "
            "rotate it by changing the variable and restarting, or unset it and run "
            "`ordo admin rotate` again."
        )
    _check_schema(settings)
    from ordo_server.app.db import build_engine, make_database, session_scope
    from ordo_server.app.services.auth import rotate_global_admin

    engine = build_engine(settings)
    try:
        with session_scope(make_database(engine)) as session:
            rotated = rotate_global_admin(session)
    finally:
        engine.dispose()
    if rotated.revoked_key_ids:
        revoked = ", ".join(rotated.revoked_key_ids)
        typer.echo(f"Revoked the previous global admin token(s) (key id {revoked}).")
    else:
        typer.echo("There was no generated global admin token to revoke.")
    typer.secho("New global admin token (shown once, stored hashed):", bold=True)
    typer.echo(f"    {rotated.token}")


def _print_current(settings: Settings) -> None:
    from ordo_server.app.db import build_engine, schema_status

    engine = build_engine(settings)
    try:
        status = schema_status(engine)
    finally:
        engine.dispose()
    current = ", ".join(status.current) or "empty"
    state = "at head" if status.at_head else f"behind head {', '.join(status.head)}"
    typer.echo(f"Database revision: {current} ({state})")


def register(target: typer.Typer) -> None:
    """Add the server commands and groups to ``target`` (the ``ordo.cli`` entry point)."""
    target.registered_commands.extend(cli.registered_commands)
    target.registered_groups.extend(cli.registered_groups)


def main() -> None:
    """Entry point of the ``ordo-server`` script."""
    cli()


if __name__ == "__main__":
    main()
