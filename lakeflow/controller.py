"""The controller: plans requests, keeps a bounded number of units in flight, retries them by
policy, group-commits staged units per table, records events, and resumes its runs after a restart.

`Controller` is plain asyncio over an `Executor`; `ControllerActor` is the thin Ray actor (named,
detached, restarted forever) that hosts one per lake. Nothing here blocks the event loop: table
I/O, planning and commits run in threads, so progress queries are answered while runs go on.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checks import CheckResult
from .errors import ErrorInfo, LakeError, LakeflowError, SchemaError
from .events import Event, EventLog
from .executors import Executor, TaskLost
from .graph import Pipeline
from .lake import Lake
from .lake.log import TableState
from .lake.publish import UnitOutput, publish, rollback, split_by_schema
from .planner import Plan, Request, build_plan, snapshot
from .runs import RUNS_DIR, dump_request, load_request, plan_result, unfinished_runs
from .scheduler import RunState, UnitStatus
from .worker import InputSpec, UnitRecord, UnitSpec

__all__ = ["Controller", "ControllerOptions"]

_WHOLE_TABLE_FILES = 512  # inputs of more files than this are scanned through deltalake


@dataclass(frozen=True)
class ControllerOptions:
    """Tuning knobs; the defaults suit both a laptop and a cluster.

    - max_in_flight: tasks in flight across all runs (default: two per cluster CPU)
    - commit_linger: seconds staged units of a table may wait for more to join their commit
    - max_commit_units: units in one commit at most
    - task_seconds: how long a task of several small units should take
    """

    max_in_flight: int | None = None
    commit_linger: float = 0.05
    max_commit_units: int = 5000
    max_task_units: int = 64
    task_seconds: float = 0.1
    flush_interval: float = 0.5


@dataclass
class Run:
    id: str
    pipeline: Pipeline
    request: Request
    origin: str
    plan: Plan
    state: RunState
    handle: Any
    prior: dict[str, dict[int, int]] = field(default_factory=dict)  # published before a restart
    inputs: dict[int, dict[str, int]] = field(default_factory=dict)
    staged: dict[str, list[tuple[int, UnitRecord]]] = field(default_factory=dict)
    staged_since: dict[str, float] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    committing: set[str] = field(default_factory=set)
    completed: deque = field(default_factory=deque)
    solo: set[int] = field(default_factory=set)
    unit_seconds: float | None = None
    cancelled: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


class Controller:
    """Runs requests against one lake."""

    def __init__(
        self, lake: Lake, executor: Executor, options: ControllerOptions | None = None
    ) -> None:
        self.lake = lake
        self.executor = executor
        self.options = options or ControllerOptions()
        self.events = EventLog(lake)
        self.tables: dict[str, TableState] = {}
        self.runs: dict[str, Run] = {}
        self._table_locks: dict[str, asyncio.Lock] = {}
        self._in_flight = 0
        self._slots: tuple[float, int] = (0.0, 1)
        self._background: set[asyncio.Task] = set()
        self._started = False

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin flushing events and resume every run a previous controller left unfinished."""
        if self._started:
            return
        self._started = True
        self._spawn(self._flush_loop())
        try:
            await self._recover()
        except LakeflowError as error:  # the lake is away: serve new requests, which report it
            self.events.emit(Event("", "controller_recovery_failed", message=str(error)))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _flush_loop(self) -> None:
        delay = self.options.flush_interval
        while True:
            await asyncio.sleep(delay)
            if not self.events.pending():
                continue
            try:
                await asyncio.to_thread(self.events.flush)
                delay = self.options.flush_interval
            except Exception:  # the lake is away: keep the events, try again less often
                delay = min(30.0, delay * 2)

    async def close(self) -> None:
        """Stop the runs' loops and background work; write what events are buffered."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.events.pending():
            try:
                await asyncio.wait_for(asyncio.to_thread(self.events.flush), 30)
            except Exception:
                pass

    # -- tables --------------------------------------------------------------------------------
    async def _table(self, pipeline: Pipeline, name: str) -> TableState:
        state = self.tables.get(name)
        column = pipeline[name].partitions.column
        if state is None:
            state = await asyncio.to_thread(
                TableState.load, self.lake, self.lake.table_url(name), column=column
            )
            if not state.exists:
                state.column = column
            self.tables[name] = state
        else:
            await asyncio.to_thread(state.refresh, self.lake)
        if state.exists and state.column != column:
            raise SchemaError(
                f"table {name} is partitioned by {state.column!r} but the asset by {column!r}",
                hint="keep the partitioning, or drop the table to rebuild it",
            )
        return state

    async def _plan(
        self, pipeline: Pipeline, request: Request, done: dict[str, np.ndarray] | None = None
    ) -> Plan:
        selected = pipeline.select(list(request.select))
        needed = dict.fromkeys(selected)
        for name in selected:
            needed.update(dict.fromkeys(e.up for e in pipeline.upstream(name)))
        snapshots = {}
        for name in needed:
            state = await self._table(pipeline, name)
            ups = [e.up for e in pipeline.upstream(name)]
            snapshots[name] = snapshot(state, pipeline[name].partitions, ups)
        return await asyncio.to_thread(build_plan, pipeline, request, snapshots, done=done)

    # -- runs ----------------------------------------------------------------------------------
    async def submit(
        self, pipeline: Pipeline, request: Request, origin: str = "api"
    ) -> dict[str, Any]:
        """Plan and start a run; returns its summary. Planning errors raise here, before anything
        is recorded."""
        await self.start()
        await asyncio.to_thread(self.lake.check_reachable)
        plan = await self._plan(pipeline, request)
        run_id = new_run_id()
        blob = dump_request(pipeline, request, origin)
        await asyncio.to_thread(
            self.lake.write_bytes, f"{self.lake.url}/{RUNS_DIR}/{run_id}.pkl", blob
        )
        self.events.emit(Event(run_id, "run_requested", message=origin, detail={
            "select": list(request.select), "partitions": request.partitions, "force": request.force,
            "order": request.order, "units": plan.size, "fresh": int(sum(len(v) for v in plan.fresh.values())),
        }))  # fmt: skip
        await asyncio.to_thread(self.events.flush)
        run = self._begin(run_id, pipeline, request, origin, plan)
        return self._summary(run)

    def _begin(self, run_id, pipeline, request, origin, plan, prior=None) -> Run:
        depth: dict[str, int] = {}
        for name in pipeline.assets:
            depth[name] = 1 + max(
                (depth[e.up] for e in pipeline.upstream(name) if e.up != name), default=-1
            )
        state = RunState(plan, depth=depth)
        run = Run(
            run_id,
            pipeline,
            request,
            origin,
            plan,
            state,
            self.executor.prepare(run_id, pipeline),
            prior=prior or {},
        )
        self.runs[run_id] = run
        self._spawn(self._drive(run))
        return run

    def _summary(self, run: Run) -> dict[str, Any]:
        return {
            "run_id": run.id,
            "units": run.plan.size,
            "per_asset": run.plan.counts(),
            "fresh": {a: len(v) for a, v in run.plan.fresh.items()},
            "prior": sum(len(v) for v in run.prior.values()),
        }

    async def wait(self, run_id: str, timeout: float | None = None) -> bool:
        run = self.runs.get(run_id)
        if run is None:
            return True
        try:
            await asyncio.wait_for(run.finished.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def progress(self, run_id: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        if run is None:
            return {"run_id": run_id, "known": False, "done": True}
        prior = sum(len(v) for v in run.prior.values())
        counts = run.state.counts()
        return {
            "run_id": run_id,
            "known": True,
            "done": run.finished.is_set(),
            "total": run.plan.size + prior,
            "published": counts["published"] + prior,
            "failed": sum(
                counts[k] for k in ("failed", "upstream_failed", "check_failed", "blocked")
            ),
            "running": counts["running"] + counts["staged"] + counts["verifying"],
            "counts": counts,
            "started": run.state.started,
        }

    def result(self, run_id: str) -> dict[str, Any] | None:
        run = self.runs.get(run_id)
        if run is None:
            return None
        return plan_result(run)

    def cancel(self, run_id: str) -> bool:
        run = self.runs.get(run_id)
        if run is None or run.finished.is_set():
            return False
        run.cancelled = True
        run.wake.set()
        return True

    # -- the dispatch loop ---------------------------------------------------------------------
    def _capacity(self) -> int:
        checked, slots = self._slots
        if time.monotonic() - checked > 10:
            slots = self.options.max_in_flight or self.executor.slots()
            self._slots = (time.monotonic(), slots)
        return slots

    def _wake_all(self) -> None:
        for run in self.runs.values():
            run.wake.set()

    async def _drive(self, run: Run) -> None:
        state = run.state
        for j, asset in enumerate(run.plan.assets):
            reason = self.executor.infeasible(run.pipeline[asset].resources.ray_options())
            if reason is not None:
                error = ErrorInfo("lakeflow", "ResourcesUnavailable", f"asset {asset} {reason}")
                for unit in range(int(run.plan.offsets[j]), int(run.plan.offsets[j + 1])):
                    if state.status[unit] not in (UnitStatus.FAILED, UnitStatus.UPSTREAM_FAILED):
                        self._fail(run, unit, error)
        for missing in run.plan.missing:
            found = run.plan.unit(missing.asset, missing.index)
            if found is None:
                continue
            unit = found
            if state.status[unit] in (
                UnitStatus.FAILED,
                UnitStatus.UPSTREAM_FAILED,
            ):
                continue
            key = run.pipeline[missing.upstream].partitions.key(missing.upstream_index)
            error = ErrorInfo(
                "lakeflow",
                "MissingInput",
                f"input {missing.upstream} partition {key} is not materialized (select +{missing.asset} to build it)",
            )
            self._fail(run, unit, error)
        try:
            while not state.done:
                run.wake.clear()
                state.release_backoffs()
                self._drain(run)
                if run.cancelled:
                    for unit in state.cancel():
                        self._event(run, unit, "unit_cancelled")
                self._dispatch(run)
                self._publish_ready(run)
                if state.done:
                    break
                await self._sleep(run)
        except Exception as error:  # a bug of ours: fail what is left rather than hang the run
            info = ErrorInfo.from_exception(error)
            for unit in np.flatnonzero(
                ~np.isin(
                    state.status,
                    [
                        s.value
                        for s in (
                            UnitStatus.PUBLISHED,
                            UnitStatus.FAILED,
                            UnitStatus.UPSTREAM_FAILED,
                            UnitStatus.CANCELLED,
                        )
                    ],
                )
            ).tolist():
                self._fail(run, unit, info)
        await self._finish(run)

    async def _sleep(self, run: Run) -> None:
        timeout = 5.0
        backoff = run.state.next_backoff()
        if backoff is not None:
            timeout = min(timeout, max(0.0, backoff - time.time()))
        if any(run.staged.values()):
            timeout = min(timeout, self.options.commit_linger)
        try:
            await asyncio.wait_for(run.wake.wait(), timeout)
        except TimeoutError:
            pass

    def _batch_size(self, run: Run, free: int) -> int:
        share = math.ceil(run.state.ready_count() / max(1, free))
        if run.unit_seconds is None:
            return 1
        target = max(1, int(self.options.task_seconds / max(run.unit_seconds, 1e-4)))
        return max(1, min(share, target, self.options.max_task_units))

    def _dispatch(self, run: Run) -> None:
        state = run.state
        while state.ready_count() and self._in_flight < self._capacity():
            batch = state.take(self._batch_size(run, self._capacity() - self._in_flight))
            if not batch:
                break
            solo = [u for u in batch if u in run.solo]
            groups = [[u] for u in solo] + (
                [rest] if (rest := [u for u in batch if u not in run.solo]) else []
            )
            for group in groups:
                asset = run.plan.locate(group[0])[0]
                specs = [self._spec(run, unit) for unit in group]
                for unit, spec in zip(group, specs, strict=True):
                    run.inputs[unit] = {i.name: i.version for i in spec.inputs}
                    self._event(run, unit, "unit_started", attempt=spec.attempt)
                run.running[asset] = run.running.get(asset, 0) + len(group)
                self._in_flight += 1
                self._spawn(self._task(run, asset, group, specs))

    def _spec(self, run: Run, unit: int) -> UnitSpec:
        plan, pipeline = run.plan, run.pipeline
        asset, index = plan.locate(unit)
        position = unit - int(plan.offsets[plan.asset_of(unit)])
        definition = pipeline[asset]
        inputs = []
        for edge in pipeline.upstream(asset):
            lo, hi = (int(x[position]) for x in plan.ranges[(asset, edge.up)])
            table = self.tables[edge.up]
            up_parts = pipeline[edge.up].partitions
            keys = up_parts.keys(np.arange(lo, hi)) if hi > lo else []
            files = table.file_list(keys)
            whole = len(files) > _WHOLE_TABLE_FILES
            inputs.append(InputSpec(
                name=edge.up, table_url=table.url, column=table.column, version=table.version,
                files=() if whole else tuple((k, p) for k, p, _ in files),
                keys=(None if hi - lo == len(up_parts) else tuple(keys)) if whole else None,
                schema=table.schema, whole_table=whole,
            ))  # fmt: skip
        table = self.tables[asset]
        return UnitSpec(
            asset,
            index,
            definition.partitions.key(index),
            int(run.state.attempts[unit]),
            tuple(inputs),
            table.schema,
            definition.partitions.partition(index),
        )

    async def _task(self, run: Run, asset: str, units: list[int], specs: list[UnitSpec]) -> None:
        try:
            records = await self.executor.run(
                self.lake, run.id, run.handle, run.pipeline, asset, specs
            )
            run.completed.append((asset, units, records, None))
        except TaskLost as error:
            run.completed.append((asset, units, None, str(error)))
        except Exception as error:
            run.completed.append((asset, units, None, f"{type(error).__name__}: {error}"))
        finally:
            self._in_flight -= 1
            self._wake_all()

    def _drain(self, run: Run) -> None:
        state = run.state
        while run.completed:
            asset, units, records, lost = run.completed.popleft()
            run.running[asset] -= len(units)
            if records is None:
                if len(units) > 1:  # find the unit that kills its worker by running each alone
                    for unit in units:
                        run.solo.add(unit)
                        state.requeue(unit)
                        self._event(run, unit, "unit_retry", attempt=int(state.attempts[unit]), message=f"WorkerLost: {lost}",
                                    detail={"error": "WorkerLost", "charged": False, "reason": "its task's worker died; rerun alone"})  # fmt: skip
                    continue
                self._failure(
                    run,
                    units[0],
                    ErrorInfo("crash", "WorkerLost", lost or "the task died"),
                    retryable=True,
                )
                continue
            for unit, record in zip(units, records, strict=True):
                self._check_events(run, unit, record.checks)
                if record.ok and record.quarantine:
                    state.staged(unit, rows=record.rows, size=record.bytes, seconds=record.seconds)
                    self._check_failed(run, unit, record.checks, quarantine=record.quarantine)
                elif record.ok:
                    state.staged(unit, rows=record.rows, size=record.bytes, seconds=record.seconds)
                    run.staged.setdefault(asset, []).append((unit, record))
                    run.staged_since.setdefault(asset, time.monotonic())
                    seconds = max(record.seconds, 1e-5)
                    run.unit_seconds = (
                        seconds
                        if run.unit_seconds is None
                        else 0.8 * run.unit_seconds + 0.2 * seconds
                    )
                else:
                    assert record.error is not None
                    self._failure(run, unit, record.error, retryable=record.retryable)

    def _failure(self, run: Run, unit: int, error: ErrorInfo, *, retryable: bool) -> None:
        state = run.state
        asset, _ = run.plan.locate(unit)
        policy = run.pipeline[asset].retry
        attempt = int(state.attempts[unit])
        run.inputs.pop(unit, None)
        if retryable and attempt < policy.attempts:
            delay = policy.delay(attempt)
            state.retry(unit, delay)
            self._event(
                run,
                unit,
                "unit_retry",
                attempt=attempt,
                message=error.first_line(),
                detail={"delay": delay, "error": error.type},
            )
            return
        self._fail(run, unit, error)

    def _fail(self, run: Run, unit: int, error: ErrorInfo) -> None:
        held = run.state.failed(unit, error)
        self._event(run, unit, "unit_failed", attempt=int(run.state.attempts[unit]), message=error.first_line(),
                    detail={"kind": error.kind, "type": error.type, "message": error.message, "traceback": error.traceback})  # fmt: skip
        if held:
            asset, index = run.plan.locate(unit)
            cause = (
                f"upstream {asset} {run.pipeline[asset].partitions.key(index)}".rstrip() + " failed"
            )
            for down in held:
                self._event(run, down, "unit_upstream_failed", message=cause)

    def _check_events(
        self, run: Run, unit: int | None, results: Iterable[CheckResult], **fields: Any
    ) -> None:
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
                self.events.emit(Event(run.id, "check_result", **values))
            else:
                self._event(run, unit, "check_result", **values)

    def _check_failed(
        self,
        run: Run,
        unit: int,
        results: Iterable[CheckResult],
        *,
        quarantine: str | None = None,
        note: str = "",
    ) -> None:
        blocking = [r for r in results if r.blocking]
        message = "; ".join(r.summary() for r in blocking) + note
        error = ErrorInfo("check", "CheckFailed", message)
        held = run.state.check_failed(unit, error)
        run.inputs.pop(unit, None)
        self._event(run, unit, "unit_check_failed", message=error.message,
                    detail={"checks": [r.check for r in blocking], "quarantine": quarantine})  # fmt: skip
        if held:
            asset, index = run.plan.locate(unit)
            cause = f"blocked by a failed check on {asset} {run.pipeline[asset].partitions.key(index)}".rstrip()
            for down in held:
                self._event(run, down, "unit_blocked", message=cause)

    def _event(self, run: Run, unit: int, kind: str, **fields: Any) -> None:
        asset, index = run.plan.locate(unit)
        self.events.emit(
            Event(
                run.id,
                kind,
                asset=asset,
                partition=run.pipeline[asset].partitions.key(index),
                **fields,
            )
        )

    # -- publishing ----------------------------------------------------------------------------
    def _publish_ready(self, run: Run) -> None:
        now = time.monotonic()
        for asset, items in run.staged.items():
            if not items or asset in run.committing:
                continue
            lingering = now - run.staged_since.get(asset, now) < self.options.commit_linger
            if (
                run.running.get(asset, 0)
                and lingering
                and len(items) < self.options.max_commit_units
            ):
                continue
            batch = items[: self.options.max_commit_units]
            del items[: len(batch)]
            run.staged_since.pop(asset, None)
            if items:
                run.staged_since[asset] = now
            run.committing.add(asset)
            self._spawn(self._commit(run, asset, batch))

    async def _commit(self, run: Run, asset: str, batch: list[tuple[int, UnitRecord]]) -> None:
        definition = run.pipeline[asset]
        lock = self._table_locks.setdefault(asset, asyncio.Lock())
        units = [u for u, _ in batch]
        try:
            async with lock:
                table = self.tables[asset]
                outputs = [
                    UnitOutput(r.key, r.files, run.inputs.get(u, {}), r.schema) for u, r in batch
                ]
                fits, misfits = split_by_schema(table, outputs)
                by_key = {r.key: u for u, r in batch}
                for output, error in misfits:
                    self._fail(run, by_key[output.key], ErrorInfo.from_exception(error))
                if fits:
                    commit = await asyncio.to_thread(
                        publish, self.lake, table, asset=asset, column=definition.partitions.column,
                        run_id=run.id, code_version=definition.code_version, units=fits,
                    )  # fmt: skip
                    published = [by_key[o.key] for o in fits]
                    verify = bool(definition.table_checks)
                    run.state.published(published, commit.version, verify=verify)
                    for unit in published:
                        run.inputs.pop(unit, None)
                        self._event(run, unit, "unit_published", version=commit.version, attempt=int(run.state.attempts[unit]),
                                    rows=int(run.state.rows[unit]), bytes=int(run.state.bytes[unit]), seconds=float(run.state.seconds[unit]))  # fmt: skip
                    if (
                        verify
                    ):  # still under the table's lock: nothing commits between publish and audit
                        await self._audit_table(run, asset, table, commit, published)
        except LakeflowError as error:
            info = ErrorInfo.from_exception(error)
            for unit in units:
                if run.state.status[unit] == UnitStatus.STAGED:
                    self._failure(run, unit, info, retryable=isinstance(error, LakeError))
        except Exception as error:
            info = ErrorInfo.from_exception(error)
            for unit in units:
                if run.state.status[unit] == UnitStatus.STAGED:
                    self._failure(run, unit, info, retryable=True)
        finally:
            run.committing.discard(asset)
            run.wake.set()

    async def _audit_table(
        self, run: Run, asset: str, table: TableState, commit: Any, units: list[int]
    ) -> None:
        """Table checks on the version just published; a blocking failure holds the consumers of
        every unit of the commit, and with on_fail="rollback" restores the previous version."""
        definition = run.pipeline[asset]
        try:
            results = await self.executor.audit_table(
                self.lake, run.handle, run.pipeline, asset, commit.version
            )
        except Exception as error:
            message = f"table checks could not run: {type(error).__name__}: {error}"
            results = [
                CheckResult("table checks", "error", "error", message=message, scope="table")
            ]
        self._check_events(run, None, results, asset=asset, version=commit.version)
        if not any(r.blocking for r in results):
            run.state.verified(units)
            return
        note = f" (published at version {commit.version}; consumers held)"
        if definition.on_fail == "rollback":
            try:
                undo = await asyncio.to_thread(rollback, self.lake, table, commit, run_id=run.id)
                note = f" (version {commit.version} rolled back by version {undo.version})"
                self.events.emit(
                    Event(
                        run.id,
                        "table_rolled_back",
                        asset=asset,
                        version=undo.version,
                        message=f"undid version {commit.version}",
                    )
                )
            except LakeflowError as error:
                note = f" (rollback failed: {error.message}; consumers held)"
        for unit in units:
            self._check_failed(run, unit, results, note=note)

    async def _finish(self, run: Run) -> None:
        counts = run.state.counts()
        outcome = (
            "cancelled" if run.cancelled else ("succeeded" if run.state.succeeded else "failed")
        )
        self.events.emit(
            Event(
                run.id,
                "run_finished",
                message=outcome,
                detail={"counts": counts, "prior": sum(len(v) for v in run.prior.values())},
            )
        )
        try:
            await asyncio.to_thread(self.events.flush)
        except Exception:
            pass
        self.executor.forget(run.handle)
        run.finished.set()

    # -- recovery ------------------------------------------------------------------------------
    async def _recover(self) -> None:
        """Resume the runs that were requested but never finished (a controller died mid-run)."""
        pending = await asyncio.to_thread(unfinished_runs, self.lake)
        for run_id in pending:
            if run_id in self.runs:
                continue
            try:
                pipeline, request, origin = await asyncio.to_thread(load_request, self.lake, run_id)
                done = await self._published_by(pipeline, request, run_id)
                plan = await self._plan(
                    pipeline,
                    request,
                    done={a: np.array(sorted(v), np.int64) for a, v in done.items()},
                )
            except Exception as error:
                self.events.emit(
                    Event(
                        run_id,
                        "run_finished",
                        message="failed",
                        detail={"error": f"cannot resume: {error}"},
                    )
                )
                continue
            self.events.emit(
                Event(
                    run_id,
                    "run_resumed",
                    detail={"already_published": sum(len(v) for v in done.values())},
                )
            )
            self._begin(run_id, pipeline, request, origin, plan, prior=done)

    async def _published_by(
        self, pipeline: Pipeline, request: Request, run_id: str
    ) -> dict[str, dict[int, int]]:
        """Partitions (with their versions) the run already published, read from the tables'
        commit metadata; logs the `unit_published` events the dead controller did not flush."""
        from .events import read_events

        logged = await asyncio.to_thread(
            read_events, self.lake, run_id=run_id, kinds=["unit_published"]
        )
        seen = set(zip(logged["asset"].to_list(), logged["partition"].to_list(), strict=True))
        done: dict[str, dict[int, int]] = {}
        for name in pipeline.select(list(request.select)):
            table = await self._table(pipeline, name)
            parts = pipeline[name].partitions
            with table.lock:
                mine = [
                    (k, info.version)
                    for k, info in table.published.items()
                    if info.run_id == run_id
                ]
            for key, version in mine:
                index = parts.indices([key])[0] if parts.is_partitioned else 0
                if index < 0:
                    continue
                done.setdefault(name, {})[int(index)] = version
                if (name, key) not in seen:
                    self.events.emit(
                        Event(
                            run_id,
                            "unit_published",
                            asset=name,
                            partition=key,
                            version=version,
                            detail={"repaired": True},
                        )
                    )
        return done


def actor_class() -> Any:
    """The Ray actor class hosting a `Controller` (built lazily so importing lakeflow needs no Ray)."""
    global _ACTOR
    if _ACTOR is not None:
        return _ACTOR
    import ray

    from .executors import RayExecutor

    @ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
    class ControllerActor:
        """One per lake: named, detached, restarted forever. Each method first waits for the
        restart recovery to finish, so no caller ever sees a half-recovered controller."""

        def __init__(
            self, lake_url: str, storage_options: dict[str, str], options: ControllerOptions
        ) -> None:
            lake = Lake(lake_url, storage_options)
            self.controller = Controller(lake, RayExecutor(options.max_in_flight), options)
            self._ready = asyncio.get_running_loop().create_task(self.controller.start())

        async def submit(self, pipeline: Pipeline, request: Request, origin: str) -> dict[str, Any]:
            await self._ready
            return await self.controller.submit(pipeline, request, origin=origin)

        async def progress(self, run_id: str) -> dict[str, Any]:
            await self._ready
            return self.controller.progress(run_id)

        async def wait(self, run_id: str, timeout: float | None) -> bool:
            await self._ready
            return await self.controller.wait(run_id, timeout)

        async def result(self, run_id: str) -> dict[str, Any] | None:
            await self._ready
            return self.controller.result(run_id)

        async def cancel(self, run_id: str) -> bool:
            await self._ready
            return self.controller.cancel(run_id)

        async def ping(self) -> dict[str, Any]:
            import os

            await self._ready
            return {
                "pid": os.getpid(),
                "runs": list(self.controller.runs),
                "lake": self.controller.lake.url,
            }

    _ACTOR = ControllerActor
    return _ACTOR


_ACTOR: Any = None
