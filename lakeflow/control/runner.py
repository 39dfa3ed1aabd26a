"""One run as it executes: its dispatch loop over the run state, the tasks it has in flight,
retries, check outcomes and the events that tell the story; its staged units are published by
its `GroupCommits`.

A `Run` shares with its controller the lake, the executor, the event log, the open tables (and
one commit lock per table) and the pool of task slots; it keeps to its own limit within that pool
(`concurrency`, `max_share`), so a backfill need not starve the work triggered beside it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextlib import aclosing
from typing import Any

import numpy as np

from lakeflow.aio import wait_event
from lakeflow.control.claims import Claims
from lakeflow.control.group_commit import (
    LONGEST_LINGER,
    RUN_LONGEST_LINGER,
    CommitOutcome,
    GroupCommits,
    Staged,
)
from lakeflow.control.host import RunHost
from lakeflow.control.outcomes import RunOutcomes
from lakeflow.control.run_result import plan_result
from lakeflow.define.graph import Pipeline
from lakeflow.errors import ErrorInfo
from lakeflow.execute.executors import TaskLost, TaskTimedOut
from lakeflow.execute.worker import UnitRecord, UnitSpec
from lakeflow.lake.events import Event
from lakeflow.plan.planner import Plan, Request
from lakeflow.plan.scheduler import FINAL, NOT_BUILT, RunState, UnitStatus, depths

__all__ = ["Run"]


class Run(Claims, RunOutcomes):
    """A planned request being carried out."""

    def __init__(
        self,
        host: RunHost,
        run_id: str,
        pipeline: Pipeline,
        request: Request,
        origin: str,
        plan: Plan,
        *,
        prior: dict[str, dict[int, int]] | None = None,
        attempts: dict[tuple[str, str], int] | None = None,
    ) -> None:
        self.host = host
        self.tables = host.tables
        self.emit = host.events.emit
        self.id = run_id
        self.pipeline = pipeline
        self.request = request
        self.origin = origin
        self.plan = plan
        self.state = RunState(plan, depth=depths(pipeline))
        self.handle = host.executor.prepare(run_id, pipeline)
        self.prior = prior or {}  # asset -> {partition index: version} published before a restart
        self.inputs: dict[int, dict[str, int]] = {}  # unit -> input versions it read
        self._keys: dict[int, str] = {}  # unit -> partition key, while under way
        self.running: dict[str, int] = {}  # asset -> units in flight
        self.tasks = 0  # tasks in flight
        self.completed: deque[
            tuple[str, list[int], list[UnitRecord] | None, str | TaskTimedOut | None]
        ] = deque()
        self.solo: set[int] = set()
        # units taken while another run of this controller builds the same partition: they wait
        # for it, then run or find it fresh (`_claim`); and each table's version at planning
        self.parked: set[int] = set()
        self.seen = {a: host.tables[a].version for a in plan.assets if a in host.tables}
        self.unit_seconds: dict[str, float] = {}  # asset -> recent seconds a unit
        self.cancelled = False
        self.wake = asyncio.Event()
        self.finished = asyncio.Event()
        options = host.options
        linger = (
            options.backfill_commit_linger if request.kind == "backfill" else options.commit_linger
        )
        self.commits = GroupCommits(
            run_id=run_id, pipeline=pipeline, handle=self.handle, lake=host.lake,
            tables=host.tables, table_lock=host.table_lock, executor=host.executor,
            fence=host.fence, emit=host.events.emit, committed=host.committed,
            released=host.released, superseded=host.superseded,
            linger=linger, max_units=options.max_commit_units, share=options.commit_share,
            longest=LONGEST_LINGER if request.kind == "backfill" else RUN_LONGEST_LINGER,
        )  # fmt: skip
        self.retry_logged = 0  # the newest unit_retry event: retries wait until it is written
        self._seed_attempts(attempts or {})

    def _seed_attempts(self, used: dict[tuple[str, str], int]) -> None:
        """A resumed run carries on counting each unit's attempts where its events left off."""
        for (asset, key), count in used.items():
            if asset not in self.plan.assets:
                continue
            parts = self.pipeline[asset].partitions
            index = int(parts.indices([key])[0]) if parts.is_partitioned else 0
            unit = self.plan.unit(asset, index) if index >= 0 else None
            if unit is not None:
                self.state.attempts[unit] = count

    def others(self) -> list[Run]:
        return [r for r in self.host.runs.values() if r is not self]

    # -- limits ----------------------------------------------------------------------------------
    def limit(self) -> int:
        """Tasks this run may keep in flight: its concurrency, its share of the cluster."""
        capacity = self.host.capacity()
        limit = capacity
        if self.request.max_share is not None:
            limit = max(1, math.floor(capacity * self.request.max_share))
        if self.request.concurrency is not None:
            limit = min(limit, self.request.concurrency)
        return limit

    @property
    def prior_count(self) -> int:
        return sum(len(v) for v in self.prior.values())

    # -- the loop --------------------------------------------------------------------------------
    async def drive(self) -> None:
        state = self.state
        self._fail_unrunnable()
        try:
            while not state.done:
                self.wake.clear()
                if self.host.events.written >= self.retry_logged:
                    state.release_backoffs()
                elif state.next_backoff() is not None:  # a retry is due once its event is written
                    self.host.flush_soon()
                self._drain()
                if self.cancelled:
                    gone = state.cancel(also=self.parked)
                    self.parked.clear()
                    if gone:
                        self.host.events.emit(
                            Event(self.id, "run_cancelling", detail={"cancelled_units": len(gone)})
                        )
                self._dispatch()
                for asset, batch in self.commits.ready(self.running):
                    self.host.spawn(self._commit(asset, batch))
                if state.done:
                    break
                await self._sleep()
        except Exception as error:  # a bug of ours: fail what is left rather than hang the run
            info = ErrorInfo.from_exception(error)
            for unit in np.flatnonzero(~np.isin(state.status, list(FINAL))).tolist():
                self.fail(unit, info)
        await self._finish()

    def _fail_unrunnable(self) -> None:
        """Units that cannot start: resources no node has, inputs that are not materialized.
        Also logs the units the plan left waiting (inputs outside the request)."""
        plan, state = self.plan, self.state
        for waiting in plan.waiting:
            up = self.pipeline[waiting.upstream]
            where = f"{waiting.upstream} {up.partitions.key(waiting.upstream_index)}"
            self.host.events.emit(Event(
                self.id, "unit_waiting", asset=waiting.asset,
                partition=self.pipeline[waiting.asset].partitions.key(waiting.index),
                message=f"input {where} is not materialized and lies outside the requested partitions",
            ))  # fmt: skip
        for j, asset in enumerate(plan.assets):
            reason = self.host.executor.infeasible(self.pipeline[asset].resources.ray_options())
            if reason is None:
                continue
            if self.host.options.autoscaling:  # Ray queues the tasks until such a node joins
                message = f"asset {asset} {reason} yet: waiting for the autoscaler to add one"
                self.host.events.emit(Event(self.id, "run_waiting", asset=asset, message=message))
                continue
            error = ErrorInfo("lakeflow", "ResourcesUnavailable", f"asset {asset} {reason}")
            for unit in range(int(plan.offsets[j]), int(plan.offsets[j + 1])):
                self.fail(unit, error)
        for j, asset in enumerate(plan.assets):  # a resumed run's units out of attempts
            lo, hi = int(plan.offsets[j]), int(plan.offsets[j + 1])
            policy = self.pipeline[asset].retry
            for unit in (lo + np.flatnonzero(state.attempts[lo:hi] >= policy.attempts)).tolist():
                used = int(state.attempts[unit])
                message = f"{used} attempts were spent before the controller restarted (the policy allows {policy.attempts})"
                self.fail(unit, ErrorInfo("lakeflow", "AttemptsExhausted", message))
        for missing in plan.missing:
            found = plan.unit(missing.asset, missing.index)
            if found is None or state.status[found] in FINAL:
                continue
            up = self.pipeline[missing.upstream]
            key = up.partitions.key(missing.upstream_index)
            if up.source:  # lakeflow cannot build it: its producer has not written it
                message = f"input {missing.upstream} partition {key} has no data (a source: its producer writes it)"
            else:
                message = f"input {missing.upstream} partition {key} is not materialized (select +{missing.asset} to build it)"
            self.fail(found, ErrorInfo("lakeflow", "MissingInput", message))

    async def _sleep(self) -> None:
        timeout = 5.0
        backoff = self.state.next_backoff()
        if backoff is not None and self.host.events.written >= self.retry_logged:
            timeout = min(timeout, max(0.0, backoff - time.time()))
        if self.commits.waiting():
            timeout = min(timeout, self.commits.linger)
        if self.parked:  # the other run's outcome wakes every run; this is a safety net
            timeout = min(timeout, 0.2)
        await wait_event(self.wake, timeout)

    # -- dispatch --------------------------------------------------------------------------------
    def _batch_size(self, free: int) -> int:
        """Units for the next task: enough to make a task of about `task_seconds` of the asset
        served next, never more than the ready units shared fairly among the free slots."""
        j = self.state.next_asset()
        seconds = self.unit_seconds.get(self.plan.assets[j]) if j is not None else None
        if seconds is None:
            return 1
        share = math.ceil(self.state.ready_count() / max(1, free))
        options = self.host.options
        target = max(1, int(options.task_seconds / max(seconds, 1e-4)))
        return max(1, min(share, target, options.max_task_units))

    def _dispatch(self) -> None:
        state, host = self.state, self.host
        unparked = [u for u in sorted(self.parked) if not self._held_elsewhere(u)]
        while unparked or state.ready_count():
            free = min(host.capacity() - host.in_flight, self.limit() - self.tasks)
            if free <= 0:
                break
            if unparked:
                size = self._batch_size(free)
                batch, unparked = unparked[:size], unparked[size:]
                self.parked.difference_update(batch)
            else:
                batch = state.take(self._batch_size(free))
                if not batch:
                    break
            batch = self._claim(self._stage_deletes(batch))
            if not batch:
                continue
            solo = [u for u in batch if u in self.solo]
            rest = [u for u in batch if u not in self.solo]
            for group in [[u] for u in solo] + ([rest] if rest else []):
                asset = self.plan.locate(group[0])[0]
                specs = [self._spec(unit) for unit in group]
                for unit, spec in zip(group, specs, strict=True):
                    versions = {i.name: i.version for i in spec.inputs}
                    self.inputs[unit] = {**versions, **self._file_stamp(asset, spec.key)}
                    self.event(unit, "unit_started", attempt=spec.attempt)
                self.running[asset] = self.running.get(asset, 0) + len(group)
                self.tasks += 1
                host.in_flight += 1
                host.spawn(self._task(asset, group, specs))

    def _stage_deletes(self, batch: list[int]) -> list[int]:
        """Stage the delete units of `batch` for their table's next commit (they need no task:
        their inputs were deleted upstream, see `gaps.vanished`); returns the other units."""
        rest = []
        for unit in batch:
            if not self.plan.is_delete(unit):
                rest.append(unit)
                continue
            asset, index = self.plan.locate(unit)
            self.inputs[unit] = {
                e.up: self.host.tables[e.up].version for e in self.pipeline.upstream(asset)
            }
            self.state.staged(unit, rows=0, size=0, seconds=0.0)
            record = UnitRecord(asset, index, self.key(unit), int(self.state.attempts[unit]))
            self.commits.stage(asset, Staged(unit, record, self.inputs[unit], delete=True))
        return rest

    async def _task(self, asset: str, units: list[int], specs: list[UnitSpec]) -> None:
        host = self.host
        try:
            records = await host.executor.run(
                host.lake, self.id, self.handle, self.pipeline, asset, specs
            )
            self.completed.append((asset, units, records, None))
        except TaskTimedOut as error:
            self.completed.append((asset, units, None, error))
        except TaskLost as error:
            self.completed.append((asset, units, None, str(error)))
        except Exception as error:
            self.completed.append((asset, units, None, f"{type(error).__name__}: {error}"))
        finally:
            self.tasks -= 1
            host.in_flight -= 1
            host.wake_all()

    async def _commit(self, asset: str, batch: list[Staged]) -> None:
        try:
            async with aclosing(self.commits.commit(asset, batch)) as outcomes:
                async for outcome in outcomes:  # the table's lock is held meanwhile
                    self._apply(outcome)
        finally:
            self.host.wake_all()  # runs waiting for these partitions (`_claim`) look again

    def _apply(self, outcome: CommitOutcome) -> None:
        """Apply what a step of a group commit did: events, state transitions, and so the
        release of the downstream units."""
        state, asset, version = self.state, outcome.asset, outcome.version
        for unit, error in outcome.misfits:
            self.fail(unit, error)
        for rejected in outcome.rejected:
            self.check_events(rejected.unit, rejected.results)
            self.check_failed(rejected.unit, rejected.results, quarantine=rejected.quarantine,
                              note=rejected.note)  # fmt: skip
        if outcome.published:
            assert version is not None
            state.published(list(outcome.published), version, verify=outcome.verify)
            for unit in outcome.published:
                self.inputs.pop(unit, None)
                if unit in outcome.deleted:
                    self.event(unit, "unit_deleted", version=version, attempt=int(state.attempts[unit]),
                               message="deleted upstream")  # fmt: skip
                else:
                    self.event(unit, "unit_published", version=version, attempt=int(state.attempts[unit]),
                               rows=int(state.rows[unit]), bytes=int(state.bytes[unit]), seconds=float(state.seconds[unit]))  # fmt: skip
                if not outcome.verify:
                    self.forget_key(unit)
        if outcome.table_results:
            self.check_events(None, outcome.table_results, asset=asset, version=version)
        if outcome.verified:
            state.verified(list(outcome.verified))
        for unit in outcome.held:
            self.check_failed(unit, outcome.table_results, note=outcome.note)
        if outcome.error is not None:
            for unit in outcome.failed:
                if state.status[unit] == UnitStatus.STAGED:
                    self.failure(unit, outcome.error, retryable=outcome.retryable)

    async def _finish(self) -> None:
        host = self.host
        counts = self.state.counts()
        outcome = (
            "cancelled" if self.cancelled else ("succeeded" if self.state.succeeded else "failed")
        )
        host.events.emit(
            Event(
                self.id,
                "run_finished",
                message=outcome,
                detail={"counts": counts, "prior": self.prior_count},
            )
        )
        try:
            await asyncio.to_thread(host.events.flush)
        except Exception:
            pass
        host.executor.forget(self.handle)
        self.finished.set()

    # -- reporting -------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        counts = self.state.counts()
        done = counts["published"] + self.prior_count
        unbuilt = {k: counts[k] for k in NOT_BUILT}  # each its own count: the causes differ
        total = self.plan.size + self.prior_count
        elapsed = max(1e-6, (self.state.finished or time.time()) - self.state.started)
        rate = (counts["published"] + sum(unbuilt.values())) / elapsed
        remaining = total - done - sum(unbuilt.values()) - counts["cancelled"]
        return {
            "run_id": self.id,
            "known": True,
            "kind": self.request.kind,
            "done": self.finished.is_set(),
            "status": ("cancelled" if self.cancelled else "running")
            if not self.finished.is_set()
            else self.outcome(),
            "total": total,
            "published": done,
            **unbuilt,
            "cancelled": counts["cancelled"],
            "running": counts["running"] + counts["staged"] + counts["verifying"],
            "counts": counts,
            "started": self.state.started,
            "rate": rate,
            "eta": remaining / rate if rate > 0 and remaining > 0 else 0.0,
        }

    def result(self) -> dict[str, Any]:
        """Each unit's outcome as an Arrow table, with the run's status and errors."""
        return plan_result(
            run_id=self.id, status=self.outcome(), plan=self.plan, state=self.state,
            pipeline=self.pipeline, prior=self.prior,
        )  # fmt: skip

    def outcome(self) -> str:
        if self.host.is_superseded and not self.state.done:
            return "superseded"  # another controller took the lake over and resumes it
        if self.cancelled:
            return "cancelled"
        if not self.state.done:
            return "running"
        return "succeeded" if self.state.succeeded else "failed"
