"""``ordo demo`` end to end (kept short: two runs) and its simulated world."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.demo import STRATEGIES
from app.simulation import (
    STRUCTURED,
    all_orders,
    demo_world,
    final_scores,
    joint_final_scores,
    kind_first_orders,
    mini_stage_params,
    train_batch,
)

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

    # The same seed reproduces the same runs, plans and table (plans are seeded by the project
    # name and the run's client_id, both derived from the seed).
    again = tmp_path / "again"
    repeat = CliRunner().invoke(cli, ["demo", "--runs", "2", "--out", str(again), "--seed", "1"])
    assert repeat.exit_code == 0, repeat.output
    assert (again / "comparison.csv").read_text() == (out / "comparison.csv").read_text()


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
