"""The README's tour done with the ``ordo`` CLI alone, against a live server process.

Keys, tasks, priors, schedules, predictions, runs (start, show, report, complete), the export of
every evaluation and calibration; tables rendered at 100 columns.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ordo_client import Client
from ordo_client.cli import build_cli
from tests.conftest import LiveServer

cli = build_cli()  # the `ordo` command, with the server's commands

WIDTH = 100
STAGES = {
    0: {"math": 0.20, "code": 0.15, "poetry": 0.30},
    1: {"math": 0.62, "code": 0.22, "poetry": 0.31},
    2: {"math": 0.60, "code": 0.45, "poetry": 0.29},
    3: {"math": 0.58, "code": 0.44, "poetry": 0.52},
}


@pytest.fixture
def runner(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner pointed at the live server with its global admin token, 100 columns wide."""
    monkeypatch.setenv("ORDO_URL", live_server.base_url)
    monkeypatch.setenv("ORDO_TOKEN", live_server.admin_token)
    monkeypatch.delenv("ORDO_PROJECT", raising=False)
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 1, result.output
    return result.output


def assert_fits(table: str) -> None:
    assert max(len(line) for line in table.splitlines()) <= WIDTH, table


@pytest.fixture
def project(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """A project made with ``ordo projects --create -q``; ORDO_PROJECT points at it."""
    project_id = invoke(runner, "projects", "--create", request.node.name, "-q").strip()
    monkeypatch.setenv("ORDO_PROJECT", project_id)
    return project_id


def test_the_tour_from_the_command_line(
    runner: CliRunner, project: str, live_server: LiveServer, tmp_path: Path
) -> None:
    trainer_key = invoke(runner, "keys", "create", "cluster-a trainer", "-q").strip()
    assert trainer_key.startswith("ordo_")
    trainer = ("--token", trainer_key)

    added = invoke(runner, "tasks", "add", "math", "code", "--kind", "structured",
                   "--reward", "verifiable")  # fmt: skip
    assert "Tasks added" in added
    poetry = tmp_path / "poetry.json"
    poetry.write_text(json.dumps([{"key": "poetry", "kind": "open_ended", "reward": "preference"}]))
    rows = json.loads(invoke(runner, "tasks", "add", "--file", str(poetry), "-f", "json"))
    assert [(r["index"], r["key"], r["kind"]) for r in rows] == [(2, "poetry", "open_ended")]
    listed = json.loads(invoke(runner, "tasks", "list", "-f", "json", *trainer))
    assert [(t["key"], t["kind"], t["reward"]) for t in listed] == [
        ("math", "structured", "verifiable"),
        ("code", "structured", "verifiable"),
        ("poetry", "open_ended", "preference"),
    ]

    levels = tmp_path / "levels.json"
    levels.write_text(json.dumps({"effect": "L", "tasks": ["math", "code", "poetry"],
                                  "mean": [0.60, 0.40, 0.50], "std": 0.05}))  # fmt: skip
    assert "Imported 3 prior cells" in invoke(runner, "priors", "import", str(levels))
    backward = tmp_path / "backward.csv"
    backward.write_text("effect,src,dst,mean,std\nB,code,poetry,-0.10,0.05\n")
    assert "Imported 1 prior cells" in invoke(runner, "priors", "import", str(backward))

    solved = json.loads(invoke(runner, "schedule", "--label", "first plan", "-f", "json"))
    assert solved["version"] == 1
    assert sorted(solved["order"]) == ["code", "math", "poetry"]
    shown = invoke(runner, "schedule", "--objective", "maximin")
    assert_fits(shown)
    assert "(version 2)" in shown

    predicted = json.loads(
        invoke(runner, "predict", "math,code,poetry", "poetry,math,code", "-f", "json", *trainer)
    )
    assert [o["order"] for o in predicted["orders"]] == [
        ["math", "code", "poetry"], ["poetry", "math", "code"],
    ]  # fmt: skip
    table = invoke(runner, "predict", "math,code,poetry", *trainer)
    assert "(random order)" in table
    history = json.loads(invoke(runner, "history", "-f", "json"))
    assert [h["version"] for h in history] == [2, 1]  # predictions store nothing

    run_id = invoke(runner, "runs", "start", "--adaptive", "--client-id", "job-1", "-q",
                    *trainer).strip()  # fmt: skip
    again = json.loads(invoke(runner, "runs", "start", "--adaptive", "--client-id", "job-1",
                              "-f", "json", *trainer))  # fmt: skip
    assert again["id"] == run_id
    assert again["adaptive"] is True
    assert again["strategy"] == "thompson"  # the server's default for adaptive runs
    assert len(again["stages"]) == 3

    for stage, values in STAGES.items():
        pairs = [f"{task}={value}" for task, value in values.items()]
        accepted = json.loads(
            invoke(runner, "report", run_id[:8], str(stage), *pairs, "-f", "json", *trainer)
        )
        assert accepted["report"]["stage"] == stage
    assert accepted["next"]["done"] is True

    shown = invoke(runner, "runs", "show", run_id[:8], *trainer)
    assert_fits(shown)
    assert run_id in shown
    assert "job-1" in shown
    assert "math=0.62 code=0.22 poetry=0.31" in shown
    assert "baseline" in shown
    assert "Calibration" not in invoke(runner, "calibration")
    assert "No completed runs yet" in invoke(runner, "calibration")

    completed = json.loads(invoke(runner, "runs", "complete", run_id, "-f", "json", *trainer))
    assert completed["status"] == "completed"

    calibration = json.loads(invoke(runner, "calibration", "-f", "json"))
    assert [r["run_id"] for r in calibration["runs"]] == [run_id]
    observed = {t["task"]: t["observed"] for t in calibration["runs"][0]["tasks"]}
    assert observed == pytest.approx(STAGES[3])
    table = invoke(runner, "calibration")
    assert_fits(table)
    assert "3 task predictions over 1 completed runs" in table
    assert run_id[:8] in table
    assert run_id not in table

    exported = invoke(runner, "reports", "export")
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 12
    assert list(rows[0]) == [
        "run_id", "client_id", "run_status", "stage", "trained", "late", "task", "value",
        "utility", "stderr", "entropy", "steps", "tokens", "wall_time_s", "reported_at",
    ]  # fmt: skip
    assert {(int(r["stage"]), r["task"]): float(r["value"]) for r in rows} == {
        (stage, task): value for stage, values in STAGES.items() for task, value in values.items()
    }
    assert {r["trained"] for r in rows if r["stage"] == "0"} == {""}
    assert {r["run_id"] for r in rows} == {run_id}
    out = tmp_path / "evaluations.jsonl"
    invoke(runner, "reports", "export", "-f", "jsonl", "--out", str(out), *trainer)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12
    assert lines[0]["stage"] == 0
    assert lines[0]["trained"] is None
    assert [(line["stage"], line["task"], line["value"]) for line in lines] == [
        (row["stage"], row["task"], row["value"])
        for row in ({"stage": int(r["stage"]), "task": r["task"], "value": float(r["value"])}
                    for r in rows)
    ]  # fmt: skip


def test_keys_create_list_revoke(runner: CliRunner, project: str, live_server: LiveServer) -> None:
    created = json.loads(invoke(runner, "keys", "create", "reader", "--role", "trainer",
                                "--expires-in-days", "1", "-f", "json"))  # fmt: skip
    assert created["role"] == "trainer"
    assert created["expires_at"] is not None
    table = invoke(runner, "keys", "create", "other")
    assert "Token (shown once" in table
    listed = json.loads(invoke(runner, "keys", "list", "-f", "json"))
    assert {k["name"] for k in listed} >= {"reader", "other"}
    assert all("key" not in k for k in listed)
    with Client(live_server.base_url, created["key"]) as client:
        assert client.list_tasks(project) == []
    assert "Revoked key" in runner.invoke(cli, ["keys", "revoke", created["key_id"]]).output
    assert "401" in refused(runner, "tasks", "list", "--token", created["key"])


def test_run_tables_fit_100_columns(runner: CliRunner, project: str) -> None:
    invoke(runner, "tasks", "add", "a", "b")
    long_id = "a-client-id-much-longer-than-the-column-" + "x" * 40
    started = json.loads(invoke(runner, "runs", "start", "--client-id", long_id, "-f", "json"))
    table = invoke(runner, "runs")
    assert_fits(table)
    row = [line for line in table.splitlines() if started["id"][:8] in line]
    assert len(row) == 1  # one line: nothing folded
    assert started["id"] not in table
    assert started["created_at"][:16].replace("T", " ") in row[0]
    full = json.loads(invoke(runner, "runs", "list", "-f", "json"))
    assert [(r["id"], r["client_id"]) for r in full] == [(started["id"], long_id)]
    failed = invoke(runner, "runs", "fail", started["id"][:8], "out of memory")
    assert_fits(failed)
    assert "failed (exploit)" in failed
    assert "Failed     out of memory" in failed
    assert long_id[:60] in failed


def test_refusals(runner: CliRunner, project: str, tmp_path: Path) -> None:
    assert "exactly one KEY" in refused(runner, "tasks", "add", "a", "b", "--name", "A")
    assert "Give the keys" in refused(runner, "tasks", "add")
    bad = tmp_path / "tasks.json"
    bad.write_text('{"key": "a"}')
    assert "expected a list" in refused(runner, "tasks", "add", "--file", str(bad))
    assert "No run" in refused(runner, "runs", "show", "0000")
    assert "do not apply" in refused(
        runner, "runs", "start", "--schedule", "s", "--objective", "maximin"
    )
    assert "--constraint is not valid JSON" in refused(runner, "runs", "start", "-c", "{")
    assert "404" in refused(runner, "calibration", "--project", "nope")
