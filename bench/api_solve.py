"""What users send: latency of ``POST /schedules`` through a live server (prints; not a test).

Usage::

    python -m bench.api_solve [--requests N] [--constrained-requests M] [--seed K]

Starts uvicorn on a temporary, freshly migrated SQLite file (default settings, so
``synchronous=FULL``) and talks to it over loopback HTTP with httpx, like a trainer would:

(a) n = 6, 8, 10, 12 tasks with random effects imported as priors, no constraints;
(b) n = 30 with five mixed constraints (precedence, pinned, window, kind order, contiguous).

Each request is timed from send to parsed answer (client side, so HTTP, auth, the estimates
load, the solve, the prediction and the commit are all in it). The requests of one shape are
spread over several projects with different random effects; each project gets one untimed
warm-up request first. Targets (issue 3): median under 50 ms for (a), under 500 ms for (b), every
answer proven ``optimal``.
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from ordo_server.app.server_process import serve_subprocess

SMALL_SIZES = (6, 8, 10, 12)
CONSTRAINED_SIZE = 30
SMALL_TARGET_MS = 50.0
CONSTRAINED_TARGET_MS = 500.0
PROJECTS_PER_SHAPE = 5


@dataclass(frozen=True, slots=True)
class Shape:
    """One kind of request: ``n`` tasks, with or without the five constraints."""

    n: int
    constrained: bool
    requests: int
    target_ms: float

    @property
    def name(self) -> str:
        return f"n={self.n}" + (" + 5 constraints" if self.constrained else "")


@dataclass(frozen=True, slots=True)
class Outcome:
    """Latencies (ms) and statuses of one shape's timed requests."""

    shape: Shape
    latencies_ms: list[float]
    statuses: list[str]
    methods: set[str]

    def summary(self) -> str:
        ordered = sorted(self.latencies_ms)
        median = statistics.median(ordered)
        p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
        optimal = self.statuses.count("optimal")
        met = median < self.shape.target_ms and optimal == len(self.statuses)
        return (
            f"{self.shape.name:<22} requests={len(ordered):3d}  median {median:7.1f} ms  "
            f"p90 {p90:7.1f} ms  optimal {optimal}/{len(self.statuses)}  "
            f"methods {','.join(sorted(self.methods))}  "
            f"target median < {self.shape.target_ms:g} ms: {'met' if met else 'MISSED'}"
        )


# --- the server ----------------------------------------------------------------------------------


@contextmanager
def live_server(admin_token: str) -> Iterator[str]:
    """uvicorn serving the app on a migrated temporary SQLite file; yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="ordo-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'ordo.sqlite'}"
        with serve_subprocess(url, admin_token=admin_token) as server:
            yield server.base_url


# --- the requests --------------------------------------------------------------------------------


def _check(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    return response.json()


def _kinds(n: int) -> list[str]:
    """The first half structured, the rest open-ended (the kind order then binds)."""
    return ["structured" if i < n // 2 else "open_ended" for i in range(n)]


def create_project(http: httpx.Client, n: int, rng: np.random.Generator) -> dict[str, str]:
    """A project with ``n`` tasks and random effects imported as priors; its admin headers."""
    project = _check(http.post("/v1/projects", json={"name": f"bench-{secrets.token_hex(4)}"}), 201)
    key = _check(http.post(f"/v1/projects/{project['id']}/keys", json={"role": "admin"}), 201)
    headers = {"Authorization": f"Bearer {key['key']}"}
    base = f"/v1/projects/{project['id']}"
    keys = [f"t{i}" for i in range(n)]
    tasks = [{"key": k, "kind": kind} for k, kind in zip(keys, _kinds(n), strict=True)]
    _check(http.post(f"{base}/tasks", json={"tasks": tasks}, headers=headers), 201)
    # Effect sizes of the kind the paper measures: forgetting up to ~0.1 utility.
    priors = {
        "L": rng.uniform(0.3, 0.7, n).tolist(),
        "B": rng.normal(0.0, 0.05, (n, n)).tolist(),
        "F": rng.normal(0.02, 0.05, (n, n)).tolist(),
    }
    for effect, mean in priors.items():
        body = {"effect": effect, "tasks": keys, "mean": mean, "std": 0.02}
        _check(http.post(f"{base}/priors", json=body, headers=headers), 200)
    return {"base": base, **headers}


def constraints(n: int) -> list[dict[str, Any]]:
    """Five mixed constraints that hold together and bind (kinds as in :func:`_kinds`)."""
    half = n // 2
    return [
        {"type": "precedence", "before": f"t{n - 1}", "after": f"t{half}"},
        {"type": "pinned", "task": "t3", "position": 2},
        {"type": "window", "task": f"t{half + 1}", "earliest": half + 1, "latest": half + 4},
        {"type": "kind_order", "earlier": "structured", "later": "open_ended"},
        {"type": "contiguous", "tasks": ["t5", "t6", "t7"]},
    ]


def run_shape(http: httpx.Client, shape: Shape, rng: np.random.Generator) -> Outcome:
    """Time ``shape.requests`` solves spread over a few projects."""
    latencies: list[float] = []
    statuses: list[str] = []
    methods: set[str] = set()
    per_project = math.ceil(shape.requests / PROJECTS_PER_SHAPE)
    while len(latencies) < shape.requests:
        project = create_project(http, shape.n, rng)
        base = project.pop("base")
        body: dict[str, Any] = {"rho": 0.3}
        if shape.constrained:
            body["constraints"] = constraints(shape.n)
        _check(http.post(f"{base}/schedules", json=body, headers=project), 201)  # warm-up
        for _ in range(min(per_project, shape.requests - len(latencies))):
            body["seed"] = int(rng.integers(0, 2**31 - 1))
            started = time.perf_counter()
            answer = _check(http.post(f"{base}/schedules", json=body, headers=project), 201)
            latencies.append((time.perf_counter() - started) * 1000.0)
            statuses.append(answer["status"])
            methods.add(answer["method"])
    return Outcome(shape, latencies, statuses, methods)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="Timed requests per small n.")
    parser.add_argument(
        "--constrained-requests", type=int, default=10, help="Timed requests for n = 30."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random effects.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    shapes = [Shape(n, False, args.requests, SMALL_TARGET_MS) for n in SMALL_SIZES]
    shapes.append(Shape(CONSTRAINED_SIZE, True, args.constrained_requests, CONSTRAINED_TARGET_MS))
    token = "bench-" + secrets.token_hex(16)
    with (
        live_server(token) as base_url,
        httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as http,
    ):
        outcomes = [run_shape(http, shape, rng) for shape in shapes]
    print("POST /v1/projects/{p}/schedules through uvicorn + SQLite, client-side latency:")
    for outcome in outcomes:
        print(outcome.summary())


if __name__ == "__main__":
    main()
