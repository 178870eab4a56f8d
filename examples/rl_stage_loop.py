"""Where the Ordo client sits in an RL post-training job's stage loop.

    next stage  ->  train that task  ->  evaluate every task  ->  report  ->  (Ordo re-plans)

Everything marked PLACEHOLDER stands for your own trainer (GRPO/PPO on your model, your
evaluation harness); here it returns made-up numbers so that the loop runs as is:

    python examples/rl_stage_loop.py                 # starts a throwaway Ordo in-process
    ORDO_URL=http://127.0.0.1:8000 ORDO_TOKEN=<admin token> python examples/rl_stage_loop.py

In a real job, create the project and tasks once (or with the CLI), give the job a trainer key
(``ORDO_TOKEN``) and a stable ``client_id`` (a restarted job gets its run back and resumes at
the stage it has not reported yet).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from ordo_client import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ordo_local import ordo_server

TASKS = [
    {"key": "math", "kind": "structured", "reward": "verifiable"},
    {"key": "code", "kind": "structured", "reward": "verifiable"},
    {"key": "creative_writing", "kind": "open_ended", "reward": "preference"},
    {"key": "dialogue", "kind": "open_ended", "reward": "preference"},
]


class PlaceholderTrainer:
    """PLACEHOLDER for your RL trainer: swap each method body for the real thing."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._trained: list[str] = []

    def train_stage(self, task: str) -> None:
        """PLACEHOLDER: run your RL algorithm on ``task``'s prompts and rewards for one stage."""
        self._trained.append(task)

    def evaluate(self, task: str) -> tuple[float, float]:
        """PLACEHOLDER: your eval harness on ``task``: (score, mean policy entropy)."""
        score = 0.3 + 0.1 * (task in self._trained) + self._rng.uniform(-0.02, 0.02)
        entropy = 1.0 + self._rng.uniform(-0.05, 0.05)
        return score, entropy


def stage_loop(client: Client, project_id: str, *, client_id: str, seed: int) -> list[str]:
    """The loop itself: what a trainer writes around its own training code."""
    trainer = PlaceholderTrainer(seed)
    run = client.start_run(project_id, adaptive=True, client_id=client_id)
    trained: list[str] = []
    with client.lease(run) as lease:  # heartbeats from a background thread
        for stage in run.stages():  # stage 0 first: the baseline, nothing to train
            if stage.task is not None:
                trainer.train_stage(stage.task)  # hours of GPU time in a real job
                trained.append(stage.task)
            lease.check()  # stop early if another worker took the run over
            scores, entropies = {}, {}
            for task in TASKS:  # evaluate every task, not only the one trained
                scores[task["key"]], entropies[task["key"]] = trainer.evaluate(task["key"])
            accepted = run.report(stage.stage or 0, scores, entropy=entropies)
            upcoming = "(re-planning)" if accepted.plan_pending else accepted.next.task or "(done)"
            print(f"stage {accepted.report.stage}: trained {stage.task or '-'}; next {upcoming}")
    run.complete()
    return trained


def main(argv: list[str] | None = None) -> list[str]:
    """Set up a project (admin key), then run one job's stage loop (trainer key)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with ordo_server() as (url, admin_token):
        with Client(url, admin_token) as admin:
            project = admin.create_project(f"rl-sketch-{random.randrange(10**6)}")
            admin.create_tasks(project.id, TASKS)
            trainer_key = admin.create_api_key(project.id, name="rl job", role="trainer").key
        with Client(url, trainer_key) as client:
            order = stage_loop(client, project.id, client_id=f"rl-job-{args.seed}", seed=args.seed)
    print("trained in this order:", " -> ".join(order))
    return order


if __name__ == "__main__":
    main()
