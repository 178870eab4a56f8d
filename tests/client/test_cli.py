"""Every client command of the ``ordo`` CLI (typer's CliRunner) against a live server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ordo_client import Client
from ordo_client.cli import build_cli
from tests.client.conftest import ProjectAccess, new_project
from tests.conftest import LiveServer

cli = build_cli()  # the `ordo` command, with the server's commands

TASKS = [
    {"key": "math", "kind": "structured"},
    {"key": "code", "kind": "structured"},
    {"key": "poetry", "kind": "open_ended"},
]


@pytest.fixture
def runner(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner whose environment points at the live server with its admin token."""
    monkeypatch.setenv("ORDO_URL", live_server.base_url)
    monkeypatch.setenv("ORDO_TOKEN", live_server.admin_token)
    monkeypatch.delenv("ORDO_PROJECT", raising=False)
    monkeypatch.setenv("COLUMNS", "100")  # rich's width off a terminal: tables must fit it
    return CliRunner()


@pytest.fixture
def project(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> ProjectAccess:
    """A project with three tasks; ORDO_PROJECT and ORDO_TOKEN (its admin key) set."""
    with Client(live_server.base_url, live_server.admin_token) as admin:
        access = new_project(admin)
    with access.admin() as client:
        client.create_tasks(access.id, TASKS)
    monkeypatch.setenv("ORDO_PROJECT", access.id)
    monkeypatch.setenv("ORDO_TOKEN", access.admin_token)
    return access


def invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_projects_create_and_list_in_every_format(runner: CliRunner) -> None:
    invoke(runner, "projects", "--create", "cli-made")
    table = invoke(runner, "projects")
    assert "cli-made" in table
    listed = json.loads(invoke(runner, "projects", "--format", "json"))
    assert "cli-made" in [p["name"] for p in listed]
    rows = list(csv.DictReader(io.StringIO(invoke(runner, "projects", "-f", "csv"))))
    assert "cli-made" in [row["name"] for row in rows]
    assert list(rows[0]) == ["id", "name", "estimates_version", "created_at"]


def test_flags_win_over_the_environment(
    runner: CliRunner, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDO_TOKEN", "not-a-key")
    result = runner.invoke(cli, ["projects"])
    assert result.exit_code == 1
    assert "401 Unauthorized" in result.output
    invoke(runner, "projects", "--token", live_server.admin_token)
    monkeypatch.setenv("ORDO_URL", "http://127.0.0.1:9")
    invoke(runner, "projects", "--url", live_server.base_url, "--token", live_server.admin_token)


def test_tasks(runner: CliRunner, project: ProjectAccess) -> None:
    assert "poetry" in invoke(runner, "tasks")
    rows = json.loads(invoke(runner, "tasks", "list", "-f", "json"))
    assert [(r["index"], r["key"], r["kind"]) for r in rows] == [
        (0, "math", "structured"), (1, "code", "structured"), (2, "poetry", "open_ended"),
    ]  # fmt: skip
    other = invoke(runner, "tasks", "list", "--project", project.id, "-f", "csv")
    assert other.splitlines()[0] == "index,key,name,kind,reward,goal,scale,weight"


def test_missing_project_and_unknown_project(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["tasks"])
    assert result.exit_code == 1
    assert "ORDO_PROJECT" in result.output
    result = runner.invoke(cli, ["tasks", "list", "--project", "nope"])
    assert result.exit_code == 1
    assert "404" in result.output


def test_priors_import_json_and_csv_then_estimates(
    runner: CliRunner, project: ProjectAccess, tmp_path: Path
) -> None:
    long_form = tmp_path / "priors.json"
    long_form.write_text(
        json.dumps([{"effect": "B", "src": "code", "dst": "poetry", "mean": -0.1, "std": 0.05}])
    )
    assert "Imported 1 prior cells" in invoke(runner, "priors", "import", str(long_form))
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({"effect": "L", "tasks": ["math", "code"], "mean": [0.6, 0.4],
                                "std": 0.05}))  # fmt: skip
    assert "Imported 2 prior cells" in invoke(runner, "priors", "import", str(wide))
    table = tmp_path / "priors.csv"
    table.write_text("effect,src,dst,mean,std\nB,math,poetry,-0.08,0.02\nL,,poetry,0.5,0.05\n")
    assert "Imported 2 prior cells" in invoke(runner, "priors", "import", str(table))
    bad = tmp_path / "bad.csv"
    bad.write_text("effect,src,dst,mean,std\nB,math,nobody,-0.08,0.02\n")
    result = runner.invoke(cli, ["priors", "import", str(bad)])
    assert result.exit_code == 1
    assert "422" in result.output

    rows = list(csv.DictReader(io.StringIO(invoke(runner, "estimates", "-f", "csv"))))
    by_cell = {(r["effect"], r["src"], r["dst"]): r for r in rows}
    assert float(by_cell["B", "code", "poetry"]["mean"]) == pytest.approx(-0.1)
    assert float(by_cell["B", "math", "poetry"]["std"]) == pytest.approx(0.02)
    full = json.loads(invoke(runner, "estimates", "-f", "json"))
    assert full["tasks"] == ["math", "code", "poetry"]
    assert full["L"]["mean"][:2] == pytest.approx([0.6, 0.4])
    only_b = json.loads(invoke(runner, "estimates", "--effect", "B", "-f", "json"))
    assert {r["effect"] for r in only_b} == {"B"}
    assert len(only_b) == 6
    assert "Estimates (version" in invoke(runner, "estimates")


def test_schedule_history_runs_and_report(
    runner: CliRunner, project: ProjectAccess, live_server: LiveServer
) -> None:
    with project.admin() as client:
        client.import_priors(
            project.id,
            [{"effect": "B", "src": "code", "dst": "poetry", "mean": -0.3, "std": 0.01}],
        )
    shown = invoke(runner, "schedule", "--label", "from-cli")
    assert "optimal" in shown
    assert "Order and predicted final utility" in shown
    solved = json.loads(
        invoke(
            runner, "schedule", "-f", "json", "-c",
            '{"type": "pinned", "task": "poetry", "position": "first"}',
        )
    )  # fmt: skip
    assert solved["order"][0] == "poetry"
    stages = list(csv.DictReader(io.StringIO(invoke(runner, "schedule", "-f", "csv"))))
    assert [int(s["stage"]) for s in stages] == [1, 2, 3]
    order = [s["task"] for s in stages]
    assert order.index("poetry") > order.index("code")
    bad = runner.invoke(cli, ["schedule", "-c", "{not json"])
    assert bad.exit_code == 1

    history = json.loads(invoke(runner, "history", "-f", "json"))
    assert [h["version"] for h in history] == [3, 2, 1]
    assert [h["label"] for h in history][-1] == "from-cli"
    assert len(json.loads(invoke(runner, "history", "--limit", "2", "-f", "json"))) == 2
    assert "Schedules" in invoke(runner, "history")

    with project.trainer() as trainer:
        run = trainer.start_run(project.id, adaptive=True, client_id="cli-run")
    listed = json.loads(invoke(runner, "runs", "list", "-f", "json"))
    assert [r["id"] for r in listed] == [run.id]
    assert "cli-run" in invoke(runner, "runs")
    assert invoke(runner, "runs", "list", "--status", "completed", "-f", "json").strip() == "[]"

    accepted = json.loads(
        invoke(
            runner, "report", run.id, "0", "math=0.5", "code=0.4", "poetry=0.6",
            "-e", "poetry=1.1", "-f", "json",
        )
    )  # fmt: skip
    assert accepted["report"]["stage"] == 0
    assert accepted["next"]["stage"] == 1
    poetry = [e for e in accepted["report"]["evaluations"] if e["task"] == "poetry"]
    assert poetry[0]["entropy"] == pytest.approx(1.1)
    table = invoke(runner, "report", run.id, "0", "math=0.5", "code=0.4", "poetry=0.6",
                   "-e", "poetry=1.1")  # fmt: skip
    assert "Report accepted" in table
    conflict = runner.invoke(cli, ["report", run.id, "0", "math=0.9"])
    assert conflict.exit_code == 1
    assert "409" in conflict.output
    malformed = runner.invoke(cli, ["report", run.id, "1", "math"])
    assert malformed.exit_code == 1
    assert "TASK=VALUE" in malformed.output
