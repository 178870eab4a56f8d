"""bench/model_rank.py: random runs reported in full, and how well the models rank every order."""

from __future__ import annotations

import pytest

from bench.model_rank import family_row, main, random_runs, rank_score
from bench.worlds import draw_world


def test_random_runs_report_every_stage_of_distinct_orders() -> None:
    world = draw_world("additive", 4, 0)
    runs = random_runs(world, 3, seed=5)
    assert len(runs) == 3
    for run in runs:
        assert sorted(run.trained) == [0, 1, 2, 3]
        assert len(run.utilities) == 5  # the baseline and four stages
        assert all(len(stage) == 4 for stage in run.utilities)
    assert [run.trained for run in runs] == [run.trained for run in random_runs(world, 3, seed=5)]


def test_in_an_additive_world_the_pairwise_model_ranks_the_orders() -> None:
    # The run model is the additive world's own model: a few runs rank most orders right.
    world = draw_world("additive", 5, 1)
    score = rank_score(world, 6, seed=1)
    assert score.models["run"] > 0.6
    assert score.mixture > 0.6
    assert 0.0 <= score.regret < 5.0
    assert sum(score.weights.values()) <= 1.0 + 1e-9


def test_the_table_has_a_row_per_family_and_r(capsys: pytest.CaptureFixture[str]) -> None:
    row = family_row("additive", 4, 3, [0])
    assert row.split()[:2] == ["additive", "3"]
    main(["--families", "additive", "--n", "4", "--runs", "2", "3", "--seeds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[2:]] == [["additive", "2"], ["additive", "3"]]


def test_overrides_reach_the_fit(capsys: pytest.CaptureFixture[str]) -> None:
    # Without the run model (it only enters up to run_model_max_tasks tasks) its column is empty.
    args = ["--families", "additive", "--n", "4", "--runs", "3", "--seeds", "1"]
    main(args)
    default = capsys.readouterr().out.splitlines()[-1].split()
    main([*args, "--ordo-config", "run_model_max_tasks=0"])
    without = capsys.readouterr().out.splitlines()[-1].split()
    assert len(default) == 8
    assert len(without) == 7
    assert without[-2] == "-"
