"""``ordo demo`` end to end (kept short: two runs), twice, and its simulated world."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ordo_client.cli import build_cli
from ordo_client.demo import STRATEGIES, Comparison, chart_limits
from ordo_server.app.simulation import (
    STRUCTURED,
    all_orders,
    demo_world,
    final_scores,
    joint_final_scores,
    kind_first_orders,
    mini_stage_params,
    train_batch,
)

cli = build_cli()  # the `ordo` command, with the server's commands

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_demo_writes_the_comparison_table_and_the_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--runs", "2", "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "Final utility per task after 2 adaptive runs" in result.output
    for title in ("Ordo (adaptive)", "Random order", "Structured-first", "Joint training"):
        assert title in result.output

    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    world = demo_world(1)
    assert [(r["strategy"], r["task"]) for r in rows] == [
        (strategy, task) for strategy in STRATEGIES for task in world.names
    ]
    assert all(0.0 <= float(r["simulated"]) <= 1.0 for r in rows)
    assert all(r["predicted"] == "" for r in rows if r["strategy"] == "joint")
    assert all(r["predicted"] != "" for r in rows if r["strategy"] != "joint")
    simulated_random = [float(r["simulated"]) for r in rows if r["strategy"] == "random"]
    expected_random = final_scores(world, all_orders(world.n)).mean(axis=0)
    assert simulated_random == pytest.approx(list(expected_random), abs=1e-6)

    markdown = (out / "comparison.md").read_text().splitlines()
    assert markdown[0] == (
        "| task | Ordo (adaptive) | Random order | Structured-first | Joint training |"
    )
    assert [line.split("|")[1].strip() for line in markdown[2:]] == [*world.names, "mean"]

    chart = (out / "comparison.png").read_bytes()
    assert chart.startswith(PNG_SIGNATURE)
    assert len(chart) > 10_000

    with (out / "learning.csv").open() as handle:
        learning = list(csv.DictReader(handle))
    assert [(r["strategy"], r["run"], r["plan"]) for r in learning] == [
        ("ordo", "1", "thompson"),
        ("ordo", "2", "exploit"),
        ("random", "", ""),
        ("structured_first", "", ""),
        ("joint", "", ""),
    ]
    best_mean = final_scores(world, all_orders(world.n)).mean(axis=1).max()
    for row in learning:
        assert float(row["regret"]) == pytest.approx(
            best_mean - float(row["simulated_mean"]), abs=2e-6
        )
    assert all(float(r["regret"]) >= -1e-9 for r in learning if r["strategy"] == "ordo")
    assert "Regret per run" in result.output
    joint_wins = float(learning[-1]["simulated_mean"]) > best_mean
    said = " ".join(result.output.split())
    assert ("It wins in this simulator" in said) is bool(joint_wins)
    assert ("does not beat the best order" in said) is not bool(joint_wins)

    # The same seed prints and writes the same tables and chart, byte for byte: plans are
    # seeded by the project name and the run's client_id, both derived from the seed.
    written = {path.name: path.read_bytes() for path in out.iterdir()}
    repeat = CliRunner().invoke(cli, ["demo", "--runs", "2", "--out", str(out), "--seed", "1"])
    assert repeat.exit_code == 0, repeat.output
    assert {path.name: path.read_bytes() for path in out.iterdir()} == written
    assert sorted(written) == [
        "comparison.csv", "comparison.md", "comparison.png", "learning.csv"
    ]  # fmt: skip
    assert _tables(repeat.output) == _tables(result.output)


def _tables(output: str) -> str:
    """What the demo printed from its first table on (before it: a temporary path and port)."""
    return output[output.index("Final utility per task") :]


def test_the_chart_spans_every_prediction() -> None:
    comparison = Comparison(
        tasks=("a", "b"),
        predicted={"ordo": [0.05, 1.3], "joint": [None, None]},
        simulated={"ordo": [0.5, 0.6], "joint": [0.55, 0.7]},
        ordo_order=("a", "b"),
        best_order=("a", "b"),
        best_mean=0.6,
        runs=1,
    )
    low, high = chart_limits(comparison)
    assert low <= 0.05
    assert high > 1.3


def test_joint_training_spends_the_same_budget_as_one_stage_per_task() -> None:
    world = demo_world(0)
    mini = mini_stage_params(world, world.n)
    skills = np.tile(world.skill0, (1, 1))
    entropy = np.array([world.entropy0])
    task = np.array([3], dtype=np.int64)
    once = train_batch(world, skills, entropy, task)
    # A skill the task does not load on only decays, so compare the task's own skill and the
    # entropy: n mini-stages of one task alone equal one stage of it.
    pieces = (skills, entropy)
    for _ in range(world.n):
        pieces = train_batch(mini, pieces[0], pieces[1], task)
    assert pieces[1] == pytest.approx(once[1])
    assert pieces[0][0, 3] == pytest.approx(once[0][0, 3], abs=0.02)
    assert joint_final_scores(world).shape == (world.n,)


def test_order_matters_in_the_demo_world() -> None:
    world = demo_world(0)
    means = final_scores(world, all_orders(world.n)).mean(axis=1)
    assert means.max() - means.min() > 0.05
    structured_first = final_scores(world, kind_first_orders(world, STRUCTURED)).mean()
    open_first = final_scores(world, kind_first_orders(world, "open_ended")).mean()
    assert structured_first > open_first


def test_the_readme_quotes_the_default_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "defaults"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = (out / "comparison.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert table in readme, "README.md's demo table is not what `ordo demo` writes"
    with (out / "learning.csv").open() as handle:
        means = {row["strategy"]: float(row["simulated_mean"]) for row in csv.DictReader(handle)}
    best_mean = final_scores(demo_world(0), all_orders(6)).mean(axis=1).max()
    demo_section = " ".join(readme[readme.index("### Demo") :].split())
    assert f"the best of all 720 orders reaches {best_mean:.3f}." in demo_section
    # The README says so of the default demo: its exploiting run trains the best order.
    assert "Ordo's last run trains that order." in demo_section
    assert means["ordo"] == pytest.approx(best_mean, abs=1e-6)  # the file holds 6 decimals
    assert f"It wins in this simulator ({means['joint']:.3f}, above every order)" in demo_section
    assert means["joint"] > best_mean
