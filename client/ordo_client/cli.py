"""The ``ordo`` command: client commands that talk to a running server through ``ordo_client``.

It needs the ``cli`` extra (``pip install 'ordo-client[cli]'``: typer and rich). Commands that
other installed distributions declare under the ``ordo.cli`` entry point join it: with
``ordo-server`` installed, ``ordo serve``, ``ordo worker``, ``ordo db ...`` and ``ordo admin ...``.

Configuration comes from ``ORDO_URL``, ``ORDO_TOKEN`` and ``ORDO_PROJECT``; the ``--url``,
``--token`` and ``--project`` flags win. Commands whose output is data take
``--format table|json|csv`` (``table`` by default, rendered with rich). Tables fit 100 columns:
they show ids by their first 8 characters and times to the minute; JSON and CSV keep every value
whole. Wherever a command takes a run id, a unique prefix of it (as a table shows) will do.

``ordo_client`` (httpx, pydantic) is imported by the commands that call the server, so that
``ordo --help`` stays fast.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib.metadata import entry_points
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

try:
    import typer
    from rich import box
    from rich.console import Console
    from rich.table import Table
except ModuleNotFoundError as missing:  # pragma: no cover - depends on the installed extras
    raise SystemExit(
        f"The ordo command needs {missing.name}: pip install 'ordo-client[cli]'"
    ) from missing

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ordo_client import Client
    from ordo_client.models import Estimates, Objective, RunInfo, RunSummary, Strategy

T = TypeVar("T")
PROJECT_ENV = "ORDO_PROJECT"
SHORT_ID = 8
FULL_ID_LENGTH = 36  # a uuid4 with its dashes
# Columns holding an id: a table shows their first SHORT_ID characters.
ID_COLUMNS = frozenset(
    {"id", "run", "run_id", "schedule", "schedule_id", "parent_id", "initial_schedule_id",
     "final_schedule_id"}
)  # fmt: skip


class OutputFormat(StrEnum):
    """How data is printed."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


class ExportFormat(StrEnum):
    """How exported evaluations are written."""

    CSV = "csv"
    JSONL = "jsonl"


UrlOption = Annotated[
    str | None, typer.Option("--url", help="Server URL (default ORDO_URL).", show_default=False)
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API key (default ORDO_TOKEN).", show_default=False),
]
ProjectOption = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project id (default ORDO_PROJECT).", show_default=False),
]
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", "-f", help="Output format.", case_sensitive=False)
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the new id (for shell scripts).")
]
ConstraintOption = Annotated[
    list[str] | None,
    typer.Option(
        "--constraint",
        "-c",
        help='A constraint as JSON, e.g. \'{"type":"precedence","before":"math",'
        '"after":"poetry"}\' (repeatable).',
    ),
]
ObjectiveOption = Annotated[str, typer.Option(help="expected, maximin, mean_variance or thompson.")]
TimeLimitOption = Annotated[
    float | None, typer.Option("--time-limit", help="Solver time limit (seconds).")
]


# --- plumbing ----------------------------------------------------------------------------------


def _console() -> Console:
    # Made per command so that output goes to the stdout of the moment (CliRunner swaps it).
    return Console(soft_wrap=True)


def _note(message: str) -> None:
    """A line for people on stderr, so that stdout stays data."""
    Console(stderr=True).print(message, highlight=False)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code=1)


@contextmanager
def _client(url: str | None, token: str | None) -> Iterator[Client]:
    """A client from the flags and ``ORDO_*``; API errors become one red line and exit 1."""
    from ordo_client import Client, OrdoConnectionError, OrdoError

    try:
        with Client(url, token) as client:
            yield client
    except OrdoError as error:
        lines = [f"Error: {error.status} {error.title}: {error.detail}"]
        lines += [f"  {e.field}: {e.reason}" for e in error.errors]
        raise _fail("\n".join(lines)) from error
    except OrdoConnectionError as error:
        raise _fail(f"Cannot reach the server: {error}") from error


def _project(project: str | None) -> str:
    value = project or os.environ.get(PROJECT_ENV)
    if not value:
        raise _fail(f"Give the project id with --project or {PROJECT_ENV}.")
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
    return str(value)


def _short_time(value: Any) -> str:
    """An ISO timestamp to the minute (``2026-12-04 21:21``), anything else as a cell."""
    if isinstance(value, str):
        text: str = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return _cell(value)


def _table_cell(column: str, value: Any) -> str:
    """A cell as a table shows it: short ids, times to the minute, 3 decimals."""
    if value is None:
        return ""
    if column in ID_COLUMNS and isinstance(value, str):
        return value[:SHORT_ID]
    if column.endswith("_at"):
        return _short_time(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return _cell(value)


def _table(title: str | None, columns: Sequence[str]) -> Table:
    """A table whose ids and times never wrap: narrower than the terminal, text columns fold."""
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
    )
    for column in columns:
        fixed = column in ID_COLUMNS or column.endswith("_at")
        table.add_column(column, overflow="fold", no_wrap=fixed)
    return table


def _render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    output: OutputFormat,
    *,
    title: str | None = None,
    raw: Any = None,
    table_columns: Sequence[str] | None = None,
) -> None:
    """Print ``rows`` (dicts) as a rich table, JSON (``raw`` when given) or CSV.

    ``table_columns``: the table's columns when they differ from the CSV's (a narrower view).
    """
    if output is OutputFormat.JSON:
        data = rows if raw is None else raw
        typer.echo(json.dumps(data, indent=2, default=str))
    elif output is OutputFormat.CSV:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
        typer.echo(buffer.getvalue(), nl=False)
    else:
        shown = table_columns or columns
        table = _table(title, shown)
        for row in rows:
            table.add_row(*(_table_cell(column, row.get(column)) for column in shown))
        _console().print(table)


def _dump(models: Sequence[BaseModel]) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


def _take(items: Iterator[T], limit: int) -> list[T]:
    return list(islice(items, limit))


def _json_options(texts: Sequence[str] | None, option: str) -> list[Any]:
    try:
        return [json.loads(text) for text in texts or []]
    except json.JSONDecodeError as error:
        raise _fail(f"{option} is not valid JSON: {error}") from error


def _solve_options(
    *,
    objective: str,
    rho: float | None,
    constraints: Sequence[Any],
    time_limit_s: float | None,
    seed: int,
    label: str,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "objective": objective,
        "constraints": list(constraints),
        "seed": seed,
        "label": label,
    }
    if rho is not None:
        options["rho"] = rho
    if time_limit_s is not None:
        options["time_limit_s"] = time_limit_s
    return options


# --- projects and keys -------------------------------------------------------------------------


def projects(
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    create: Annotated[
        str | None, typer.Option("--create", help="Create a project with this name first.")
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """List the projects the key can see (--create NAME makes one first)."""
    with _client(url, token) as client:
        if create is not None:
            made = client.create_project(create)
            if quiet:
                typer.echo(made.id)
                return
            _note(f"Created project {made.name} ({made.id})")
        rows = _dump(list(client.iter_projects()))
    _render(rows, ["id", "name", "estimates_version", "created_at"], output, title="Projects")


keys_cli = typer.Typer(help="API keys of a project (project admin).", no_args_is_help=True)
KEY_COLUMNS = ["key_id", "name", "role", "prefix", "created_at", "last_used_at", "expires_at",
               "revoked_at"]  # fmt: skip


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for (shown in lists).")] = "",
    role: Annotated[str, typer.Option(help="trainer (runs and reports) or admin.")] = "trainer",
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", min=0.0, help="Expire this many days from now."),
    ] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the token (for shell scripts).")
    ] = False,
) -> None:
    """Create a key; its token is shown this once (the server keeps only a hash)."""
    expires_at = None
    if expires_in_days is not None:
        expires_at = datetime.now(UTC) + timedelta(days=expires_in_days)
    with _client(url, token) as client:
        made = client.create_api_key(_project(project), name=name, role=role, expires_at=expires_at)
    if quiet:
        typer.echo(made.key)
        return
    row = made.model_dump(mode="json")
    if output is OutputFormat.TABLE:
        table_columns = ["key_id", "name", "role", "expires_at"]
        _render([row], KEY_COLUMNS, output, title="Key created", table_columns=table_columns)
        _console().print("Token (shown once, keep it secret):", style="bold")
        typer.echo(made.key)
    else:
        _render([row], [*KEY_COLUMNS, "key"], output, raw=row)


@keys_cli.command("list")
def keys_list(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List the project's keys (display prefixes, never the tokens)."""
    with _client(url, token) as client:
        rows = _dump(client.list_api_keys(_project(project)))
    table_columns = ["key_id", "name", "role", "created_at", "last_used_at", "revoked_at"]
    _render(rows, KEY_COLUMNS, output, title="Keys", table_columns=table_columns)


@keys_cli.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `ordo keys list`).")],
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a key: it answers 401 from now on."""
    with _client(url, token) as client:
        client.revoke_api_key(_project(project), key_id)
    _note(f"Revoked key {key_id}.")


# --- tasks -------------------------------------------------------------------------------------

tasks_cli = typer.Typer(
    help="The project's tasks (`ordo tasks` alone lists them).", invoke_without_command=True
)
TASK_COLUMNS = ["index", "key", "name", "kind", "reward", "goal", "scale", "weight"]


@tasks_cli.callback()
def tasks_default(ctx: typer.Context) -> None:
    """The project's tasks (`ordo tasks` alone lists them)."""
    if ctx.invoked_subcommand is None:
        tasks_list()


@tasks_cli.command("list")
def tasks_list(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List the project's tasks in index order."""
    with _client(url, token) as client:
        rows = _dump(client.list_tasks(_project(project)))
    _render(rows, TASK_COLUMNS, output, title="Tasks")


def _read_tasks(path: Path) -> list[dict[str, Any]]:
    """Tasks from a JSON file: a list of task objects, or ``{"tasks": [...]}``."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise _fail(f"{path}: not valid JSON ({error})") from error
    if isinstance(data, dict):
        data = data.get("tasks")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise _fail(f'{path}: expected a list of task objects or {{"tasks": [...]}}')
    return data


@tasks_cli.command("add")
def tasks_add(
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            help="Keys of the tasks to add, all with the options below.", show_default=False
        ),
    ] = None,
    kind: Annotated[str, typer.Option(help="structured, open_ended or other.")] = "other",
    reward: Annotated[str, typer.Option(help="verifiable, preference or other.")] = "other",
    goal: Annotated[
        str, typer.Option(help="maximize or minimize (of the raw value).")
    ] = "maximize",
    scale: Annotated[float, typer.Option(help="Divides raw values into utility units.")] = 1.0,
    weight: Annotated[float, typer.Option(help="Weight in the objective.")] = 1.0,
    name: Annotated[str, typer.Option(help="Display name (with one key only).")] = "",
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            readable=True,
            help='JSON: a list of tasks ({"key", "kind", ...}), added before the KEYS.',
        ),
    ] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Add tasks in one batch (all or none); each gets the next free index."""
    keys = keys or []
    if name and len(keys) != 1:
        raise _fail("--name names one task: give exactly one KEY with it.")
    batch = _read_tasks(file) if file is not None else []
    for key in keys:
        task: dict[str, Any] = {"key": key, "kind": kind, "reward": reward, "goal": goal,
                                "scale": scale, "weight": weight}  # fmt: skip
        if name:
            task["name"] = name
        batch.append(task)
    if not batch:
        raise _fail("Give the keys of the tasks to add, or --file.")
    with _client(url, token) as client:
        rows = _dump(client.create_tasks(_project(project), batch))
    _render(rows, TASK_COLUMNS, output, title="Tasks added")


# --- priors and estimates ----------------------------------------------------------------------


def _read_priors(path: Path) -> list[dict[str, Any]] | dict[str, Any]:
    """Priors from a JSON file (long list or one wide matrix) or a CSV in long form."""
    text = path.read_text()
    if path.suffix.lower() == ".csv":
        entries: list[dict[str, Any]] = []
        for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            try:
                entry: dict[str, Any] = {
                    "effect": row["effect"].strip(),
                    "dst": row["dst"].strip(),
                    "mean": float(row["mean"]),
                    "std": float(row["std"]),
                }
            except (KeyError, ValueError, AttributeError) as error:
                raise _fail(
                    f"{path}:{line}: need columns effect,src,dst,mean,std ({error})"
                ) from error
            if (row.get("src") or "").strip():
                entry["src"] = row["src"].strip()
            entries.append(entry)
        return entries
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _fail(f"{path}: not valid JSON ({error})") from error
    if not isinstance(data, list | dict):
        raise _fail(f"{path}: expected a list of priors or one matrix object")
    return data


priors_cli = typer.Typer(help="Priors of the effects (F, B, L, G, D).", no_args_is_help=True)


@priors_cli.command("import")
def priors_import(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSON (a list in long form, or one wide matrix) or CSV (effect,src,dst,mean,std).",
        ),
    ],
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Import priors from FILE (long form by task key, or a wide matrix)."""
    body = _read_priors(file)
    with _client(url, token) as client:
        project_id = _project(project)
        if isinstance(body, dict):
            result = client.import_prior_matrix(
                project_id,
                effect=body["effect"],
                tasks=body["tasks"],
                mean=body["mean"],
                std=body["std"],
            )
        else:
            result = client.import_priors(project_id, body)
    _console().print(
        f"Imported {result.imported} prior cells; estimates version {result.estimates_version}."
    )


def _estimate_rows(estimates: Estimates) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    keys = estimates.tasks
    for name in ("F", "B"):
        matrix = estimates.F if name == "F" else estimates.B
        for i, src in enumerate(keys):
            for j, dst in enumerate(keys):
                if i != j:
                    rows.append(_estimate_row(name, src, dst, matrix.mean[i][j], matrix.std[i][j],
                                              matrix.count[i][j]))  # fmt: skip
    for name in ("L", "G", "D"):
        vector = getattr(estimates, name)
        for j, dst in enumerate(keys):
            rows.append(
                _estimate_row(name, None, dst, vector.mean[j], vector.std[j], vector.count[j])
            )
    return rows


def _estimate_row(
    effect: str, src: str | None, dst: str, mean: Any, std: Any, count: Any
) -> dict[str, Any]:
    return {"effect": effect, "src": src, "dst": dst, "mean": mean, "std": std, "count": count}


def estimates(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    effect: Annotated[
        str | None, typer.Option("--effect", help="Only this effect (F, B, L, G or D).")
    ] = None,
) -> None:
    """Show the current posterior mean, std and count of every effect."""
    with _client(url, token) as client:
        project_id = _project(project)
        if output is OutputFormat.CSV and effect is None:
            typer.echo(client.get_estimates_csv(project_id), nl=False)
            return
        current = client.get_estimates(project_id)
    rows = [row for row in _estimate_rows(current) if effect is None or row["effect"] == effect]
    columns = ["effect", "src", "dst", "mean", "std", "count"]
    raw = current.model_dump(mode="json") if effect is None else None
    _render(rows, columns, output, title=f"Estimates (version {current.version})", raw=raw)


# --- schedules and predictions -----------------------------------------------------------------


def schedule(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    objective: ObjectiveOption = "expected",
    rho: Annotated[float | None, typer.Option(help="Forward-transfer retention.")] = None,
    constraint: ConstraintOption = None,
    time_limit_s: TimeLimitOption = None,
    seed: Annotated[int, typer.Option(help="Solver and sampling seed.")] = 0,
    label: Annotated[str, typer.Option(help="Shown in the history.")] = "",
) -> None:
    """Solve for the best order and store it in the history (project admin).

    The API has no solve that stores nothing: to compare given orders without storing, use
    `ordo predict`.
    """
    options = _solve_options(
        objective=objective,
        rho=rho,
        constraints=_json_options(constraint, "--constraint"),
        time_limit_s=time_limit_s,
        seed=seed,
        label=label,
    )
    with _client(url, token) as client:
        project_id = _project(project)
        status = _console().status("Solving ...", spinner="dots")
        with status:
            solved = client.solve_schedule(project_id, options)
    if output is not OutputFormat.TABLE:
        rows = [
            {"stage": k, "task": p.task, "mean": p.mean, "std": p.std, "lower": p.lower,
             "upper": p.upper}
            for k, p in enumerate(solved.predicted.tasks, start=1)
        ]  # fmt: skip
        columns = ["stage", "task", "mean", "std", "lower", "upper"]
        _render(rows, columns, output, raw=solved.model_dump(mode="json"))
        return
    console = _console()
    gap = "" if solved.gap is None else f", gap {solved.gap:.2%}"
    console.print(f"Schedule {solved.id} (version {solved.version})", highlight=False)
    console.print(
        f"{solved.status} by {solved.method} in {solved.wall_time_s:.2f}s; objective "
        f"{solved.objective:.4f}{gap}; estimates version {solved.estimates_version}",
        highlight=False,
    )
    table = _table(
        "Order and predicted final utility (95 % interval)",
        ("stage", "task", "predicted", "interval"),
    )
    for k, p in enumerate(solved.predicted.tasks, start=1):
        table.add_row(str(k), p.task, f"{p.mean:.3f}", f"[{p.lower:.3f}, {p.upper:.3f}]")
    console.print(table)


def predict(
    orders: Annotated[
        list[str],
        typer.Argument(
            help="Orders as comma-separated task keys, e.g. math,code,poetry.", show_default=False
        ),
    ],
    objective: ObjectiveOption = "expected",
    rho: Annotated[float | None, typer.Option(help="Forward-transfer retention.")] = None,
    kappa: Annotated[float, typer.Option(help="Risk aversion of mean_variance.")] = 0.0,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Predict given orders next to a random order, without solving or storing anything."""
    parsed = [[key.strip() for key in order.split(",") if key.strip()] for order in orders]
    with _client(url, token) as client:
        predicted = client.predict(
            _project(project),
            parsed,
            rho=rho,
            objective=cast("Objective", objective),
            kappa=kappa,
        )
    rows = [
        {"order": " > ".join(o.order), "objective": o.objective.mean, "std": o.objective.std,
         "score": o.score}
        for o in predicted.orders
    ]  # fmt: skip
    random = predicted.random_order
    rows.append({"order": "(random order)", "objective": random.objective.mean,
                 "std": random.objective.std, "score": random.score})  # fmt: skip
    title = f"Predicted objective (estimates version {predicted.estimates_version})"
    _render(rows, ["order", "objective", "std", "score"], output, title=title,
            raw=predicted.model_dump(mode="json"))  # fmt: skip


def history(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    limit: Annotated[int, typer.Option(min=1, help="At most this many schedules.")] = 20,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's plans.")] = None,
) -> None:
    """Show the schedule history, newest first."""
    with _client(url, token) as client:
        items = _take(client.iter_schedules(_project(project), run_id=run_id), limit)
    rows = [{**item.model_dump(mode="json"), "order": " > ".join(item.order)} for item in items]
    columns = ["version", "id", "created_at", "status", "objective", "order", "run_id", "label"]
    _render(rows, columns, output, title="Schedules", raw=_dump(items))


# --- runs --------------------------------------------------------------------------------------

runs_cli = typer.Typer(
    help="Training runs (`ordo runs` alone lists them).", invoke_without_command=True
)
RUN_COLUMNS = ["id", "client_id", "status", "adaptive", "strategy", "next_stage", "stage_count",
               "created_at", "finished_at", "fail_reason"]  # fmt: skip
RUN_TABLE_COLUMNS = ["id", "client_id", "status", "mode", "stage", "created_at", "fail_reason"]
CLIENT_ID_WIDTH = 20


def _run_row(run: RunSummary) -> dict[str, Any]:
    """A run as a row: its fields, plus ``mode`` and ``stage`` for the narrow table."""
    row = run.model_dump(mode="json")
    client_id = run.client_id or ""
    if len(client_id) > CLIENT_ID_WIDTH:
        client_id = client_id[: CLIENT_ID_WIDTH - 1] + "…"
    mode = f"adaptive {run.strategy}" if run.adaptive else run.strategy
    return {**row, "mode": mode, "stage": f"{run.next_stage}/{run.stage_count}",
            "client_id_short": client_id}  # fmt: skip


def _iter_runs(client: Client, project_id: str, status: str | None = None) -> Iterator[RunSummary]:
    token: str | None = None
    while True:
        page = client.list_runs(project_id, page_token=token, status=status)
        yield from page.items
        if page.next_page_token is None:
            return
        token = page.next_page_token


def _resolve_run(client: Client, project_id: str, run_id: str) -> str:
    """The run's full id from a unique prefix of it (tables show 8 characters)."""
    if len(run_id) >= FULL_ID_LENGTH:
        return run_id
    matches = [run.id for run in _iter_runs(client, project_id) if run.id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise _fail(f"No run of project {project_id} has an id starting with {run_id!r}.")
    raise _fail(f"{len(matches)} runs have an id starting with {run_id!r}: give more of it.")


@runs_cli.callback()
def runs_default(ctx: typer.Context) -> None:
    """Training runs (`ordo runs` alone lists them)."""
    if ctx.invoked_subcommand is None:
        runs_list()


@runs_cli.command("list")
def runs_list(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (active, stale, ...).")
    ] = None,
) -> None:
    """List the project's runs, newest first."""
    with _client(url, token) as client:
        project_id = _project(project)
        items = _take(_iter_runs(client, project_id, status), limit)
    rows = [_run_row(item) for item in items]
    if output is OutputFormat.TABLE:
        rows = [{**row, "client_id": row["client_id_short"]} for row in rows]
    _render(rows, RUN_COLUMNS, output, title="Runs", raw=_dump(items),
            table_columns=RUN_TABLE_COLUMNS)  # fmt: skip


@runs_cli.command("start")
def runs_start(
    adaptive: Annotated[
        bool, typer.Option("--adaptive/--static", help="Re-plan after every report, or not.")
    ] = False,
    strategy: Annotated[
        str | None,
        typer.Option(
            help="exploit, thompson or mean_variance (default: thompson for adaptive runs, "
            "exploit otherwise, as the server's).",
            show_default=False,
        ),
    ] = None,
    schedule_id: Annotated[
        str | None,
        typer.Option("--schedule", help="Follow this stored schedule instead of solving now."),
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option("--client-id", help="Your id for the run: the same id returns the same run."),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            help="Solve now with this objective (expected, maximin, ...).", show_default=False
        ),
    ] = None,
    constraint: ConstraintOption = None,
    time_limit_s: TimeLimitOption = None,
    seed: Annotated[int | None, typer.Option(help="Solver and sampling seed.")] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    quiet: QuietOption = False,
) -> None:
    """Start a run: from a stored schedule, or by solving now (default options unless given)."""
    constraints = _json_options(constraint, "--constraint")
    solve: dict[str, Any] = {}
    if objective is not None:
        solve["objective"] = objective
    if constraints:
        solve["constraints"] = constraints
    if time_limit_s is not None:
        solve["time_limit_s"] = time_limit_s
    if seed is not None:
        solve["seed"] = seed
    if solve and schedule_id is not None:
        raise _fail("--schedule follows a stored schedule: solve options do not apply to it.")
    chosen = strategy or ("thompson" if adaptive else "exploit")
    with _client(url, token) as client:
        project_id = _project(project)
        run = client.start_run(
            project_id,
            adaptive=adaptive,
            strategy=cast("Strategy", chosen),
            schedule_id=schedule_id,
            schedule=solve or None,
            client_id=client_id,
        )
    if quiet:
        typer.echo(run.id)
        return
    _show_run(run.info, output)


@runs_cli.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id, or a unique prefix of it.")],
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show a run: its plan's stages, its reports and its lease."""
    with _client(url, token) as client:
        project_id = _project(project)
        info = client.get_run(project_id, _resolve_run(client, project_id, run_id))
    _show_run(info, output)


def _show_run(info: RunInfo, output: OutputFormat) -> None:
    """A run as a header and two tables (stages, reports); JSON whole; CSV its evaluations."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))
        return
    if output is OutputFormat.CSV:
        _write_export(list(_evaluation_rows(info)), ExportFormat.CSV, _echo)
        return
    console = _console()
    mode = f"adaptive, {info.strategy}" if info.adaptive else info.strategy
    # A grid folds long values (client ids, reasons) within the width, as tables do.
    header = Table.grid(padding=(0, 2))
    header.add_column(style="bold", no_wrap=True)
    header.add_column(overflow="fold")
    header.add_row("Run", info.id)
    header.add_row("Client id", info.client_id or "")
    header.add_row("Status", f"{info.status} ({mode}); next stage {info.next_stage} "
                   f"of {info.stage_count}")  # fmt: skip
    times = f"started {_short_time(info.created_at)}"
    if info.finished_at is not None:
        times += f", finished {_short_time(info.finished_at)}"
    header.add_row("Times", times)
    if info.fail_reason:
        header.add_row("Failed", info.fail_reason)
    if info.status == "active" and info.lease is not None and info.lease.expires_at is not None:
        header.add_row("Lease", f"token {info.lease.token}, until "
                       f"{_short_time(info.lease.expires_at)}")  # fmt: skip
    console.print(header)
    stages = _table("Plan", ("stage", "task", "status"))
    for stage in info.stages:
        stages.add_row(str(stage.index), stage.task, stage.status)
    console.print(stages)
    reports = _table("Reports", ("stage", "trained", "evaluations (raw values)", "reported_at"))
    for report in info.reports:
        values = " ".join(f"{e.task}={e.value:.3g}" for e in report.evaluations)
        late = " (late)" if report.late else ""
        reports.add_row(str(report.stage), (report.task or "baseline") + late, values,
                        _short_time(report.created_at))  # fmt: skip
    console.print(reports if info.reports else "No reports yet.")


def _run_action(
    run_id: str,
    project: str | None,
    url: str | None,
    token: str | None,
    output: OutputFormat,
    action: Callable[[Any], RunInfo],
) -> None:
    with _client(url, token) as client:
        project_id = _project(project)
        run = client.run(project_id, _resolve_run(client, project_id, run_id))
        info = action(run)
    _show_run(info, output)


@runs_cli.command("complete")
def runs_complete(
    run_id: Annotated[str, typer.Argument(help="The run's id, or a unique prefix of it.")],
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Declare a run finished (calibration compares completed runs)."""
    _run_action(run_id, project, url, token, output, lambda run: run.complete())


@runs_cli.command("fail")
def runs_fail(
    run_id: Annotated[str, typer.Argument(help="The run's id, or a unique prefix of it.")],
    reason: Annotated[str, typer.Argument(help="Why it failed (kept with the run).")],
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Declare a run failed, with the reason."""
    _run_action(run_id, project, url, token, output, lambda run: run.fail(reason))


# --- reports -----------------------------------------------------------------------------------


def report(
    run_id: Annotated[str, typer.Argument(help="The run (its id, or a unique prefix of it).")],
    stage: Annotated[int, typer.Argument(min=0, help="The stage (0: the baseline).")],
    values: Annotated[
        list[str],
        typer.Argument(help="TASK=VALUE pairs, e.g. math=0.61 code=0.38.", show_default=False),
    ],
    entropy: Annotated[
        list[str] | None,
        typer.Option("--entropy", "-e", help="TASK=ENTROPY (repeatable)."),
    ] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Report stage k's evaluations of a run (by hand, or from a shell script)."""
    parsed_values = _pairs(values, "VALUE")
    parsed_entropy = _pairs(entropy or [], "ENTROPY")
    with _client(url, token) as client:
        project_id = _project(project)
        run = client.run(project_id, _resolve_run(client, project_id, run_id))
        accepted = run.report(stage, parsed_values, entropy=parsed_entropy or None)
    nxt = accepted.next
    row = {
        "run": accepted.run_id,
        "stage": accepted.report.stage,
        "observations": accepted.observations,
        "estimates_version": accepted.estimates_version,
        "replanned": accepted.replanned,
        "next_stage": None if nxt.done else nxt.stage,
        "next_task": None if nxt.done else nxt.task,
        "done": nxt.done,
    }
    _render([row], list(row), output, title="Report accepted", raw=accepted.model_dump(mode="json"))


def _pairs(items: Sequence[str], what: str) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            parsed[key] = float(value)
        except ValueError:
            raise _fail(f"Expected TASK={what}, got {item!r}") from None
    return parsed


reports_cli = typer.Typer(help="Stage reports of a project's runs.", no_args_is_help=True)
EXPORT_COLUMNS = ["run_id", "client_id", "run_status", "stage", "trained", "late", "task", "value",
                  "utility", "stderr", "entropy", "steps", "tokens", "wall_time_s",
                  "reported_at"]  # fmt: skip


def _evaluation_rows(info: RunInfo) -> Iterator[dict[str, Any]]:
    """One row per evaluation of the run, in stage order (``trained``: the stage's task)."""
    for stage_report in sorted(info.reports, key=lambda r: r.stage):
        for evaluation in stage_report.evaluations:
            yield {
                "run_id": info.id,
                "client_id": info.client_id,
                "run_status": info.status,
                "stage": stage_report.stage,
                "trained": stage_report.task,
                "late": stage_report.late,
                "task": evaluation.task,
                "value": evaluation.value,
                "utility": evaluation.utility,
                "stderr": evaluation.stderr,
                "entropy": evaluation.entropy,
                "steps": stage_report.steps,
                "tokens": stage_report.tokens,
                "wall_time_s": stage_report.wall_time_s,
                "reported_at": stage_report.created_at.isoformat(),
            }


def _export_value(value: Any) -> str:
    # Exact values in CSV (repr of floats), so that an export loses nothing.
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


@reports_cli.command("export")
def reports_export(
    output: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="csv or jsonl.", case_sensitive=False)
    ] = ExportFormat.CSV,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", dir_okay=False, help="Write here instead of stdout."),
    ] = None,
    run_ids: Annotated[
        list[str] | None,
        typer.Option("--run", help="Only this run (id or unique prefix; repeatable)."),
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (completed, ...).")
    ] = None,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Export every evaluation of the project's runs: one row per task per stage report.

    Runs oldest first, stages in order. Columns: run_id, client_id, run_status, stage, trained
    (the task the stage trained; empty for the baseline), late, task, value (raw), utility
    (higher is better), stderr, entropy, steps, tokens, wall_time_s, reported_at.
    """
    with _client(url, token) as client:
        project_id = _project(project)
        if run_ids:
            wanted = [_resolve_run(client, project_id, run_id) for run_id in run_ids]
        else:
            wanted = [run.id for run in reversed(list(_iter_runs(client, project_id, status)))]
        rows = [
            row for run_id in wanted for row in _evaluation_rows(client.get_run(project_id, run_id))
        ]
    if out is not None:
        with out.open("w", newline="") as handle:
            _write_export(rows, output, handle.write)
        _note(f"Wrote {len(rows)} evaluations of {len(wanted)} runs to {out}.")
    else:
        _write_export(rows, output, _echo)


def _echo(text: str) -> None:
    typer.echo(text, nl=False)


def _write_export(
    rows: Sequence[Mapping[str, Any]], output: ExportFormat, write: Callable[[str], Any]
) -> None:
    if output is ExportFormat.JSONL:
        for row in rows:
            write(json.dumps({column: row[column] for column in EXPORT_COLUMNS}) + "\n")
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        writer.writerow([_export_value(row[column]) for column in EXPORT_COLUMNS])
    write(buffer.getvalue())


# --- calibration -------------------------------------------------------------------------------


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def calibration(
    limit: Annotated[
        int, typer.Option(min=1, help="The most recent completed runs to compare.")
    ] = 100,
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Compare predicted and observed final utilities of completed runs.

    For each task of each completed run: the utility its last report observed, and the
    predictions of it by the run's first plan and by its last plan (re-planned on what the run
    had observed by then), with whether it fell inside their 95 % intervals.
    """
    with _client(url, token) as client:
        result = client.get_calibration(_project(project), limit=limit)
    rows = [
        {"run_id": run.run_id, **task.model_dump(mode="json")}
        for run in result.runs
        for task in run.tasks
    ]
    columns = ["run_id", "task", "observed", "predicted_initial", "predicted_final",
               "inside_initial", "inside_final"]  # fmt: skip
    if output is not OutputFormat.TABLE:
        _render(rows, columns, output, raw=result.model_dump(mode="json"))
        return
    console = _console()
    if not result.runs:
        console.print("No completed runs yet: calibration compares the runs that completed.")
        return
    console.print(
        f"{result.count} task predictions over {len(result.runs)} completed runs.\n"
        f"Mean absolute error: first plan {_figure(result.mae_initial)}, "
        f"last plan {_figure(result.mae_final)}.\n"
        f"Inside the 95 % interval: first plan {_share(result.coverage_initial)}, "
        f"last plan {_share(result.coverage_final)}.",
        highlight=False,
    )
    table = _table("Final utility: observed and predicted",
                   ("run", "task", "observed", "first plan", "last plan"))  # fmt: skip
    for row in rows:
        table.add_row(
            row["run_id"][:SHORT_ID],
            row["task"],
            f"{row['observed']:.3f}",
            _predicted(row["predicted_initial"], row["inside_initial"]),
            _predicted(row["predicted_final"], row["inside_final"]),
        )
    console.print(table)
    console.print("(*: outside the plan's 95 % interval)", highlight=False)


def _predicted(value: float | None, inside: bool | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" + ("*" if inside is False else "")


# --- demo --------------------------------------------------------------------------------------


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the tables, learning curve and chart.")
    ] = Path("demo-out"),
    runs_count: Annotated[int, typer.Option("--runs", min=1, help="Simulated training runs.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the world and the runs.")] = 0,
    time_limit_s: Annotated[
        float, typer.Option("--time-limit", help="Solver time limit per plan (seconds).")
    ] = 2.0,
) -> None:
    """Run the whole loop in-process on simulated tasks and compare Ordo with other orders."""
    try:  # the server and the simulator load only here
        from ordo_client.demo import DemoConfig, run_demo
    except ModuleNotFoundError as missing:
        raise _fail(
            f"ordo demo runs a server in-process and needs {missing.name}: "
            "pip install 'ordo-client[demo]'"
        ) from missing

    run_demo(
        DemoConfig(out_dir=out, runs=runs_count, seed=seed, time_limit_s=time_limit_s),
        _console(),
    )


# In the tour's order (typer lists the commands, then the groups).
CLIENT_COMMANDS: tuple[Callable[..., None], ...] = (
    projects,
    estimates,
    schedule,
    predict,
    history,
    report,
    calibration,
    demo,
)
CLIENT_GROUPS: tuple[tuple[str, typer.Typer], ...] = (
    ("keys", keys_cli),
    ("tasks", tasks_cli),
    ("priors", priors_cli),
    ("runs", runs_cli),
    ("reports", reports_cli),
)


CLIENT_PANEL = "Client commands (ORDO_URL, ORDO_TOKEN, ORDO_PROJECT)"


PLUGIN_GROUP = "ordo.cli"


def build_cli(*, plugins: bool = True) -> typer.Typer:
    """The ``ordo`` app: the client commands, then those of every ``ordo.cli`` entry point."""
    cli = typer.Typer(
        name="ordo",
        help="Ordo: curriculum scheduling optimizer service.",
        no_args_is_help=True,
        add_completion=False,
    )
    for command in CLIENT_COMMANDS:
        cli.command(command.__name__, rich_help_panel=CLIENT_PANEL)(command)
    for name, group in CLIENT_GROUPS:
        cli.add_typer(group, name=name, rich_help_panel=CLIENT_PANEL)
    if plugins:
        for entry_point in entry_points(group=PLUGIN_GROUP):
            register: Callable[[typer.Typer], None] = entry_point.load()
            register(cli)
    return cli


def main() -> None:
    """Entry point of the ``ordo`` script."""
    build_cli()()
