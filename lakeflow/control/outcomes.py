"""How a run applies what happened to its units: the tasks' records (staged, failed, checks
that quarantined), the outcomes of its group commits (`CommitOutcome`), timeouts, retries per
the assets' policies, and the events that tell the story. `RunOutcomes` is a part of `Run`
(control/runner.py), kept apart so the run's loop and dispatch read on their own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from lakeflow.control.group_commit import GroupCommits, Staged
from lakeflow.define.checks import CheckResult
from lakeflow.define.graph import Pipeline
from lakeflow.errors import ErrorInfo
from lakeflow.execute.executors import TaskTimedOut
from lakeflow.execute.worker import UnitRecord
from lakeflow.lake.events import LOGS, Event
from lakeflow.plan.planner import Plan
from lakeflow.plan.scheduler import FINAL, RunState

__all__ = ["RunEvents", "RunOutcomes"]


class RunEvents:
    """A run's units as events: their partition keys, and one event per thing that happened."""

    id: str
    plan: Plan
    pipeline: Pipeline
    state: RunState
    emit: Callable[[Event], int]
    _keys: dict[int, str]

    def _where(self, unit: int) -> str:
        asset, index = self.plan.locate(unit)
        return f"{asset} {self.pipeline[asset].partitions.key(index)}".rstrip()

    def forget_key(self, unit: int) -> None:
        self._keys.pop(unit, None)

    def key(self, unit: int) -> str:
        """The partition key of a unit, computed once while the unit is under way."""
        key = self._keys.get(unit)
        if key is None:
            asset, index = self.plan.locate(unit)
            key = self._keys[unit] = self.pipeline[asset].partitions.key(index)
        return key

    def event(self, unit: int, kind: str, **fields: Any) -> int:
        asset = self.plan.assets[self.plan.asset_of(unit)]
        return self.emit(Event(self.id, kind, asset=asset, partition=self.key(unit), **fields))


class RunOutcomes(RunEvents):
    """The outcomes of a run's tasks and commits, applied to its state."""

    inputs: dict[int, dict[str, int]]
    running: dict[str, int]
    solo: set[int]
    completed: deque[tuple[str, list[int], list[UnitRecord] | None, str | TaskTimedOut | None]]
    unit_seconds: dict[str, float]
    commits: GroupCommits
    cancelled: bool
    retry_logged: int

    # -- outcomes --------------------------------------------------------------------------------
    def _drain(self) -> None:
        state = self.state
        while self.completed:
            asset, units, records, lost = self.completed.popleft()
            self.running[asset] -= len(units)
            if isinstance(lost, TaskTimedOut):
                self._timed_out(asset, units, lost)
                continue
            if records is None:
                if len(units) > 1:  # find the unit that kills its worker by running each alone
                    self._rerun_alone(units, "WorkerLost", lost, "its task's worker died")
                    continue
                self.failure(
                    units[0],
                    ErrorInfo("crash", "WorkerLost", lost or "the task died"),
                    retryable=True,
                )
                continue
            for unit, record in zip(units, records, strict=True):
                if record.logs:
                    self.event(unit, LOGS, attempt=record.attempt, detail={"logs": record.logs})
                self.check_events(unit, record.checks)
                if not record.ok:
                    assert record.error is not None
                    state.seconds[unit] += record.seconds  # its attempts' time, for the result
                    self.failure(unit, record.error, retryable=record.retryable)
                    continue
                state.staged(unit, rows=record.rows, size=record.bytes, seconds=record.seconds)
                if record.quarantine:
                    self.check_failed(unit, record.checks, quarantine=record.quarantine)
                    continue
                self.commits.stage(asset, Staged(unit, record, self.inputs.get(unit, {})))
                seconds = max(record.seconds, 1e-5)
                known = self.unit_seconds.get(asset)
                self.unit_seconds[asset] = seconds if known is None else 0.8 * known + 0.2 * seconds

    def _rerun_alone(self, units: list[int], kind: str, cause: object, reason: str) -> None:
        """Requeue each unit of a batch to run in a task of its own, its attempt not charged:
        which unit of the batch was to blame is unknown."""
        for unit in units:
            self.solo.add(unit)
            self.state.requeue(unit)
            self.event(unit, "unit_retry", attempt=int(self.state.attempts[unit]), message=f"{kind}: {cause}",
                       detail={"error": kind, "charged": False, "reason": f"{reason}; rerun alone"})  # fmt: skip

    def _timed_out(self, asset: str, units: list[int], error: TaskTimedOut) -> None:
        """A task ran past its budget and was cancelled. A batch is rerun one unit a task, its
        attempts not charged (the budget was the sum: which unit hung is unknown); a unit alone
        fails with a TimeoutError, retried only if its policy names TimeoutError."""
        if len(units) > 1:
            self._rerun_alone(units, "TimeoutError", error, "its task ran past its budget")
            return
        timeout = self.pipeline.timeout_of(asset)
        message = (
            f"asset {self._where(units[0])} did not finish within its timeout of {timeout:g}s; "
            "its task was cancelled and nothing it staged is committed"
        )
        info = ErrorInfo("user", "TimeoutError", message)
        retryable = self.pipeline[asset].retry.retries(TimeoutError(message))
        self.failure(units[0], info, retryable=retryable)

    def failure(self, unit: int, error: ErrorInfo, *, retryable: bool) -> None:
        asset, _ = self.plan.locate(unit)
        policy = self.pipeline[asset].retry
        attempt = int(self.state.attempts[unit])
        self.inputs.pop(unit, None)
        if retryable and attempt < policy.attempts and not self.cancelled:
            delay = policy.delay(attempt)
            self.state.retry(unit, delay)
            self.retry_logged = self.event(
                unit,
                "unit_retry",
                attempt=attempt,
                message=error.first_line(),
                detail={"delay": delay, "error": error.type},
            )
            return
        self.fail(unit, error)

    def fail(self, unit: int, error: ErrorInfo) -> None:
        if self.state.status[unit] in FINAL:
            return
        held = self.state.failed(unit, error)
        self.event(unit, "unit_failed", attempt=int(self.state.attempts[unit]), message=error.first_line(),
                    detail={"kind": error.kind, "type": error.type, "message": error.message, "traceback": error.traceback})  # fmt: skip
        cause = f"upstream {self._where(unit)} failed"
        for down in held:
            self.event(down, "unit_upstream_failed", message=cause)

    def check_events(self, unit: int | None, results: Iterable[CheckResult], **fields: Any) -> None:
        """One `check_result` event per check result (of a unit, or of a table when unit is None)."""
        for result in results:
            values = dict(
                message=result.summary(),
                rows=result.rows,
                seconds=result.seconds,
                detail=result.to_json(),
                **fields,
            )
            if unit is None:
                self.emit(Event(self.id, "check_result", **values))
            else:
                self.event(unit, "check_result", **values)

    def check_failed(
        self,
        unit: int,
        results: Iterable[CheckResult],
        *,
        quarantine: str | None = None,
        note: str = "",
    ) -> None:
        blocking = [r for r in results if r.blocking]
        error = ErrorInfo("check", "CheckFailed", "; ".join(r.summary() for r in blocking) + note)
        held = self.state.check_failed(unit, error)
        self.inputs.pop(unit, None)
        self.event(
            unit,
            "unit_check_failed",
            message=error.message,
            detail={"checks": [r.check for r in blocking], "quarantine": quarantine},
        )
        cause = f"blocked by a failed check on {self._where(unit)}"
        for down in held:
            self.event(down, "unit_blocked", message=cause)
