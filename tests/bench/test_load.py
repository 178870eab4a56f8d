"""``bench/load.py`` end to end, small: a fleet of three adaptive trainers and single reports on a
live server over a temporary SQLite database (the wrk phase is left to the benchmark)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from bench.load import (
    ADMIN_TOKEN,
    ENDPOINTS,
    SIZED_TABLES,
    TRAINER_KEY,
    CpuMeter,
    FleetResult,
    JobTimes,
    batch_times,
    endpoint_costs,
    fleet_summary,
    job_delays,
    ordo_server,
    refresh_statistics,
    run_fleet,
    single_reports,
)
from tests.conftest import postgres_database, require_postgres


@pytest.mark.parametrize("auth", [TRAINER_KEY, ADMIN_TOKEN])
def test_a_small_fleet_reports_every_stage_and_loses_nothing(auth: str) -> None:
    with ordo_server(None, workers=1) as server:
        result = run_fleet(server, trainers=3, tasks=4, auth=auth)
        single = single_reports(server, tasks=4, count=5, auth=auth)
    text = "\n".join(result.lines)
    assert "answers outside 2xx: 0; trainers that gave up: 0" in text
    # 3 runs x (baseline + 4 stages), every one read back unchanged.
    assert "reports acknowledged: 15; lost or altered: 0" in text
    assert re.search(r"re-plan lag p50 [\d.]+ ms, p99 [\d.]+ ms over \d+ re-plans", text)
    # Embedded jobs (no `ordo worker`): the API processes' CPU holds them; each run's plans
    # are jobs of the project (the first plan and the re-plans).
    cpu = re.search(
        r"CPU: API processes ([\d.]+) s \([\d.]+ ms a request\), job workers 0.0 s "
        r"\([\d.]+ ms a job, (\d+) jobs\), PostgreSQL [\d.]+ s, trainers ([\d.]+) s; "
        r"\d+% of \d+ cores",
        text,
    )
    assert cpu is not None, text
    assert float(cpu.group(1)) > 0
    assert int(cpu.group(2)) >= 3
    delays = re.search(
        r"jobs: waited for a claim p50 \d+ ms, p99 \d+ ms; claim to end p50 \d+ ms, "
        r"p99 \d+ ms \((\d+) ended\)",
        text,
    )
    assert delays is not None, text
    assert 1 <= int(delays.group(1)) <= int(cpu.group(2))
    assert re.match(r"one report alone: p50 [\d.]+ ms over 5", single[0])
    assert result.report_p99_s > 0
    assert result.lag_p99_s is not None  # adaptive runs of 4 tasks re-plan


def test_the_cost_of_each_endpoint_is_measured_on_requests_that_succeed() -> None:
    with ordo_server(None, workers=1) as server:
        lines = endpoint_costs(server, tasks=3, count=4)
    assert lines[0] == "CPU a request by endpoint, one client, 4 sequential requests each:"
    figure = re.compile(
        r"  (.+?) +CPU a request: API processes ([\d.]+) ms, PostgreSQL [\d.]+ ms; "
        r"p50 ([\d.]+) ms"
    )
    measured = [figure.fullmatch(line) for line in lines[1:]]
    assert all(measured), lines
    assert [m.group(1) for m in measured if m] == list(ENDPOINTS)
    # Every request was answered (raise_for_status) and took time of the server's processes.
    assert all(float(m.group(3)) > 0 for m in measured if m)
    assert sum(float(m.group(2)) for m in measured if m) > 0


def test_a_fleet_after_completed_runs_is_planned_by_the_ensemble_and_counted_alone() -> None:
    with ordo_server(None, workers=1) as server:
        result = run_fleet(server, trainers=2, tasks=4, history=2)
        engine = create_engine(server.database_url)
        try:
            with engine.connect() as connection:
                methods = connection.execute(
                    text(
                        "SELECT r.client_id, s.method FROM ordo_schedules s "
                        "JOIN ordo_runs r ON r.id = s.run_id"
                    )
                ).all()
                jobs = connection.execute(text("SELECT count(*) FROM ordo_jobs")).scalar_one()
        finally:
            engine.dispose()
    printed = "\n".join(result.lines)
    assert "n = 4, after 2 completed runs" in printed
    # The fleet's own reports only: 2 runs x (baseline + 4 stages).
    assert "reports acknowledged: 10; lost or altered: 0" in printed
    fleet = [method for client_id, method in methods if client_id.startswith("trainer-")]
    history = [method for client_id, method in methods if client_id.startswith("history-")]
    assert history
    assert fleet
    assert all(method.startswith("ensemble") for method in fleet), fleet
    counted = re.search(r"\(([\d.]+) ms a job, (\d+) jobs\)", printed)
    assert counted is not None, printed
    assert 0 < int(counted.group(2)) < jobs  # the history's jobs are left out


def test_job_delays_are_the_claim_waits_and_the_claim_to_end_times_of_ended_jobs() -> None:
    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    jobs = [
        JobTimes(1, at, at + timedelta(seconds=0.1), at + timedelta(seconds=0.3)),
        JobTimes(2, at, at + timedelta(seconds=0.5), at + timedelta(seconds=0.6)),
        JobTimes(3, at, at + timedelta(seconds=0.2), None),  # claimed, not ended: left out
        JobTimes(4, at, None, None),
    ]

    line = job_delays(jobs)

    assert "waited for a claim p50 300 ms, p99 496 ms" in line
    assert "claim to end p50 150 ms, p99 199 ms (2 ended)" in line


def test_batches_are_the_ended_jobs_claimed_together() -> None:
    at = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def job(number: int, claimed: float | None, ended: float | None) -> JobTimes:
        started = None if claimed is None else at + timedelta(seconds=claimed)
        finished = None if ended is None else at + timedelta(seconds=ended)
        return JobTimes(number, at, started, finished)

    jobs = [
        job(1, 1.0, 1.1),  # a batch of three: first plan after 100 ms, then 20 ms a job
        job(2, 1.0, 1.12),
        job(3, 1.0, 1.14),
        job(4, 2.0, 2.3),  # a batch of two: 300 ms, then 50 ms
        job(5, 2.0, 2.35),
        job(6, 3.0, 3.05),  # alone: not a batch
        job(7, 2.0, None),  # claimed with the second batch, not ended: left out
        job(8, None, None),
    ]

    line = batch_times(jobs)

    assert line == (
        "  batches: 2 of 2-3 jobs (median 2.5); claim to first plan median 200 ms, max 300 ms; "
        "then a job median 35.0 ms, max 50.0 ms"
    )
    assert batch_times(jobs[5:]) == "  batches: none of two jobs or more"


def test_repeats_of_a_fleet_are_summed_up_by_their_medians() -> None:
    runs = [
        FleetResult([], 0.188, 2.6, False),
        FleetResult([], 0.538, 1.9, False),
        FleetResult([], 0.240, 1.5, True),
    ]
    assert fleet_summary(100, runs) == (
        "fleet of 100, 3 runs: report p99 median 240 ms (188-538), "
        "lag p99 median 1.90 s (1.50-2.60); 1 of 3 runs PASS"
    )
    fixed = [FleetResult([], 0.1, None, True), FleetResult([], 0.3, None, False)]
    assert fleet_summary(40, fixed) == (
        "fleet of 40, 2 runs: report p99 median 200 ms (100-300), no re-plans; 1 of 2 runs PASS"
    )


BURN_THEN_WAIT = (
    "import time\n"
    "end = time.process_time() + 0.4\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(30)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_cpu_meter_counts_the_process_tree_of_its_root() -> None:
    # A child and a grandchild of this process burn 0.4 s of CPU each, then wait (a process
    # that has ended leaves the table); a meter rooted at an idle process counts none of it.
    nested = (
        f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {BURN_THEN_WAIT!r}])\n"
        + BURN_THEN_WAIT
    )
    idle = subprocess.Popen(["sleep", "30"])
    ours, elsewhere = CpuMeter(root=os.getpid()), CpuMeter(root=idle.pid)
    ours.start()
    elsewhere.start()
    burner = subprocess.Popen([sys.executable, "-c", nested], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while ours.server_s < 0.75 and time.monotonic() < deadline:
            time.sleep(0.1)
            ours.stop()
        elsewhere.stop()
    finally:
        os.killpg(burner.pid, signal.SIGKILL)
        idle.kill()
        burner.wait()
        idle.wait()
    assert ours.server_s >= 0.75
    assert elsewhere.server_s < 0.05
    assert ours.per_request_ms(1000) == (
        f"CPU a request: API processes {ours.server_s:.2f} ms, PostgreSQL {ours.postgres_s:.2f} ms"
    )


@pytest.mark.postgres
def test_refreshing_the_statistics_says_how_many_rows_the_growing_tables_hold(
    postgres_database_url: str,
) -> None:
    engine = create_engine(postgres_database_url)
    try:
        with engine.begin() as connection:
            counts = [
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table, _ in SIZED_TABLES
            ]
    finally:
        engine.dispose()

    line = refresh_statistics(postgres_database_url)

    assert line is not None
    assert re.fullmatch(
        r"VACUUM ANALYZE done \(autovacuum is (on|off) on this server\); it holds "
        r"[\d,]+ runs, [\d,]+ jobs, [\d,]+ evaluations",
        line,
    ), line
    numbers = re.findall(r"(\d[\d,]*) (?:runs|jobs|evaluations)", line)
    held = [int(number.replace(",", "")) for number in numbers]
    assert held == counts
    assert refresh_statistics(None) is None


@pytest.mark.postgres
def test_refreshing_the_statistics_of_a_database_not_yet_migrated_counts_no_rows() -> None:
    # The benchmark refreshes them before its server starts, and the server migrates.
    with postgres_database(require_postgres(), migrate=False) as url:
        line = refresh_statistics(url)

    assert line is not None
    assert line.endswith("it holds 0 runs, 0 jobs, 0 evaluations"), line
