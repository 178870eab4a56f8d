"""The closed-loop benchmark: in process on a small additive world, and over HTTP once.

The HTTP test uses the shared ``live_server`` fixture (``tests/conftest.py``): one server per
module, migrated in process, so that the test itself times only the trainer loop.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.closed_loop import (
    BEST_OF_RANDOM,
    FIXED,
    GP,
    ORDO,
    SEQUENTIAL,
    HttpOrdo,
    InProcessOrdo,
    OrderValues,
    OrdoDetail,
    SequentialResult,
    WorldResult,
    WorldSpec,
    group_targets,
    main,
    parse_ordo_config,
    recommend_config,
    run_ordo,
)
from bench.paired import main as paired_main
from bench.worlds import draw_world
from bench.worlds.oracle import oracle
from ordo_server.app.server_process import ServerProcess
from ordo_server.solver.recommend import RecommendConfig

ARGS = [
    "--transport",
    "in-process",
    "--families",
    "additive",
    "--n",
    "4",
    "--seeds",
    "2",
    "--runs",
    "3",
    "--repeats",
    "2",
    "--jobs",
    "1",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _oracle_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDO_BENCH_CACHE", str(tmp_path / "oracle"))


def _run(tmp_path: Path, name: str) -> dict[str, object]:
    path = tmp_path / name
    main([*ARGS, "--json", str(path)])
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_in_process_tables_and_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = main([*ARGS, "--json", str(tmp_path / "a.json")])
    out = capsys.readouterr().out
    assert "additive, n = 4: 2 worlds" in out
    assert "overall, n = 4" in out
    assert "targets:" in out
    for method in (*SEQUENTIAL, *FIXED):
        assert method in out
    assert len(bench.outcomes) == 2
    for outcome in bench.outcomes:
        result = outcome.result
        for method in SEQUENTIAL:
            seq = result.sequential[method]
            assert len(seq.recommended_regret) == len(seq.best_run_regret) == 3
            assert all(math.isfinite(v) and v >= -1e-9 for v in seq.recommended_regret)
            assert all(math.isfinite(v) and v >= -1e-9 for v in seq.best_run_regret)
            assert seq.stages == [4, 8, 12]
        for method in FIXED:
            regret = result.fixed[method].regret
            assert regret is None or (math.isfinite(regret) and regret >= -1e-9)
        detail = result.ordo
        assert all(low <= high for low, high in zip(detail.lower, detail.upper, strict=True))
        assert all(sorted(order) == [0, 1, 2, 3] for order in detail.runs)
    covered = [c for o in bench.outcomes for c in o.result.ordo.covered]
    assert 0.0 <= sum(covered) / len(covered) <= 1.0


def test_in_process_is_deterministic(tmp_path: Path) -> None:
    assert _run(tmp_path, "first.json") == _run(tmp_path, "second.json")


def test_in_process_run_keeps_its_trained_prefix() -> None:
    world = draw_world("additive", 4, 0)
    values = OrderValues(oracle(world))
    ordo = InProcessOrdo("additive-n4-s0", world.kinds)
    spec = WorldSpec("additive", 4, 0, runs=2, repeats=1)
    sequential, detail = run_ordo(ordo, world, spec, values)
    for run_id, run in ordo.runs.items():
        assert run.done
        assert list(run.trained) == list(run.plan)
        assert run_id in {"run-1", "run-2"}
    assert len(sequential.recommended) == 2
    assert detail.true_value == [values.value(order) for order in sequential.recommended]


def test_order_values_look_up_every_order() -> None:
    world = draw_world("additive", 5, 1)
    truth = oracle(world)
    values = OrderValues(truth)
    looked_up = [values.value(order) for order in truth.orders]
    assert looked_up == [float(v) for v in truth.utilities]
    direct = world.final_utilities(np.array([[4, 2, 0, 1, 3]])).mean()
    assert values.value((4, 2, 0, 1, 3)) == pytest.approx(float(direct))


def test_http_loop_completes(live_server: ServerProcess) -> None:
    world = draw_world("additive", 4, 0)
    values = OrderValues(oracle(world))
    spec = WorldSpec("additive", 4, 0, runs=2, repeats=1)
    http = HttpOrdo(live_server, world, project=spec.project)
    try:
        sequential, detail = run_ordo(http, world, spec, values)
    finally:
        http.close()
    assert len(sequential.recommended) == 2
    for order in sequential.recommended:
        assert sorted(order) == [0, 1, 2, 3]
    assert all(sorted(order) == [0, 1, 2, 3] for order in detail.runs)
    assert all(math.isfinite(v) for v in detail.predicted_mean)


def test_ordo_alone_runs_no_baselines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = main([*ARGS, "--methods", "ordo", "--json", str(tmp_path / "alone.json")])
    out = capsys.readouterr().out
    assert "Ordo" in out
    for method in (*SEQUENTIAL[1:], *FIXED):
        assert method not in out
    for outcome in bench.outcomes:
        assert list(outcome.result.sequential) == ["Ordo"]
        assert outcome.result.fixed == {}
    full = _run(tmp_path, "full.json")
    alone: dict[str, Any] = json.loads((tmp_path / "alone.json").read_text())
    assert isinstance(full["worlds"], list)
    assert [w["sequential"]["Ordo"] for w in alone["worlds"]] == [
        w["sequential"]["Ordo"] for w in full["worlds"]
    ]


def test_ordo_config_overrides_reach_the_recommendation(tmp_path: Path) -> None:
    default = _run(tmp_path, "default.json")
    path = tmp_path / "same.json"
    main([*ARGS, "--methods", "ordo", "--ordo-config", "folds=8", "--json", str(path)])
    same: dict[str, Any] = json.loads(path.read_text())
    assert isinstance(default["worlds"], list)
    assert [w["sequential"]["Ordo"] for w in same["worlds"]] == [
        w["sequential"]["Ordo"] for w in default["worlds"]
    ]
    assert same["specs"][0]["ordo_config"] == [["folds", 8]]


@pytest.mark.parametrize(
    "item",
    ["nope=1", "folds", "folds=not a literal", "transition.nope=1", "folds.inner=1"],
)
def test_ordo_config_rejects_bad_items(item: str) -> None:
    with pytest.raises(SystemExit):
        parse_ordo_config([item])


def test_ordo_config_reaches_nested_settings() -> None:
    overrides = parse_ordo_config(
        ["transition.cell_prior_std=(0.08, 0.2, 0.2, 0.08)", "folds=4", "transition.noise_sd=0.03"]
    )
    config = recommend_config(overrides)
    assert config.transition.cell_prior_std == (0.08, 0.2, 0.2, 0.08)
    assert config.transition.noise_sd == 0.03  # the second override of a setting keeps the first
    assert config.folds == 4
    assert config.run_model == RecommendConfig().run_model


def test_paired_differences_and_standard_errors(tmp_path: Path) -> None:
    def world(family: str, seed: int, regrets: list[float]) -> dict[str, Any]:
        return {
            "family": family,
            "n": 6,
            "seed": seed,
            "sequential": {"Ordo": {"recommended_regret": regrets}},
        }

    before = {
        "worlds": [world("a", 1, [4.0, 2.0]), world("a", 2, [6.0, 2.0]), world("b", 1, [1.0, 1.0])]
    }
    after = {
        "worlds": [world("a", 1, [3.0, 2.0]), world("a", 2, [3.0, 2.0]), world("b", 1, [1.0, 0.0])]
    }
    (tmp_path / "b.json").write_text(json.dumps(before))
    (tmp_path / "a.json").write_text(json.dumps(after))
    table = paired_main(
        [
            "--before",
            str(tmp_path / "b.json"),
            "--after",
            str(tmp_path / "a.json"),
            "--at",
            "1",
            "2",
        ]
    )
    assert table["a"][1].difference == pytest.approx(-2.0)
    assert table["a"][1].standard_error == pytest.approx(1.0)  # sd of (-1, -3) / sqrt 2
    assert table["overall"][2].difference == pytest.approx(-1.0 / 3.0)
    assert table["overall"][1].worlds == 3
    (tmp_path / "short.json").write_text(json.dumps({"worlds": before["worlds"][:2]}))
    with pytest.raises(SystemExit):
        paired_main(["--before", str(tmp_path / "short.json"), "--after", str(tmp_path / "a.json")])


def _world(seed: int, ordo: list[float], random: list[float], gp: list[float]) -> WorldResult:
    """A world result with only the sequential regrets (per R) that the targets read."""

    def curve(regrets: list[float]) -> SequentialResult:
        return SequentialResult(regrets, regrets, [4 * (r + 1) for r in range(len(regrets))])

    no_detail = OrdoDetail([], [], [], [], [], [], [], [])
    sequential = {ORDO: curve(ordo), BEST_OF_RANDOM: curve(random), GP: curve(gp)}
    return WorldResult("f", 4, seed, 1.0, 0.01, sequential, {}, no_detail)


def test_targets_show_the_paired_margin_of_each_miss() -> None:
    """Ordo against best-of-R at R = 2: 1 point ahead in one world, 5 behind in the other."""
    ordo, random, gp = [5.0] * 8, [5.0] * 8, [9.0] * 8
    worlds = [
        _world(0, [5.0, 4.0, *ordo[2:]], random, gp),
        _world(1, [5.0, 6.0, *ordo[2:]], [5.0, 1.0, *random[2:]], gp),
    ]
    every_r, half, versus_gp = group_targets("f", 4, worlds, 8)
    assert not every_r.passed
    # Differences -1 and +5: mean 2, standard deviation sqrt(18), s.e. sqrt(18) / sqrt(2) = 3.
    assert every_r.detail.endswith("; R2 margin +2.00 +- 3.00")
    assert not half.passed
    assert "R4 5.00/2.50 (+2.50 +- 0.00)" in half.detail
    assert versus_gp.passed
    assert "R8 5.00/9.00 (-4.00 +- 0.00)" in versus_gp.detail
