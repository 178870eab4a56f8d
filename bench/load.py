"""Load on the service: trainer fleets, plain-report throughput, one report alone (issue 12).

Starts ``ordo serve`` (``--workers`` processes) on a temporary SQLite database or on
``--database-url`` (PostgreSQL: the benchmark creates its own projects there and leaves them),
then prints:

1. **Fleets** (``--trainers 40 100``): that many simulated trainers at once in one project of
   ``--tasks`` tasks, each one adaptive run: create it, report the baseline, then ``GET next``
   and report every stage to the end, and complete it. Per fleet: the answers by status (every
   non-2xx counts; a trainer retries a 503 or a 500 up to three times, as the client does),
   report latency p50 / p99, re-plan lag (report acknowledged with ``plan_pending`` ->
   ``GET next`` answers without it), and
   acknowledged reports lost or altered (every 2xx report read back and compared), and where
   the fleet's CPU went (the API processes, the job workers, PostgreSQL and the trainers'
   own process, and the share of the machine's cores they took: :class:`FleetCpu`). With
   ``--repeats N`` each fleet runs N times, then one line sums them up: the medians and
   ranges of the runs' report and lag p99s, and how many met every target (one run's p99
   moves by a factor of two between repeats of the same code on a shared machine). With
   ``--history K`` the project first has K runs, trained one after the other and completed,
   outside the fleet's figures: from two completed runs on, every plan of an adaptive run is
   the ensemble's (a fit of the project's runs, then expected improvement over the orders:
   the steady state of a project in use), where a fresh project's fleet is planned from the
   pairwise estimates until its first runs complete, at its end. Where the lag goes, from the
   fleet's job rows: how long a job waited for its claim, and from its claim to its end (a
   worker's batch solves its runs in turn: :func:`job_delays`), and how the worker's batches
   went: their sizes, the time to each batch's first plan (its snapshot and fit) and the time
   a job of it then took (:func:`batch_times`).
2. **Plain reports** with ``wrk`` (Debian's package), ``--connections`` connections for
   ``--duration`` seconds: baseline and stage reports of fixed runs that follow one stored
   schedule (the Lua script walks run-major within a stage, stage after stage, so no report is
   out of turn), against a bare FastAPI route parsing the same body in a server with the same
   workers (:mod:`bench.bare_app`). Requests/s of both and their ratio (target >= 0.3), and
   the CPU each request cost the API processes and PostgreSQL (``/proc``, Linux): on a
   shared machine requests/s move with the other tenants' load, CPU a request much less, so
   compare versions on it.
3. **One report alone**: ``--single`` sequential reports from one client, p50 (target <= 5 ms).
4. **CPU a request by endpoint** (``--endpoints``, sequential, one client): ``/healthz`` (the
   framework's floor), ``GET next``, a baseline report and ``GET`` a run, the API processes'
   and PostgreSQL's CPU each and its p50 (:func:`endpoint_costs`): where a request's cost is
   the route's own work and where the framework's, robust to the machine's load.

Targets of issue 12 (PostgreSQL, 2 API workers, n = 6): fleets of 40 and 100 with 0 answers
outside 2xx, 0 reports lost or altered, report p99 < 250 ms, re-plan lag p99 < 2 s.
Run with ``OPENBLAS_NUM_THREADS=1``; the machine's load moves every figure (print ``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import Connection, create_engine, select, text
from sqlalchemy.orm import Session

from ordo_server.app.server_process import LOOPBACK, ServerProcess, free_port, serve_subprocess
from ordo_server.models import Job

RETRIED = (500, 502, 503, 504)
ATTEMPTS = 3


@dataclass
class Tally:
    """What a fleet saw: every answer's status, report latencies and re-plan lags (s)."""

    statuses: Counter[int] = field(default_factory=Counter)
    report_s: list[float] = field(default_factory=list)
    lag_s: list[float] = field(default_factory=list)
    acknowledged: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int) -> None:
        with self.lock:
            self.statuses[status] += 1


class Trainer:
    """One simulated trainer on its own connection."""

    def __init__(self, base_url: str, token: str, prefix: str, keys: Sequence[str]) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )
        self.prefix, self.keys = prefix, list(keys)

    def call(
        self,
        tally: Tally,
        method: str,
        path: str,
        body: object = None,
        *,
        lease_token: int | None = None,
    ) -> httpx.Response:
        """One request, retried on 5xx (each answer counted); raises after the last try.

        ``lease_token``: sent as ``Ordo-Lease-Token`` (every write on a run needs it).
        """
        headers = None if lease_token is None else {"Ordo-Lease-Token": str(lease_token)}
        for attempt in range(ATTEMPTS):
            response = self.http.request(method, path, json=body, headers=headers)
            tally.answer(response.status_code)
            if response.status_code not in RETRIED:
                break
            time.sleep(0.05 * 2**attempt)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response

    def values(self, rng: np.random.Generator) -> list[float]:
        return [float(v) for v in rng.uniform(0.2, 0.8, len(self.keys))]

    def body(self, values: Sequence[float]) -> dict[str, Any]:
        return {
            "evaluations": [
                {"task": key, "value": value, "entropy": 1.0}
                for key, value in zip(self.keys, values, strict=True)
            ]
        }

    def train(self, tally: Tally, client_id: str, seed: int) -> None:
        """Create an adaptive run, report every stage, complete it."""
        rng = np.random.default_rng(seed)
        runs = f"{self.prefix}/runs"
        run = self.call(tally, "POST", runs, {"adaptive": True, "client_id": client_id}).json()
        token = int(run["lease"]["token"])
        stage: int | None = 0
        while stage is not None:
            values = self.values(rng)
            started = time.perf_counter()
            path = f"{runs}/{run['id']}/reports/{stage}"
            answer = self.call(tally, "PUT", path, self.body(values), lease_token=token)
            acknowledged = time.perf_counter()
            with tally.lock:
                tally.report_s.append(acknowledged - started)
                tally.acknowledged[(run["id"], stage)] = values
            stage = self._next(tally, f"{runs}/{run['id']}/next", answer.json(), acknowledged)
        self.call(tally, "POST", f"{runs}/{run['id']}/complete", lease_token=token)

    def _next(self, tally: Tally, path: str, report: dict[str, Any], acked: float) -> int | None:
        """``GET next`` until no re-plan is pending; the stage to report (``None``: done).

        The server waits up to its ``plan_wait_s`` on each call, so asking again does not spin.
        """
        replanning = bool(report.get("plan_pending") or report.get("replanned"))
        while True:
            assignment = self.call(tally, "GET", path).json()
            if not assignment.get("plan_pending"):
                break
        if replanning:
            with tally.lock:
                tally.lag_s.append(time.perf_counter() - acked)
        return None if assignment["done"] else int(assignment["stage"])

    def close(self) -> None:
        self.http.close()


def _admin(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers=server.admin_headers, timeout=120.0)


def create_project(server: ServerProcess, name: str, tasks: int) -> tuple[str, list[str]]:
    """A project of ``tasks`` tasks, structured and open-ended in turn; its path and keys."""
    keys = [f"task-{j}" for j in range(tasks)]
    with _admin(server) as admin:
        created = admin.post("/v1/projects", json={"name": name})
        created.raise_for_status()
        prefix = f"/v1/projects/{created.json()['id']}"
        kinds = ["structured", "open_ended"]
        body = {"tasks": [{"key": k, "kind": kinds[j % 2]} for j, k in enumerate(keys)]}
        admin.post(f"{prefix}/tasks", json=body).raise_for_status()
    return prefix, keys


# How the trainers authenticate: a project key of role trainer (as a team's trainers do: one
# indexed key lookup per request) or the configured admin token (no lookup; earlier rounds).
TRAINER_KEY = "trainer-key"
ADMIN_TOKEN = "admin-token"


def reporting_token(server: ServerProcess, prefix: str, auth: str) -> str:
    """The bearer token the trainers of project ``prefix`` send (``auth``: how they sign in)."""
    if auth == ADMIN_TOKEN:
        return server.admin_token
    with _admin(server) as admin:
        created = admin.post(f"{prefix}/keys", json={"role": "trainer", "name": "bench trainers"})
        created.raise_for_status()
        token: str = created.json()["key"]
        return token


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def check_reports(server: ServerProcess, prefix: str, tally: Tally) -> int:
    """Acknowledged reports missing or different when read back (one read per run)."""
    stored: dict[str, dict[int, list[float]]] = {}
    with _admin(server) as admin:
        for run_id in {run_id for run_id, _ in tally.acknowledged}:
            view = admin.get(f"{prefix}/runs/{run_id}").json()
            stored[run_id] = {
                report["stage"]: [e["value"] for e in report["evaluations"]]
                for report in view["reports"]
            }
    return sum(
        stored[run_id].get(stage) != values
        for (run_id, stage), values in tally.acknowledged.items()
    )


@dataclass(frozen=True)
class FleetResult:
    """One fleet's report lines, its report and re-plan lag p99 (s; lag ``None`` without
    re-plans) and whether it met every target."""

    lines: list[str]
    report_p99_s: float
    lag_p99_s: float | None
    passed: bool


def run_fleet(
    server: ServerProcess,
    trainers: int,
    tasks: int,
    *,
    auth: str = TRAINER_KEY,
    history: int = 0,
) -> FleetResult:
    """``trainers`` adaptive runs at once in one new project (after ``history`` completed
    runs of its own, trained one at a time and left out of the figures)."""
    prefix, keys = create_project(server, f"load-{trainers}-{os.urandom(4).hex()}", tasks)
    token = reporting_token(server, prefix, auth)
    _train_history(server, token, prefix, keys, history)
    known = {job.id for job in _jobs(server, prefix)}  # the history's
    tally = Tally()
    fleet = [Trainer(server.base_url, token, prefix, keys) for _ in range(trainers)]
    cpu = FleetCpu(server.process.pid)
    cpu.start()
    started = time.perf_counter()

    def one(index: int) -> None:
        try:
            fleet[index].train(tally, f"trainer-{index}", seed=index)
        except Exception as error:  # a trainer that gives up is a failure to report, not a crash
            with tally.lock:
                tally.failures.append(str(error)[:160])

    with ThreadPoolExecutor(trainers) as pool:
        list(pool.map(one, range(trainers)))
    wall = time.perf_counter() - started
    cpu.stop()
    for trainer in fleet:
        trainer.close()
    lost = check_reports(server, prefix, tally)
    jobs = [job for job in _jobs(server, prefix) if job.id not in known]
    outside = sum(count for status, count in tally.statuses.items() if not 200 <= status < 300)
    after = f", after {history} completed runs" if history else ""
    lines = [
        f"fleet of {trainers} adaptive trainers, n = {tasks}{after}: {wall:.1f} s",
        "  answers by status: " + ", ".join(f"{s}: {c}" for s, c in sorted(tally.statuses.items())),
        f"  answers outside 2xx: {outside}; trainers that gave up: {len(tally.failures)}",
        f"  reports acknowledged: {len(tally.acknowledged)}; lost or altered: {lost}",
        f"  report latency p50 {1000 * _percentile(tally.report_s, 50):.1f} ms, "
        f"p99 {1000 * _percentile(tally.report_s, 99):.1f} ms",
        f"  re-plan lag p50 {1000 * _percentile(tally.lag_s, 50):.1f} ms, "
        f"p99 {1000 * _percentile(tally.lag_s, 99):.1f} ms over {len(tally.lag_s)} re-plans",
        cpu.line(wall, requests=sum(tally.statuses.values()), jobs=len(jobs)),
        job_delays(jobs),
        batch_times(jobs),
    ]
    lines += [f"  gave up: {message}" for message in tally.failures[:3]]
    report_p99 = _percentile(tally.report_s, 99)
    lag_p99 = _percentile(tally.lag_s, 99) if tally.lag_s else None
    verdict = outside == 0 and lost == 0 and not tally.failures
    verdict = verdict and report_p99 < 0.25 and (lag_p99 is None or lag_p99 < 2.0)
    lines.append(
        f"  {'PASS' if verdict else 'FAIL'}: 0 outside 2xx, 0 lost, p99 < 250 ms, lag < 2 s"
    )
    return FleetResult(lines, report_p99, lag_p99, verdict)


def _train_history(
    server: ServerProcess, token: str, prefix: str, keys: Sequence[str], runs: int
) -> None:
    """``runs`` adaptive runs of project ``prefix``, one after the other, each completed."""
    tally = Tally()
    trainer = Trainer(server.base_url, token, prefix, keys)
    try:
        for index in range(runs):
            trainer.train(tally, f"history-{index}", seed=10_000 + index)
    finally:
        trainer.close()


@dataclass(frozen=True)
class JobTimes:
    """A job of a fleet's project: its id and when it was queued, last claimed and ended (the
    last two ``None`` while it has not)."""

    id: int
    created: datetime
    started: datetime | None
    finished: datetime | None


def _jobs(server: ServerProcess, prefix: str) -> list[JobTimes]:
    """The jobs the project of ``prefix`` queued (plans of its runs), oldest first."""
    project_id = prefix.rsplit("/", 1)[-1]
    engine = create_engine(server.database_url)
    query = (
        select(Job.id, Job.created_at, Job.started_at, Job.finished_at)
        .where(Job.project_id == project_id)
        .order_by(Job.id)
    )
    try:
        with Session(engine) as session:
            return [JobTimes(*row) for row in session.execute(query)]
    finally:
        engine.dispose()


def job_delays(jobs: Sequence[JobTimes]) -> str:
    """Where the re-plan lag goes, from the job rows: how long the ended jobs waited for their
    (last) claim, and how long from the claim to the end (a batch solves its runs in turn)."""
    waited: list[float] = []
    ran: list[float] = []
    for job in jobs:
        if job.started is not None and job.finished is not None:
            waited.append((job.started - job.created).total_seconds())
            ran.append((job.finished - job.started).total_seconds())
    return (
        f"  jobs: waited for a claim p50 {1000 * _percentile(waited, 50):.0f} ms, "
        f"p99 {1000 * _percentile(waited, 99):.0f} ms; claim to end p50 "
        f"{1000 * _percentile(ran, 50):.0f} ms, p99 {1000 * _percentile(ran, 99):.0f} ms "
        f"({len(ran)} ended)"
    )


def batch_times(jobs: Sequence[JobTimes]) -> str:
    """How the worker's batches went, from the ended jobs' rows: a batch's jobs share their
    claim time. For each batch of two jobs or more: its size, the time from its claim to its
    first job's end (the snapshot, the fit and the first plan) and the time each of its other
    jobs then took (the rest of the batch over their number); the medians and the largest."""
    batches: dict[datetime, list[datetime]] = {}
    for job in jobs:
        if job.started is not None and job.finished is not None:
            batches.setdefault(job.started, []).append(job.finished)
    sizes: list[float] = []
    firsts: list[float] = []
    each: list[float] = []
    for claimed, ends in batches.items():
        if len(ends) < 2:
            continue
        sizes.append(len(ends))
        firsts.append((min(ends) - claimed).total_seconds())
        each.append((max(ends) - min(ends)).total_seconds() / (len(ends) - 1))
    if not sizes:
        return "  batches: none of two jobs or more"
    return (
        f"  batches: {len(sizes)} of {min(sizes):.0f}-{max(sizes):.0f} jobs (median "
        f"{statistics.median(sizes):g}); claim to first plan median "
        f"{1000 * statistics.median(firsts):.0f} ms, max {1000 * max(firsts):.0f} ms; "
        f"then a job median {1000 * statistics.median(each):.1f} ms, max "
        f"{1000 * max(each):.1f} ms"
    )


def fleet_summary(trainers: int, results: Sequence[FleetResult]) -> str:
    """The repeats of one fleet in a line: the medians (and ranges) of their p99s, and how many
    met every target. On a shared machine one run's p99 moves by a factor of two between
    repeats of the same code (docs/jobs.md): compare medians."""
    reports = [1000 * r.report_p99_s for r in results]
    lags = [r.lag_p99_s for r in results if r.lag_p99_s is not None]
    lag = (
        f"lag p99 median {statistics.median(lags):.2f} s ({min(lags):.2f}-{max(lags):.2f})"
        if lags
        else "no re-plans"
    )
    passed = sum(r.passed for r in results)
    return (
        f"fleet of {trainers}, {len(results)} runs: report p99 median "
        f"{statistics.median(reports):.0f} ms ({min(reports):.0f}-{max(reports):.0f}), {lag}; "
        f"{passed} of {len(results)} runs PASS"
    )


# --- plain reports with wrk -----------------------------------------------------------------

# Each request is the next (run, stage) in turn. wrk calls ``request()`` once before the run, to
# check what it builds (``script_verify_request`` in wrk.c), and never sends that request: the
# first call answers a health check, so that no report is skipped (a skipped stage 0 made that
# run's later stages 409 stage_out_of_turn, one or more non-2xx answers in every earlier round).
LUA = """
wrk.headers["Content-Type"] = "application/json"
-- Every run is fresh: its lease token is 1 (fixed_runs checks).
wrk.headers["Ordo-Lease-Token"] = "1"
{auth}
local runs = {runs}
local stages = {stages}
local prefix = "{prefix}"
local body = '{body}'
local sent = 0
local probed = false
request = function()
  if not probed then
    probed = true
    return wrk.format("GET", "/healthz")
  end
  local stage = math.floor(sent / #runs)
  if stage >= stages then
    return wrk.format("GET", "/healthz")
  end
  local run = runs[(sent % #runs) + 1]
  sent = sent + 1
  return wrk.format("PUT", prefix .. "/runs/" .. run .. "/reports/" .. stage, nil, body)
end
-- Each answer outside 2xx is printed, for the summary to name its code.
response = function(status, headers, body)
  if status ~= 200 then
    print("NON2XX " .. status .. " " .. body)
  end
end
"""


CpuTable = dict[int, tuple[int, str, float]]
"""Processes by pid: (parent pid, name, user + system CPU seconds)."""


def _cpu_seconds() -> CpuTable:
    """Every process of this machine: pid -> (parent pid, name, user + system CPU seconds).

    From ``/proc/<pid>/stat`` (Linux); empty elsewhere. A process that ends while it is read is
    left out.
    """
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    table: CpuTable = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / ticks)
    return table


def _tree(table: CpuTable, root: int) -> set[int]:
    """``root`` and its descendants in ``table``."""
    members, grew = {root}, True
    while grew:
        more = {pid for pid, (parent, _, _) in table.items() if parent in members}
        grew = bool(more - members)
        members |= more
    return members & table.keys()


def _spent_since(before: CpuTable) -> tuple[CpuTable, dict[int, float]]:
    """Every process now, and the CPU seconds each spent since ``before`` (all of its own for a
    process started since)."""
    after = _cpu_seconds()
    spent = {pid: cpu - before.get(pid, (0, "", 0.0))[2] for pid, (_, _, cpu) in after.items()}
    return after, spent


def _postgres_s(after: CpuTable, spent: dict[int, float]) -> float:
    """What PostgreSQL's processes (all of them: this machine's database) spent."""
    return sum(spent[pid] for pid, (_, name, _) in after.items() if name.startswith("postgres"))


@dataclass
class CpuMeter:
    """CPU seconds spent between :meth:`start` and :meth:`stop` by a server's process tree
    (``root``: its pid; the API processes, not the ``ordo worker`` processes, whose share of a
    plain report is the periodic fold) and by the PostgreSQL processes (all of them: this
    machine's database)."""

    root: int
    server_s: float = 0.0
    postgres_s: float = 0.0
    _before: CpuTable = field(default_factory=dict)

    def start(self) -> None:
        self._before = _cpu_seconds()

    def stop(self) -> None:
        after, spent = _spent_since(self._before)
        self.server_s = sum(spent[pid] for pid in _tree(after, self.root))
        self.postgres_s = _postgres_s(after, spent)

    def per_request_ms(self, requests: int) -> str:
        """Server and PostgreSQL CPU milliseconds a request."""
        if not requests:
            return "no requests"
        server = 1000 * self.server_s / requests
        postgres = 1000 * self.postgres_s / requests
        return f"CPU a request: API processes {server:.2f} ms, PostgreSQL {postgres:.2f} ms"


@dataclass
class FleetCpu:
    """Where a fleet's CPU went (Linux ``/proc``): the API processes (the tree of ``root``, the
    server's pid), the job workers (this process's other children), PostgreSQL, and the
    trainers themselves (this process: its threads share the machine's cores with the service
    they measure, so a busy trainer process lengthens the latencies it records)."""

    root: int
    _before: CpuTable = field(default_factory=dict)
    _spent: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._before = _cpu_seconds()

    def stop(self) -> None:
        after, spent = _spent_since(self._before)
        api = _tree(after, self.root)
        ours = _tree(after, os.getpid())
        self._spent = {
            "api": sum(spent[pid] for pid in api),
            "workers": sum(spent[pid] for pid in ours - api - {os.getpid()}),
            "postgres": _postgres_s(after, spent),
            "trainers": spent.get(os.getpid(), 0.0),
        }

    def line(self, wall_s: float, *, requests: int, jobs: int) -> str:
        """The CPU seconds of each part, per request (API), per job (workers), and the share
        of the machine's cores the four took over ``wall_s``."""
        spent = self._spent
        cores = os.cpu_count() or 1
        busy = sum(spent.values()) / (wall_s * cores) if wall_s > 0 else float("nan")
        per_request = 1000 * spent["api"] / requests if requests else float("nan")
        per_job = 1000 * spent["workers"] / jobs if jobs else float("nan")
        return (
            f"  CPU: API processes {spent['api']:.1f} s ({per_request:.2f} ms a request), "
            f"job workers {spent['workers']:.1f} s ({per_job:.1f} ms a job, {jobs} jobs), "
            f"PostgreSQL {spent['postgres']:.1f} s, trainers {spent['trainers']:.1f} s; "
            f"{busy:.0%} of {cores} cores"
        )


def _wrk(url: str, script: Path, connections: int, duration: int) -> tuple[float, int, str]:
    """Requests/s, requests answered and wrk's latency lines for ``script`` against ``url``."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    latency = [line.strip() for line in output.splitlines() if re.match(r"\s+(50|99)%", line)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    extra = f"non-2xx {non_2xx.group(1)}" if non_2xx else "non-2xx 0"
    answers = Counter(re.findall(r'^NON2XX (\d+) .*?"code":"(\w+)"', output, re.MULTILINE))
    if answers:
        extra += " (" + ", ".join(f"{n} x {s} {c}" for (s, c), n in sorted(answers.items())) + ")"
    rps = float(match.group(1)) if match else 0.0
    return rps, int(total.group(1)) if total else 0, "; ".join([*latency, extra])


def fixed_runs(server: ServerProcess, prefix: str, count: int) -> list[str]:
    """``count`` fixed runs following one stored schedule (no solve per run)."""
    with _admin(server) as admin:
        body = {"schedule_id": _schedule_id(admin, prefix), "adaptive": False}
        ids = []
        for _ in range(count):
            response = admin.post(f"{prefix}/runs", json=body)
            response.raise_for_status()
            if response.json()["lease"]["token"] != 1:
                raise RuntimeError("a fresh run's lease token is not 1")
            ids.append(response.json()["id"])
    return ids


def _schedule_id(admin: httpx.Client, prefix: str) -> str:
    """A new schedule's id; a 202 (the solve outlived the inline wait) is polled to its end."""
    answer = admin.post(f"{prefix}/schedules", json={})
    answer.raise_for_status()
    if answer.status_code != 202:
        schedule_id: str = answer.json()["id"]
        return schedule_id
    job_url = f"{prefix}/schedules/jobs/{answer.json()['id']}"
    deadline = time.monotonic() + 120
    while answer.json()["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = admin.get(job_url)
        answer.raise_for_status()
    if answer.json()["status"] != "succeeded":
        raise RuntimeError(f"the schedule job ended {answer.json()['status']}: {answer.text}")
    schedule_id = answer.json()["schedule_id"]
    return schedule_id


def plain_reports(
    server: ServerProcess,
    bare: BareServer,
    tasks: int,
    connections: int,
    duration: int,
    runs: int,
    *,
    auth: str = TRAINER_KEY,
) -> list[str]:
    """Report throughput against the bare route's, same body, same connections; and the CPU
    each request cost the server's processes and PostgreSQL (robust to the machine's load,
    where requests/s are not)."""
    prefix, keys = create_project(server, f"plain-{os.urandom(4).hex()}", tasks)
    token = reporting_token(server, prefix, auth)
    run_ids = fixed_runs(server, prefix, runs)
    refresh_statistics(server.database_url, vacuum=False)  # what autovacuum would do by now
    body = json.dumps(
        {"evaluations": [{"task": k, "value": 0.5, "entropy": 1.0} for k in keys]},
        separators=(",", ":"),
    )
    with tempfile.TemporaryDirectory() as folder:
        ordo_script, bare_script = Path(folder) / "ordo.lua", Path(folder) / "bare.lua"
        lua_runs = "{" + ",".join(f'"{r}"' for r in run_ids) + "}"
        auth = f'wrk.headers["Authorization"] = "Bearer {token}"'
        ordo_script.write_text(
            LUA.format(auth=auth, runs=lua_runs, stages=tasks + 1, prefix=prefix, body=body)
        )
        bare_script.write_text(
            LUA.format(auth="", runs=lua_runs, stages=tasks + 1, prefix="/bare", body=body)
        )
        ordo_cpu, bare_cpu = CpuMeter(server.process.pid), CpuMeter(bare.pid)
        ordo_cpu.start()
        ordo_rps, ordo_count, ordo_latency = _wrk(
            server.base_url, ordo_script, connections, duration
        )
        ordo_cpu.stop()
        bare_cpu.start()
        bare_rps, bare_count, bare_latency = _wrk(bare.url, bare_script, connections, duration)
        bare_cpu.stop()
    ratio = ordo_rps / bare_rps if bare_rps else float("nan")
    return [
        f"plain reports, {connections} connections, {duration} s (wrk, {runs} fixed runs):",
        f"  Ordo {ordo_rps:.0f} requests/s ({ordo_latency})",
        f"    {ordo_cpu.per_request_ms(ordo_count)}",
        f"  bare FastAPI route {bare_rps:.0f} requests/s ({bare_latency})",
        f"    {bare_cpu.per_request_ms(bare_count)}",
        f"  ratio {ratio:.3f}  {'PASS' if ratio >= 0.3 else 'FAIL'}: >= 0.3",
    ]


def single_reports(
    server: ServerProcess, tasks: int, count: int, *, auth: str = TRAINER_KEY
) -> list[str]:
    """``count`` sequential reports (stage 0 of fixed runs) from one client: p50."""
    prefix, keys = create_project(server, f"single-{os.urandom(4).hex()}", tasks)
    token = reporting_token(server, prefix, auth)
    run_ids = fixed_runs(server, prefix, count)
    body = {"evaluations": [{"task": k, "value": 0.5, "entropy": 1.0} for k in keys]}
    timings = []
    headers = {"Authorization": f"Bearer {token}", "Ordo-Lease-Token": "1"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120.0) as trainer:
        for run_id in run_ids:
            started = time.perf_counter()
            trainer.put(f"{prefix}/runs/{run_id}/reports/0", json=body).raise_for_status()
            timings.append(time.perf_counter() - started)
    p50 = 1000 * statistics.median(timings)
    verdict = "PASS" if p50 <= 5.0 else "FAIL"
    return [f"one report alone: p50 {p50:.1f} ms over {count}  {verdict}: <= 5 ms"]


ENDPOINTS = ("GET /healthz", "GET .../next", "PUT .../reports/0", "GET .../runs/{id}")
"""The requests :func:`endpoint_costs` measures, in its order: the framework's floor (no
database, no metrics), a trainer's most frequent request, a baseline report, a run's detail."""


def endpoint_costs(
    server: ServerProcess, tasks: int, count: int, *, auth: str = TRAINER_KEY
) -> list[str]:
    """The CPU each of :data:`ENDPOINTS` costs the API processes and PostgreSQL, ``count``
    sequential requests of each from one client (fixed runs), with their p50 latency.

    One client keeps the figures apart from queueing: what a request costs, not what it waits.
    The floor (``/healthz``) against a database route says how much of a request is the
    framework and how much the route's own work."""
    prefix, keys = create_project(server, f"endpoints-{os.urandom(4).hex()}", tasks)
    token = reporting_token(server, prefix, auth)
    run_ids = fixed_runs(server, prefix, count)
    body = {"evaluations": [{"task": k, "value": 0.5, "entropy": 1.0} for k in keys]}
    headers = {"Authorization": f"Bearer {token}", "Ordo-Lease-Token": "1"}
    requests: dict[str, Callable[[httpx.Client, str], httpx.Response]] = {
        ENDPOINTS[0]: lambda client, _: client.get("/healthz"),
        ENDPOINTS[1]: lambda client, run: client.get(f"{prefix}/runs/{run}/next"),
        ENDPOINTS[2]: lambda client, run: client.put(f"{prefix}/runs/{run}/reports/0", json=body),
        ENDPOINTS[3]: lambda client, run: client.get(f"{prefix}/runs/{run}"),
    }
    lines = [f"CPU a request by endpoint, one client, {count} sequential requests each:"]
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=120.0) as client:
        for name, request in requests.items():
            meter, timings = CpuMeter(server.process.pid), []
            meter.start()
            for run_id in run_ids:
                started = time.perf_counter()
                request(client, run_id).raise_for_status()
                timings.append(time.perf_counter() - started)
            meter.stop()
            p50 = 1000 * statistics.median(timings)
            lines.append(f"  {name:<20} {meter.per_request_ms(count)}; p50 {p50:.2f} ms")
    return lines


@dataclass(frozen=True)
class BareServer:
    """The bare route's server: its base URL and the pid of its process tree's root."""

    url: str
    pid: int


@contextmanager
def bare_server(workers: int) -> Iterator[BareServer]:
    """:mod:`bench.bare_app` under uvicorn with ``workers`` processes."""
    port = free_port()
    args = [
        sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", LOOPBACK,
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(args)
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield BareServer(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def ordo_server(
    database_url: str | None, workers: int, job_workers: int = 0
) -> Iterator[ServerProcess]:
    """``ordo serve`` on ``database_url`` or on a temporary SQLite database, and ``job_workers``
    ``ordo worker`` processes (0: the server's embedded worker runs the jobs)."""
    token = "load-admin-" + os.urandom(16).hex()
    # The fleet shares one address and a few keys: measure the service, not its rate limiter.
    env = {"ORDO_RATE_LIMIT_ENABLED": "false"}
    if job_workers:
        env["ORDO_JOB_RUNNER"] = "external"
    with tempfile.TemporaryDirectory(prefix="ordo-load-") as folder:
        url = database_url or f"sqlite:///{Path(folder) / 'ordo.db'}"
        with serve_subprocess(url, admin_token=token, workers=workers, env=env) as server:
            processes = [_job_worker(url) for _ in range(job_workers)]
            try:
                yield server
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=30)


def _job_worker(database_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORDO_DATABASE_URL": database_url}
    command = [sys.executable, "-m", "ordo_server.app.cli", "worker"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument(
        "--job-workers", type=int, default=1, help="`ordo worker` processes (0: embedded)"
    )
    parser.add_argument("--tasks", type=int, default=6)
    parser.add_argument("--trainers", type=int, nargs="*", default=[40, 100])
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="completed runs in each fleet's project before it starts (2 or more: the "
        "ensemble plans every run of the fleet)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each fleet (more than one: a summary)"
    )
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    parser.add_argument("--plain-runs", type=int, default=2000, help="fixed runs for wrk")
    parser.add_argument("--single", type=int, default=200, help="sequential reports (0: skip)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the plain-report phase")
    parser.add_argument(
        "--endpoints",
        type=int,
        default=200,
        help="sequential requests of each endpoint for the CPU a request (0: skip)",
    )
    parser.add_argument(
        "--auth",
        choices=[TRAINER_KEY, ADMIN_TOKEN],
        default=TRAINER_KEY,
        help="trainers sign in with a project key of role trainer (default), or with the "
        "configured admin token (no key lookup; the figures of earlier rounds)",
    )
    return parser.parse_args(argv)


SIZED_TABLES = (
    ("ordo_runs", "runs"),
    ("ordo_jobs", "jobs"),
    ("ordo_stage_evaluations", "evaluations"),
)
"""The tables whose sizes :func:`refresh_statistics` prints, with their names in its line."""


def refresh_statistics(database_url: str | None, *, vacuum: bool = True) -> str | None:
    """``VACUUM ANALYZE`` the database (PostgreSQL; ``vacuum=False``: ``ANALYZE`` alone), so the
    planner does not work from stale row counts, nor scans the dead rows of deleted ones.

    A server with autovacuum off (as some benchmark machines are) never refreshes them on its
    own: with earlier runs' rows in its tables, a stage report's read of two stages' evaluations
    became a sequential scan of every run's (30-40 ms instead of 0.05 ms), and the count of a
    project's statistics deltas read every row the folds had deleted. Autovacuum, on by
    default, analyzes a table after each 10 % of growth and vacuums after each 20 % of dead
    rows; the plain-report phase analyzes again after creating its runs, as it would (before,
    the planner took the 2,000 new runs of one project for one and read a batch's runs through
    the wrong index: 0.6 ms of PostgreSQL CPU a report instead of 0.47).

    The line also says how many rows the growing tables hold (every project's): the planner's
    choices change with them, and a figure is comparable only to another taken on a database
    of about the same size (a report's update of its run read every run from a few hundred
    runs up to some 20,000, and by the primary key past that: docs/jobs.md).
    """
    if database_url is None or not database_url.startswith("postgresql"):
        return None
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            autovacuum = connection.execute(text("SHOW autovacuum")).scalar()
            connection.execute(text("VACUUM ANALYZE" if vacuum else "ANALYZE"))
            held = [f"{_row_count(connection, table):,} {name}" for table, name in SIZED_TABLES]
    finally:
        engine.dispose()
    done = "VACUUM ANALYZE" if vacuum else "ANALYZE"
    return f"{done} done (autovacuum is {autovacuum} on this server); it holds {', '.join(held)}"


def _row_count(connection: Connection, table: str) -> int:
    """The rows of ``table``; 0 where it does not exist yet (a database the server will
    migrate when it starts, after this line is printed)."""
    if connection.execute(text("SELECT to_regclass(:table)"), {"table": table}).scalar() is None:
        return 0
    return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    database = "temporary SQLite" if args.database_url is None else args.database_url
    print(f"ordo serve --workers {args.workers} and {args.job_workers} ordo worker on {database}")
    print(f"trainers authenticate with: {args.auth}")
    analyzed = refresh_statistics(args.database_url)
    if analyzed is not None:
        print(analyzed)
    with ordo_server(args.database_url, args.workers, args.job_workers) as server:
        for trainers in args.trainers:
            results = []
            for _ in range(args.repeats):
                results.append(
                    run_fleet(server, trainers, args.tasks, auth=args.auth, history=args.history)
                )
                print("\n".join(results[-1].lines), flush=True)
            if len(results) > 1:
                print(fleet_summary(trainers, results), flush=True)
        if args.single > 0:
            lines = single_reports(server, args.tasks, args.single, auth=args.auth)
            print("\n".join(lines), flush=True)
        if args.endpoints > 0:
            lines = endpoint_costs(server, args.tasks, args.endpoints, auth=args.auth)
            print("\n".join(lines), flush=True)
        if not args.no_wrk:
            if shutil.which("wrk") is None:
                print("plain reports: skipped (wrk is not installed: apt-get install wrk)")
            else:
                with bare_server(args.workers) as bare:
                    lines = plain_reports(
                        server, bare, args.tasks, args.connections, args.duration,
                        args.plain_runs, auth=args.auth,
                    )  # fmt: skip
                print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
