"""``Run``: a training run as the trainer drives it (next stage, report, heartbeat, finish)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ordo_client import _api
from ordo_client.errors import LeaseLostError
from ordo_client.models import Lease, NextStage, ReportAccepted, RunInfo

if TYPE_CHECKING:
    # Named only in the quoted base ``RunHandle["Client"]``: _client imports this module.
    from ordo_client._client import Client  # noqa: F401

ClientT = TypeVar("ClientT")


def report_body(
    values: Mapping[str, float],
    *,
    entropy: Mapping[str, float] | None,
    stderr: Mapping[str, float] | None,
    steps: int | None,
    tokens: int | None,
    wall_time_s: float | None,
) -> dict[str, Any]:
    """The body of a stage report: one evaluation per task of ``values``.

    ``entropy`` and ``stderr`` are optional per-task mappings; a task missing from them is sent
    without that field. Tasks in them but not in ``values`` are a mistake in the caller's code.
    """
    extra = (set(entropy or {}) | set(stderr or {})) - set(values)
    if extra:
        raise ValueError(f"entropy/stderr given for tasks without a value: {sorted(extra)}")
    evaluations = []
    for task, value in values.items():
        evaluation: dict[str, Any] = {"task": task, "value": float(value)}
        if stderr is not None and task in stderr:
            evaluation["stderr"] = float(stderr[task])
        if entropy is not None and task in entropy:
            evaluation["entropy"] = float(entropy[task])
        evaluations.append(evaluation)
    body: dict[str, Any] = {"evaluations": evaluations}
    for name, counter in (("steps", steps), ("tokens", tokens), ("wall_time_s", wall_time_s)):
        if counter is not None:
            body[name] = counter
    return body


class RunHandle(Generic[ClientT]):
    """What a run handle knows, whichever client it talks through (sync ``Run``, ``AsyncRun``).

    Attributes
    ----------
    project : str
        The project's id.
    id : str
        The run's id.
    info : RunInfo
        The run as last fetched.
    lease_token : int or None
        Fencing token of this holder's lease, as given when the run was created, claimed or
        attached to; sent with every write (header ``Ordo-Lease-Token``) and never replaced by
        the token of another holder.
    """

    def __init__(
        self, client: ClientT, project: str, info: RunInfo, *, lease_token: int | None = None
    ) -> None:
        self._client = client
        self.project = project
        self.id = info.id
        self.info = info
        if lease_token is None and info.lease is not None:
            lease_token = info.lease.token
        self.lease_token: int | None = lease_token
        self.last_report: ReportAccepted | None = None

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(project={self.project!r}, id={self.id!r}, status={self.info.status!r})"

    @property
    def heartbeat_interval_s(self) -> float | None:
        """The server's advised heartbeat period (seconds), if it sent one."""
        lease = self.info.lease
        return lease.heartbeat_interval_s if lease is not None else None

    def _took_stage(self, stage: NextStage) -> NextStage:
        """The ``next`` answer, unless it shows that another holder took the run over.

        Raises
        ------
        LeaseLostError
            When the run's lease token is no longer this holder's (before any training is
            wasted on a stage whose report would be refused).
        """
        lease = stage.lease
        if lease is not None and self.lease_token is not None and lease.token != self.lease_token:
            raise LeaseLostError(
                f"lease of run {self.id} lost: token {lease.token} holds it now, this holder's "
                f"is {self.lease_token} (the run was re-claimed by its client_id)"
            )
        return stage


def stage_after(report: ReportAccepted | None, stage: int | None) -> NextStage | None:
    """The next stage as the answer to the report of ``stage`` gave it, where that answer is
    final: ``report`` is that stage's and no re-plan is pending (a fixed run's stages, an
    adaptive run's baseline and last stages). ``None``: ask the server (``next``).

    The report's answer is made in the transaction that stored it, and only this holder's next
    report moves the run on, so asking again would only repeat it.
    """
    if report is None or stage is None or report.report.stage != stage or report.plan_pending:
        return None
    step = report.next
    return NextStage(done=step.done, stage=step.stage, task=step.task)


def awaits_plan(stage: NextStage) -> bool:
    """No stage yet because the run's plan is still being made: ask ``next`` again."""
    return stage.plan_pending and not stage.done and stage.stage is None


class Run(RunHandle["Client"]):
    """A run of a project, bound to the client that started or attached to it.

    The loop of a trainer::

        for stage in run.stages():          # stage 0 first: the baseline evaluation
            if stage.task is not None:
                train(stage.task)
            run.report(stage.stage, evaluate_all_tasks())
        run.complete()

    ``info`` is the run as last fetched (``refresh()`` fetches it again).
    """

    def refresh(self) -> RunInfo:
        """Fetch the run again (status, stages, schedules, reports, lease)."""
        self.info = self._client.execute(_api.get_run(self.project, self.id))
        return self.info

    def next(self) -> NextStage:
        """The stage to report next and the task to train in it (``done`` when none is left).

        While the run's first plan is still being made (past the baseline, no stage yet), asks
        again: the server waits for the plan on each call, so this does not spin.
        """
        while True:
            stage = self._took_stage(self._client.execute(_api.next_stage(self.project, self.id)))
            if not awaits_plan(stage):
                return stage

    def stages(self) -> Iterator[NextStage]:
        """Yield the next stage until the run is done; report each before asking again.

        The stage after a report comes from the report's answer where no re-plan is pending
        (then the yielded stage has no ``lease``), from ``next()`` otherwise: a fixed run asks
        the server once, an adaptive run once more per re-plan.

        Raises
        ------
        RuntimeError
            When the same stage comes back twice: it was not reported in the loop body.
        """
        previous: int | None = None
        while not (stage := self._stage_after(previous)).done:
            if stage.stage == previous:
                raise RuntimeError(f"stage {stage.stage} was not reported; call run.report(...)")
            previous = stage.stage
            yield stage

    def _stage_after(self, previous: int | None) -> NextStage:
        known = stage_after(self.last_report, previous)
        return known if known is not None else self.next()

    def report(
        self,
        stage: int,
        values: Mapping[str, float],
        *,
        entropy: Mapping[str, float] | None = None,
        stderr: Mapping[str, float] | None = None,
        steps: int | None = None,
        tokens: int | None = None,
        wall_time_s: float | None = None,
    ) -> ReportAccepted:
        """Report stage ``stage``'s evaluations: raw values by task key, in each task's units.

        Safe to repeat (the server stores the first body and answers a replay with it), so it
        is retried on transient failures; a different body for the same stage is a
        ``ConflictError``.
        """
        body = report_body(
            values,
            entropy=entropy,
            stderr=stderr,
            steps=steps,
            tokens=tokens,
            wall_time_s=wall_time_s,
        )
        accepted = self._client.execute(
            _api.put_report(
                self.project,
                self.id,
                stage,
                body,
                lease_token=self.lease_token,
                timeout_s=self._client.solve_timeout_s,
            )
        )
        self.last_report = accepted
        return accepted

    def heartbeat(self) -> Lease:
        """Extend the lease; ``LeaseFencedError`` when another holder took the run over."""
        return self._client.execute(_api.heartbeat(self.project, self.id, self.lease_token))

    def complete(self) -> RunInfo:
        """Declare the run finished (``LeaseFencedError`` if this holder lost the lease)."""
        call = _api.complete_run(self.project, self.id, lease_token=self.lease_token)
        self.info = self._client.execute(call)
        return self.info

    def fail(self, reason: str) -> RunInfo:
        """Declare the run failed, with the reason (kept with the run)."""
        call = _api.fail_run(self.project, self.id, reason, lease_token=self.lease_token)
        self.info = self._client.execute(call)
        return self.info
