"""``bench/load.py`` end to end, small: a fleet of three adaptive trainers and single reports on a
live server over a temporary SQLite database (the wrk phase is left to the benchmark)."""

from __future__ import annotations

import re

import pytest

from bench.load import ADMIN_TOKEN, TRAINER_KEY, ordo_server, run_fleet, single_reports


@pytest.mark.parametrize("auth", [TRAINER_KEY, ADMIN_TOKEN])
def test_a_small_fleet_reports_every_stage_and_loses_nothing(auth: str) -> None:
    with ordo_server(None, workers=1) as server:
        lines = run_fleet(server, trainers=3, tasks=4, auth=auth)
        single = single_reports(server, tasks=4, count=5, auth=auth)
    text = "\n".join(lines)
    assert "answers outside 2xx: 0; trainers that gave up: 0" in text
    # 3 runs x (baseline + 4 stages), every one read back unchanged.
    assert "reports acknowledged: 15; lost or altered: 0" in text
    assert re.search(r"re-plan lag p50 [\d.]+ ms, p99 [\d.]+ ms over \d+ re-plans", text)
    assert re.match(r"one report alone: p50 [\d.]+ ms over 5", single[0])
