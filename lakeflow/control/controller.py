"""The controller: owns a lake's open tables, plans requests into runs, carries them out (see
`runner.Run`), answers progress queries, cancels and resumes runs, and after a restart resumes
what its predecessor left unfinished.

`Controller` is plain asyncio over an `Executor`; the Ray actor (named, detached, restarted
forever) that hosts one per lake is `actor.actor_class()`. Nothing blocks the event loop: table
I/O, planning and commits run in threads, so progress queries are answered while runs go on.

Over 400 lines on purpose: it is the one object the runs, the triggers, the actor and the
clients share (tables, locks, task slots, the event log, the fence), and its methods are the
controller's API; the parts with an idea of their own live apart (`runner`, `claims`,
`outcomes`, `group_commit`, `runs`, `run_result`, `options`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lakeflow.aio import wait_event, within
from lakeflow.control.options import ControllerOptions, new_run_id
from lakeflow.control.runner import Run
from lakeflow.control.runs import (
    RUNS_DIR,
    attempts_used,
    cancel_marker,
    dump_request,
    failed_partitions,
    load_request,
    load_stored,
    published_by,
    stored_pipeline,
    unfinished_runs,
)
from lakeflow.define.definition import NotImportable, ResumeError
from lakeflow.define.graph import Pipeline
from lakeflow.errors import LakeError, LakeflowError, Superseded
from lakeflow.execute.executors import Executor
from lakeflow.lake import Lake
from lakeflow.lake.events import Event, EventLog
from lakeflow.lake.fence import Fence
from lakeflow.lake.log import Commit, TableState
from lakeflow.plan.planner import Plan, Request, build_plan
from lakeflow.plan.snapshots import check_column, needed, open_table, read_snapshots
from lakeflow.triggers.engine import TriggerOptions, Triggers
from lakeflow.triggers.follow import DOWN_MARKER

UP_RECORD = (
    "_lakeflow/triggers/pipeline.json"  # where the pipeline whose triggers are up is defined
)
LEGACY_UP_BLOB = "_lakeflow/triggers/pipeline.pkl"  # an older lakeflow's pickle: never loaded

__all__ = ["Controller", "ControllerOptions"]


class Controller:
    """Runs requests against one lake."""

    def __init__(
        self, lake: Lake, executor: Executor, options: ControllerOptions | None = None
    ) -> None:
        self.lake = lake
        self.executor = executor
        self.options = options or ControllerOptions()
        self.events = EventLog(lake)
        self.fence = Fence(lake)
        self.is_superseded = False
        self.tables: dict[str, TableState] = {}
        self.runs: dict[str, Run] = {}
        self.in_flight = 0  # tasks in flight, all runs together
        self.listeners: list[Callable[[str, Commit], None]] = []  # told of every commit we make
        self._table_locks: dict[str, asyncio.Lock] = {}
        self._slots: tuple[float, int] = (float("-inf"), 1)
        self._background: set[asyncio.Task] = set()
        self._flushing: asyncio.Task | None = None
        self._started = False
        self.triggers: Triggers | None = None

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self, *, resume: bool | None = None, restarted: bool = False) -> None:
        """Begin the background work; resume unfinished runs if `resume` (default: the option).
        A `restarted` controller (Ray brought it back after a crash) also brings back the
        triggers that were up."""
        if self._started:
            return
        self._started = True
        try:
            await asyncio.to_thread(self.fence.claim)
        except LakeflowError as error:  # the lake is away: the first commit claims it
            self.events.emit(Event("", "controller_recovery_failed", message=str(error)))
        self.events.emit(Event("", "controller_started", detail={"epoch": self.fence.epoch}))
        self.spawn(self._flush_loop())
        self.spawn(self._cancel_loop())
        if resume if resume is not None else self.options.resume_unfinished:
            try:
                for run_id in await asyncio.to_thread(unfinished_runs, self.lake):
                    try:
                        await self.resume(run_id)
                    except NotImportable as error:  # nobody can ever resume it: it failed
                        self.events.emit(Event(run_id, "run_finished", message="failed",
                                               detail={"error": str(error)}))  # fmt: skip
                    except ResumeError as error:  # left unfinished, for a person to resume
                        self.events.emit(
                            Event(run_id, "controller_recovery_failed", message=str(error))
                        )
            except LakeflowError as error:  # the lake is away: serve new requests, which report it
                self.events.emit(Event("", "controller_recovery_failed", message=str(error)))
        if restarted:
            try:
                await self._bring_triggers_back()
            except Exception as error:
                self.events.emit(
                    Event("", "controller_recovery_failed", message=f"triggers: {error}")
                )

    async def assert_current(self) -> None:
        """Raise `Superseded` (and stop) if another controller has claimed the lake since."""
        if self.is_superseded:
            raise Superseded("this controller was superseded by another")
        try:
            await asyncio.to_thread(self.fence.check)
        except Superseded as error:
            self.superseded(error)
            raise

    def superseded(self, error: Superseded) -> None:
        """Another controller took the lake over: stop every run and the triggers at once,
        publishing nothing more; the unfinished runs are the new controller's to resume."""
        if self.is_superseded:
            return
        self.is_superseded = True
        self.events.emit(Event("", "controller_superseded", message=error.message,
                               detail={"epoch": self.fence.epoch}))  # fmt: skip
        current = asyncio.current_task()
        for task in list(self._background):
            if task is not current:
                task.cancel()
        if self.triggers is not None:
            self.triggers.halt()
            self.triggers = None
        for run in self.runs.values():
            run.finished.set()  # waiters learn of it through progress: status "superseded"
        self.spawn(asyncio.to_thread(self.events.flush))

    def spawn(self, coroutine: Any) -> asyncio.Task:
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
                began = time.monotonic()
                await asyncio.to_thread(self.events.flush)
                if self.events.compact_due():  # here, off the path of any run's start
                    self.spawn(asyncio.to_thread(self.events.compact))
                # an append costs more as the log grows: keep its share of the controller
                # ~10%, and the log at most 2 s behind
                spent = time.monotonic() - began
                delay = max(self.options.flush_interval, min(2.0, 10 * spent))
            except Exception:  # the lake is away: keep the events, try again less often
                delay = min(30.0, delay * 2)

    async def _cancel_loop(self) -> None:
        """Cancel requests arrive as marker files in the lake, from any process."""
        while True:
            await asyncio.sleep(self.options.cancel_poll)
            for run in [
                r for r in self.runs.values() if not r.finished.is_set() and not r.cancelled
            ]:
                try:
                    marked = await asyncio.to_thread(
                        self.lake.exists, cancel_marker(self.lake, run.id)
                    )
                except LakeflowError:
                    continue
                if marked:
                    self.cancel(run.id)

    async def close(self) -> None:
        """Stop the runs' loops and background work; write what events are buffered."""
        if self.triggers is not None:
            await self.triggers.stop()
            self.triggers = None
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.events.pending():
            try:
                await within(asyncio.to_thread(self.events.flush), 30)
            except Exception:
                pass

    # -- what runs share -------------------------------------------------------------------------
    def capacity(self) -> int:
        checked, slots = self._slots
        if time.monotonic() - checked > 10:
            slots = self.options.max_in_flight or self.executor.slots()
            self._slots = (time.monotonic(), slots)
        return slots

    def flush_soon(self) -> None:
        """Write the buffered events now (once at a time); the runs wake when it is done."""
        if self._flushing is None or self._flushing.done():
            self._flushing = self.spawn(self._flush_now())

    async def _flush_now(self) -> None:
        try:
            await asyncio.to_thread(self.events.flush)
        except Exception:  # the lake is away: what waits on the flush waits a little longer
            await asyncio.sleep(1.0)
        finally:
            self.wake_all()

    def wake_all(self) -> None:
        for run in self.runs.values():
            run.wake.set()

    def table_lock(self, asset: str) -> asyncio.Lock:
        return self._table_locks.setdefault(asset, asyncio.Lock())

    def committed(self, asset: str, commit: Commit) -> None:
        for listener in self.listeners:
            listener(asset, commit)

    def released(self, asset: str, version: int, passed: bool) -> None:
        """A commit of ours is final: its table checks passed (or there were none) or failed.
        The triggers hear of it at once, with no poll wait."""
        if self.triggers is not None:
            self.triggers.released(asset, version, passed)

    # -- triggers --------------------------------------------------------------------------------
    async def up(self, pipeline: Pipeline, options: TriggerOptions | None = None) -> dict[str, Any]:
        """Run `pipeline`'s triggers (commit subscriptions, schedules, file sensors) until `down`.
        The pipeline is kept in the lake, so a restarted controller brings them back."""
        await self.start()
        await asyncio.to_thread(self.lake.check_reachable)
        await self.assert_current()
        await asyncio.to_thread(self._remove, DOWN_MARKER)  # a stale `down` from before
        if self.triggers is not None:
            await self.triggers.stop()
        self.triggers = Triggers(self, pipeline, options)
        await self.triggers.start()
        blob = dump_request(pipeline, None, "up")
        await asyncio.to_thread(self.lake.write_bytes, f"{self.lake.url}/{UP_RECORD}", blob)
        await asyncio.to_thread(self._remove, LEGACY_UP_BLOB)
        return self.triggers.status()

    async def down(self) -> bool:
        """Stop the triggers; runs in flight carry on."""
        if self.triggers is not None:
            await self.triggers.stop()
            await asyncio.to_thread(self.events.flush)
        was_up = self.triggers is not None
        self.triggers = None
        await asyncio.to_thread(self._remove, UP_RECORD)
        await asyncio.to_thread(self._remove, LEGACY_UP_BLOB)
        await asyncio.to_thread(self._remove, DOWN_MARKER)
        return was_up

    def _remove(self, relative: str) -> None:
        url = f"{self.lake.url}/{relative}"
        if self.lake.exists(url):
            try:
                self.lake.filesystem().delete_file(self.lake.path(url))
            except FileNotFoundError:  # `lf.down` removed it meanwhile (service.down)
                pass

    async def _bring_triggers_back(self) -> None:
        """After a restart: the triggers that were up come back, from their cursors. Their
        pipeline is imported again from the module the lake names; when it cannot be (defined in
        a notebook, not importable here, changed since), a `controller_recovery_failed` event says
        why and the triggers stay down until `lakeflow up` starts them again."""
        url = f"{self.lake.url}/{UP_RECORD}"
        if self.triggers is not None:
            return
        exists = await asyncio.to_thread(self.lake.exists, url)
        legacy = await asyncio.to_thread(self.lake.exists, f"{self.lake.url}/{LEGACY_UP_BLOB}")
        if not exists and not legacy:
            return
        what = "the triggers that were up"
        data = await asyncio.to_thread(load_stored, self.lake, url, what=what)
        pipeline = await asyncio.to_thread(stored_pipeline, data, self.lake, what=what)
        self.triggers = Triggers(self, pipeline)
        await self.triggers.start()

    def trigger_status(self) -> dict[str, Any] | None:
        return self.triggers.status() if self.triggers is not None else None

    # -- tables and plans ------------------------------------------------------------------------
    async def table(self, pipeline: Pipeline, name: str) -> TableState:
        """The table of asset `name`, opened once and brought up to date on every call."""
        state = self.tables.get(name)
        if state is None:
            state = await asyncio.to_thread(open_table, self.lake, pipeline, name)
            self.tables[name] = state
        else:
            await asyncio.to_thread(state.refresh, self.lake)
        return check_column(state, pipeline, name)

    async def plan(
        self, pipeline: Pipeline, request: Request, done: dict[str, np.ndarray] | None = None
    ) -> Plan:
        selected = pipeline.select(list(request.select))
        names = needed(pipeline, selected)
        states = {name: await self.table(pipeline, name) for name in names}
        snapshots = await asyncio.to_thread(
            read_snapshots, self.lake, pipeline, names, states=states
        )
        failed = None
        if request.only == "failed":
            failed = await asyncio.to_thread(failed_partitions, self.lake, pipeline, selected)
        return await asyncio.to_thread(
            build_plan, pipeline, request, snapshots, done=done, failed=failed
        )

    # -- runs ----------------------------------------------------------------------------------
    async def submit(
        self,
        pipeline: Pipeline,
        request: Request,
        origin: str = "api",
        trigger: dict[str, Any] | None = None,
        *,
        skip_empty: bool = False,
    ) -> dict[str, Any]:
        """Plan and start a run; returns its summary. Planning errors raise here, before anything
        is recorded. `trigger` says what started it (kept with the run_requested event); with
        `skip_empty` a plan with nothing to do makes no run (run_id None)."""
        await self.start()
        await asyncio.to_thread(self.lake.check_reachable)
        await self.assert_current()
        plan = await self.plan(pipeline, request)
        if skip_empty and plan.size == 0:
            return {"run_id": None, "units": 0, "done": True}
        run_id = new_run_id()
        blob = dump_request(pipeline, request, origin)
        await asyncio.to_thread(
            self.lake.write_bytes, f"{self.lake.url}/{RUNS_DIR}/{run_id}.json", blob
        )
        self.events.emit(Event(run_id, "run_requested", message=origin, detail={
            "kind": request.kind, "select": list(request.select), "partitions": request.partitions,
            "force": request.force, "only": request.only, "order": request.order, "units": plan.size,
            "fresh": int(sum(len(v) for v in plan.fresh.values())), "trigger": trigger,
        }))  # fmt: skip
        await asyncio.to_thread(self.events.flush)
        return self._begin(run_id, pipeline, request, origin, plan).progress()

    def _begin(
        self,
        run_id: str,
        pipeline: Pipeline,
        request: Request,
        origin: str,
        plan: Plan,
        prior: dict[str, dict[int, int]] | None = None,
        attempts: dict[tuple[str, str], int] | None = None,
    ) -> Run:
        run = Run(self, run_id, pipeline, request, origin, plan, prior=prior, attempts=attempts)
        self.runs[run_id] = run
        self.spawn(run.drive())
        return run

    async def resume(self, run_id: str, accept_changed_code: bool = False) -> dict[str, Any]:
        """Carry on with a run that no controller is running: its stored request is planned again,
        leaving out what it already published. A run this controller is running is left as is.
        Its pipeline is imported again from its module; `ResumeError` (the run left as it was)
        if that fails or its definition changed, unless `accept_changed_code`."""
        await self.start()
        await self.assert_current()
        run = self.runs.get(run_id)
        if run is not None and not run.finished.is_set():
            return run.progress()
        if run is not None:  # ours, finished (cancelled): the pipeline object is at hand
            pipeline, request, origin = run.pipeline, run.request, run.origin
        else:  # nothing recorded on failure: it can still be resumed where its pipeline imports
            pipeline, request, origin = await asyncio.to_thread(
                load_request, self.lake, run_id, accept_changed_code=accept_changed_code
            )
        try:
            done = await self._published_by(pipeline, request, run_id)
            used = await asyncio.to_thread(attempts_used, self.lake, run_id)
            plan = await self.plan(
                pipeline, request, done={a: np.array(sorted(v), np.int64) for a, v in done.items()}
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
            await asyncio.to_thread(self.events.flush)
            raise LakeError(f"cannot resume run {run_id}: {error}") from error
        await asyncio.to_thread(self._clear_cancel, run_id)
        self.events.emit(
            Event(
                run_id,
                "run_resumed",
                detail={
                    "already_published": sum(len(v) for v in done.values()),
                    "units": plan.size,
                },
            )
        )
        return self._begin(
            run_id, pipeline, request, origin, plan, prior=done, attempts=used
        ).progress()

    def _clear_cancel(self, run_id: str) -> None:
        marker = cancel_marker(self.lake, run_id)
        if self.lake.exists(marker):
            self.lake.filesystem().delete_file(self.lake.path(marker))

    async def _published_by(
        self, pipeline: Pipeline, request: Request, run_id: str
    ) -> dict[str, dict[int, int]]:
        """Partitions (with their versions) the run already published, read from the tables' commit
        metadata; logs the `unit_published` events a dead controller did not flush."""
        tables = {n: await self.table(pipeline, n) for n in pipeline.select(list(request.select))}
        done, unlogged = await asyncio.to_thread(published_by, self.lake, pipeline, tables, run_id)
        for name, key, version in unlogged:
            kind = "unit_published" if tables[name].files.get(key) else "unit_deleted"
            self.events.emit(Event(run_id, kind, asset=name, partition=key,
                                   version=version, detail={"repaired": True}))  # fmt: skip
        return done

    async def wait(self, run_id: str, timeout: float | None = None) -> bool:
        run = self.runs.get(run_id)
        if run is None:
            return True
        return await wait_event(run.finished, timeout)

    def progress(self, run_id: str) -> dict[str, Any]:
        run = self.runs.get(run_id)
        return (
            run.progress() if run is not None else {"run_id": run_id, "known": False, "done": True}
        )

    def result(self, run_id: str) -> dict[str, Any] | None:
        run = self.runs.get(run_id)
        return run.result() if run is not None else None

    def cancel(self, run_id: str) -> bool:
        """Stop starting units of the run; those running finish and are published or fail."""
        run = self.runs.get(run_id)
        if run is None or run.finished.is_set():
            return False
        if not run.cancelled:
            run.cancelled = True
            self.events.emit(Event(run_id, "run_cancel_requested"))
        run.wake.set()
        return True
