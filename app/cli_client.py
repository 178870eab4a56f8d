"""Client-side ``ordo`` commands: they talk to a running server through ``ordo_client``.

Configuration comes from ``ORDO_URL``, ``ORDO_TOKEN`` and ``ORDO_PROJECT``; the ``--url``,
``--token`` and ``--project`` flags win. Commands whose output is data take
``--format table|json|csv`` (``table`` by default, rendered with rich).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ordo_client import Client, OrdoConnectionError, OrdoError
from ordo_client.models import Estimates

T = TypeVar("T")
PROJECT_ENV = "ORDO_PROJECT"


class OutputFormat(StrEnum):
    """How data is printed."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


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


# --- plumbing ----------------------------------------------------------------------------------


def _console() -> Console:
    # Made per command so that output goes to the stdout of the moment (CliRunner swaps it).
    return Console(soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code=1)


@contextmanager
def _client(url: str | None, token: str | None) -> Iterator[Client]:
    """A client from the flags and ``ORDO_*``; API errors become one red line and exit 1."""
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


def _render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    output: OutputFormat,
    *,
    title: str | None = None,
    raw: Any = None,
) -> None:
    """Print ``rows`` (dicts) as a rich table, JSON (``raw`` when given) or CSV."""
    console = _console()
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
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        console.print(table)


def _dump(models: Sequence[BaseModel]) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


def _take(items: Iterator[T], limit: int) -> list[T]:
    return list(islice(items, limit))


# --- commands ----------------------------------------------------------------------------------


def projects(
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    create: Annotated[
        str | None, typer.Option("--create", help="Create a project with this name first.")
    ] = None,
) -> None:
    """List the projects the key can see (--create NAME makes one first)."""
    with _client(url, token) as client:
        if create is not None:
            made = client.create_project(create)
            Console(stderr=True).print(f"Created project {made.name} ({made.id})")
        rows = _dump(list(client.iter_projects()))
    _render(rows, ["id", "name", "estimates_version", "created_at"], output, title="Projects")


def tasks(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """List the project's tasks in index order."""
    with _client(url, token) as client:
        rows = _dump(client.list_tasks(_project(project)))
    columns = ["index", "key", "name", "kind", "reward", "goal", "scale", "weight"]
    _render(rows, columns, output, title="Tasks")


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


def schedule(
    project: ProjectOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    output: FormatOption = OutputFormat.TABLE,
    objective: Annotated[
        str, typer.Option(help="expected, maximin, mean_variance or thompson.")
    ] = "expected",
    rho: Annotated[float | None, typer.Option(help="Forward-transfer retention.")] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            "-c",
            help='A constraint as JSON, e.g. \'{"type":"precedence","before":"math",'
            '"after":"poetry"}\' (repeatable).',
        ),
    ] = None,
    time_limit_s: Annotated[
        float | None, typer.Option("--time-limit", help="Solver time limit (seconds).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Solver and sampling seed.")] = 0,
    label: Annotated[str, typer.Option(help="Shown in the history.")] = "",
) -> None:
    """Solve for the best order over the current estimates and show it."""
    try:
        constraints = [json.loads(text) for text in constraint or []]
    except json.JSONDecodeError as error:
        raise _fail(f"--constraint is not valid JSON: {error}") from error
    options: dict[str, Any] = {
        "objective": objective,
        "constraints": constraints,
        "seed": seed,
        "label": label,
    }
    if rho is not None:
        options["rho"] = rho
    if time_limit_s is not None:
        options["time_limit_s"] = time_limit_s
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
    console.print(
        f"Schedule {solved.id} (v{solved.version}): {solved.status} by {solved.method} in "
        f"{solved.wall_time_s:.2f}s; objective {solved.objective:.4f}{gap}; "
        f"estimates version {solved.estimates_version}"
    )
    table = Table(title="Order and predicted final utility (95 % interval)", title_justify="left")
    for column in ("stage", "task", "predicted", "interval"):
        table.add_column(column)
    for k, p in enumerate(solved.predicted.tasks, start=1):
        table.add_row(str(k), p.task, f"{p.mean:.3f}", f"[{p.lower:.3f}, {p.upper:.3f}]")
    console.print(table)


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


def runs(
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
    columns = ["id", "client_id", "status", "adaptive", "strategy", "next_stage", "stage_count",
               "created_at", "fail_reason"]  # fmt: skip
    _render(_dump(items), columns, output, title="Runs")


def _iter_runs(client: Client, project_id: str, status: str | None) -> Iterator[Any]:
    token: str | None = None
    while True:
        page = client.list_runs(project_id, page_token=token, status=status)
        yield from page.items
        if page.next_page_token is None:
            return
        token = page.next_page_token


def report(
    run_id: Annotated[str, typer.Argument(help="The run.")],
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
        run = client.run(_project(project), run_id)
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


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the table (CSV, Markdown) and the chart.")
    ] = Path("demo-out"),
    runs_count: Annotated[int, typer.Option("--runs", min=1, help="Simulated training runs.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the world and the runs.")] = 0,
    time_limit_s: Annotated[
        float, typer.Option("--time-limit", help="Solver time limit per plan (seconds).")
    ] = 2.0,
) -> None:
    """Run the whole loop in-process on simulated tasks and compare Ordo with other orders."""
    from app.demo import DemoConfig, run_demo  # the server and the simulator load only here

    run_demo(
        DemoConfig(out_dir=out, runs=runs_count, seed=seed, time_limit_s=time_limit_s),
        _console(),
    )


CLIENT_COMMANDS: tuple[Callable[..., None], ...] = (
    projects,
    tasks,
    estimates,
    schedule,
    history,
    runs,
    report,
    demo,
)


def register_client_commands(cli: typer.Typer) -> None:
    """Add the client commands (projects, tasks, priors, ...) to the ``ordo`` CLI."""
    for command in CLIENT_COMMANDS:
        cli.command(command.__name__)(command)
    cli.add_typer(priors_cli, name="priors")
