"""The trigger engine: runs a pipeline's triggers (see `define.automation` for the declarations) inside
the controller while `lakeflow up` is on. It follows the watched tables' logs, fires schedules
(catching up missed ticks) and lists file sensors' URLs; each turn saves what it must not forget
(`TriggerState`) before it asks the controller for the consumer partitions to run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from lakeflow.aio import wait_event
from lakeflow.define.automation import OnPublish, Schedule
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions
from lakeflow.errors import LakeflowError, Superseded
from lakeflow.lake.events import Event, read_events
from lakeflow.lake.log import GAP_OPERATION, Commit
from lakeflow.lake.registry import write_atomic
from lakeflow.plan.planner import Request
from lakeflow.triggers.follow import (
    DOWN_MARKER,
    STATE_URL,
    TableFollower,
    TriggerState,
    as_publish,
    consumer_partitions,
    is_publish,
)
from lakeflow.triggers.host import TriggerHost, TriggerOptions
from lakeflow.triggers.timed import TimedTriggers, iso

__all__ = ["TriggerHost", "TriggerOptions", "Triggers"]


class Triggers(TimedTriggers):
    """Runs a pipeline's triggers inside a controller."""

    def __init__(
        self, controller: TriggerHost, pipeline: Pipeline, options: TriggerOptions | None = None
    ) -> None:
        self.controller = controller
        self.lake = controller.lake
        self.pipeline = pipeline
        self.options = options or TriggerOptions()
        self.state = TriggerState()
        self.followers: dict[str, TableFollower] = {}
        self.consumers: dict[str, list[Any]] = {}  # table -> edges into automated assets
        self.callbacks: dict[str, list[OnPublish]] = {}
        self.schedules = [t for t in pipeline.triggers if isinstance(t, Schedule)]
        self.sensors = {
            n: a.partitions
            for n, a in pipeline.assets.items()
            if isinstance(a.partitions, FilePartitions) and not a.source
        }
        self.aside: dict[str, set[str]] = {}  # file sensor -> keys set aside (their run failed)
        self.audits: dict[tuple[str, int], bool] = {}  # (asset, version) -> table checks passed
        self.quiet_since: dict[str, float] = {}  # consumer -> when its last change arrived
        # consumer -> key -> how many commits touched it: a request clears only the keys that
        # no commit touched while it was being planned (the await in `_fire_ready`)
        self.touches: dict[str, dict[str, int]] = {}
        self.retry_at: dict[str, float] = {}  # consumer -> when to ask again after a refusal
        self.fired: dict[str, int] = {}  # what has been requested, by kind (for status)
        self.recent: list[tuple[str, str]] = []  # (run id, origin) of the latest triggered runs
        self.wake = asyncio.Event()  # our own commit, or a callback delivered: look now
        self.fire = asyncio.Event()  # new pending keys: the fire loop looks now
        self._starting: set[str] = set()  # assets whose start-up request is being made
        self._save_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        for name, item in pipeline.assets.items():
            policy = item.automation
            if policy is None:
                continue
            for edge in pipeline.upstream(name):
                if edge.up == name or (policy.inputs is not None and edge.up not in policy.inputs):
                    continue
                self.consumers.setdefault(edge.up, []).append(edge)
        for trigger in pipeline.triggers:
            if isinstance(trigger, OnPublish):
                self.callbacks.setdefault(trigger.asset, []).append(trigger)

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.state = await asyncio.to_thread(TriggerState.load, self.lake)
        for table in sorted(set(self.consumers) | set(self.callbacks)):
            item = self.pipeline[table]
            url = item.table_url(self.lake)
            cursor = self.state.cursors.get(table)
            if cursor is None:  # first time: history is not news (on_start builds what it lacks)
                cursor = await asyncio.to_thread(TableFollower.current_version, self.lake, url)
                self.state.cursors[table] = cursor
            self.followers[table] = TableFollower(self.lake, url, item.partitions.column, cursor)
        # the first cursor is when `up` was asked, before Ray started: ticks meanwhile fire
        now = self.options.clock()
        since = now if self.options.invoked is None else min(now, self.options.invoked)
        for item in self.schedules:
            last = self.state.ticks.get(item.name)
            if last is None:
                self.state.ticks[item.name] = since
            elif item.catch_up == "none" and last < since:
                missed = await asyncio.to_thread(item.ticks, last, since)
                if missed:
                    self._skipped(item, len(missed), missed[-1])
                self.state.ticks[item.name] = since
        await self._save()
        self._emit("triggers_started", detail={
            "tables": sorted(self.followers), "schedules": [s.name for s in self.schedules],
            "sensors": sorted(self.sensors),
        })  # fmt: skip
        loop = asyncio.get_running_loop()
        starting = [
            n for n, a in self.pipeline.assets.items()
            if a.automation is not None and a.automation.on_start != "none"
        ]  # fmt: skip
        self._starting.update(starting)
        self._tasks = [loop.create_task(self._watch_loop()), loop.create_task(self._fire_loop())]
        if starting:
            self._tasks.append(loop.create_task(self._on_start(starting)))
        if self.schedules:
            self._tasks.append(loop.create_task(self._schedule_loop()))
        for name in self.sensors:
            self._tasks.append(loop.create_task(self._sensor_loop(name)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._emit("triggers_stopped")

    def status(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline.name,
            "cursors": dict(self.state.cursors),
            "pending": {c: sorted(k) for c, k in self.state.pending.items() if k},
            "schedules": {n: iso(t) for n, t in self.state.ticks.items()},
            "sensors": {n: len(p) for n, p in self.sensors.items()},
            "fired": dict(self.fired),
            "recent": list(self.recent),
        }

    def released(self, asset: str, version: int, passed: bool) -> None:
        """A commit of ours is final: its table checks passed (or it had none), or they failed."""
        if asset in self.pipeline.assets and self.pipeline[asset].table_checks:
            self.audits[(asset, version)] = passed
        self.wake.set()

    def halt(self) -> None:
        """Stop at once, saving nothing more (this controller was superseded)."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    async def _save(self) -> None:
        """Write the state as it is now; writes never overtake each other. A superseded
        controller writes nothing: the new one's cursors are the truth."""
        async with self._save_lock:
            blob = self.state.dumps()  # on the loop's thread: nothing changes it meanwhile
            fence = self.controller.fence
            url = f"{self.lake.url}/{STATE_URL}"

            def fenced_write() -> None:
                fence.check()
                write_atomic(self.lake, url, blob)

            try:
                await asyncio.to_thread(fenced_write)
            except Superseded as error:
                self.controller.superseded(error)
                raise

    def _emit(self, kind: str, **fields: Any) -> None:
        self.controller.events.emit(Event("", kind, **fields))

    # -- commits ---------------------------------------------------------------------------------
    async def _watch_loop(self) -> None:
        checked = time.monotonic()
        while True:
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if await asyncio.to_thread(self.lake.exists, f"{self.lake.url}/{DOWN_MARKER}"):
                    self.controller.spawn(self.controller.down())
                    return
            try:
                changed = await self._handle_new_commits()
                if changed:
                    await self._save()
                    self.fire.set()
                    await self._deliver(changed)
            except LakeflowError as error:  # the lake is away: the cursors wait with it
                self._emit("trigger_error", message=str(error))
                await asyncio.sleep(min(5.0, self.options.poll * 20))
            except Exception as error:  # a table the follower cannot read: say so, keep watching
                self._emit("trigger_error", message=f"{type(error).__name__}: {error}")
                await asyncio.sleep(min(5.0, self.options.poll * 20))
            await wait_event(self.wake, self.options.poll)
            self.wake.clear()

    def _fetch(self) -> dict[str, list[Commit]]:
        """Every watched table's commits after its cursor (I/O only, on a worker thread)."""
        return {table: follower.poll() for table, follower in self.followers.items()}

    async def _handle_new_commits(self) -> list[tuple[str, Commit, bool]]:
        """Move the cursors over the new commits and add the consumer partitions they touched to
        the pending ones, in memory (the caller saves both in one write). Returns
        (table, commit, held) for each commit handled; one that is no publish (`is_publish`)
        only moves its cursor."""
        out: list[tuple[str, Commit, bool]] = []
        for table, commits in (await asyncio.to_thread(self._fetch)).items():
            follower = self.followers[table]
            for commit in commits:
                if not is_publish(commit):  # an optimize: moves the cursor, nothing else
                    follower.cursor = self.state.cursors[table] = commit.version
                    continue
                if commit.operation == GAP_OPERATION:
                    commit = await self._without_held(table, commit, follower)
                held = await self._held(table, commit)
                if held is None:  # our commit whose table checks are still running
                    break
                follower.cursor = commit.version
                self.state.cursors[table] = commit.version
                out.append((table, commit, held))
                if held:
                    self._emit("trigger_held", asset=table, version=commit.version,
                               message="a table check failed on this version; consumers wait")  # fmt: skip
                    continue
                self._changed(table, commit)
        return out

    async def _held(self, table: str, commit: Commit) -> bool | None:
        """Whether consumers must not see this commit; None: not known yet."""
        meta = commit.metadata
        item = self.pipeline[table]
        if not meta or item.source or not item.table_checks:
            return False
        known = self.audits.pop((table, commit.version), None)
        if known is not None:
            return not known
        run = self.controller.runs.get(meta.get("run", ""))
        if run is not None and not run.finished.is_set():
            return None  # its run is auditing it now and will tell us
        failed = await asyncio.to_thread(
            read_events, self.lake, kinds=["unit_check_failed"], asset=table
        )
        return bool(len(failed.filter(failed["version"] == commit.version)))

    async def _without_held(self, table: str, gap: Commit, follower: TableFollower) -> Commit:
        """A gap commit (commits cleaned up before they were read) less the partitions whose
        data a version with a failed table check published: those stay held, as they were
        when their commit was read in time."""
        published = follower.gaps.pop(gap.version, {})
        if not published or not self.pipeline[table].table_checks:
            return gap
        failed = await asyncio.to_thread(
            read_events, self.lake, kinds=["unit_check_failed"], asset=table
        )
        bad = set(failed["version"].drop_nulls().to_list())
        held = {key for key in gap.touched if published.get(key) in bad}
        if not held:
            return gap
        self._emit("trigger_held", asset=table, version=gap.version, detail={"partitions": sorted(held)},
                   message="commits were cleaned up before they were read; these partitions hold "
                           "data a failed table check published: consumers wait")  # fmt: skip
        return dataclasses.replace(
            gap,
            added={k: v for k, v in gap.added.items() if k not in held},
            removed={k: v for k, v in gap.removed.items() if k not in held},
        )

    def _changed(self, table: str, commit: Commit) -> None:
        now = time.monotonic()
        for edge in self.consumers.get(table, ()):
            down = self.pipeline[edge.down]
            keys = consumer_partitions(
                down.partitions, self.pipeline[table].partitions, edge.mapping, commit.touched
            )
            if not keys:
                continue
            pending = self.state.pending.setdefault(edge.down, {})
            touches = self.touches.setdefault(edge.down, {})
            for key in keys:
                ups = pending.setdefault(key, [])
                if table not in ups:
                    ups.append(table)
                touches[key] = touches.get(key, 0) + 1
            span = self.state.causes.setdefault(edge.down, {}).setdefault(
                table, [commit.version, commit.version]
            )
            span[0], span[1] = min(span[0], commit.version), max(span[1], commit.version)
            self.quiet_since[edge.down] = now

    async def _deliver(self, changes: list[tuple[str, Commit, bool]]) -> None:
        for table, commit, held in changes:
            if held:
                continue
            for subscriber in self.callbacks.get(table, ()):
                try:
                    await asyncio.to_thread(subscriber.callback, as_publish(table, commit))
                except Exception as error:
                    self._emit("subscriber_failed", asset=table, version=commit.version,
                               message=f"{type(error).__name__}: {error}")  # fmt: skip
        self.wake.set()

    async def _fire_loop(self) -> None:
        while True:
            self.fire.clear()
            try:
                await self._fire_ready()
            except LakeflowError as error:
                self._emit("trigger_error", message=str(error))
            # new pending keys wake it at once; debounces and retries need the timeout
            await wait_event(self.fire, self.options.poll / 2)

    def _busy(self, asset: str) -> bool:
        """A run in this controller will build `asset` (or its start-up request is being made):
        its triggered partitions wait for it, then find what it built fresh."""
        return asset in self._starting or self._building(asset)

    def _building(self, asset: str) -> bool:
        return any(
            not run.finished.is_set() and asset in run.plan.assets
            for run in self.controller.runs.values()
        )

    async def _on_start(self, assets: list[str]) -> None:
        """Once per start, in topological order: request each automated asset's missing or stale
        partitions whose inputs are there (the plan leaves fresh ones out, so after a restart
        this builds nothing twice). Partitions whose inputs are not there yet wait for the
        commits that bring them."""
        for name in assets:
            try:
                # a run resumed after a restart may be building it or its inputs: plan after it
                while self._building(name) or any(
                    self._busy(e.up) for e in self.pipeline.upstream(name) if e.up != name
                ):
                    await asyncio.sleep(self.options.poll)
                plan = await self.controller.plan(self.pipeline, Request(select=(name,)))
                parts = self.pipeline[name].partitions
                ready: list[int] = []
                if plan.size:  # the plan holds `name` alone: its units are 0 .. size - 1
                    keep = np.ones(plan.size, bool)
                    if plan.unready is not None:
                        keep[plan.unready] = False
                    ready = plan.indices[0][keep].tolist()
                if ready:
                    spec = tuple(parts.key(i) for i in ready) if parts.is_partitioned else None
                    trigger = {"kind": "start", "on_start": "missing_or_stale", "units": len(ready)}
                    while not await self._request(
                        name, spec, "start:missing_or_stale", trigger, "start"
                    ):  # refused (the lake is away): ask again
                        await asyncio.sleep(min(5.0, self.options.poll * 20))
            except LakeflowError as error:
                self._emit("trigger_failed", asset=name, message=f"on start: {error}")
            finally:
                self._starting.discard(name)

    async def _fire_ready(self) -> None:
        """Request the pending keys of each consumer whose upstreams are quiet and that no run is
        building. The keys stay pending (and saved) while the request is planned; afterwards
        only those that no commit touched meanwhile are cleared, and a refused request clears
        none, so no change recorded during the await is lost."""
        now = time.monotonic()
        for consumer, pending in list(self.state.pending.items()):
            if not pending or now < self.retry_at.get(consumer, 0.0):
                continue
            policy = self.pipeline[consumer].automation
            if now - self.quiet_since.get(consumer, 0.0) < policy.debounce or self._busy(consumer):
                continue
            required = set(
                policy.inputs
                or [e.up for e in self.pipeline.upstream(consumer) if e.up != consumer]
            )
            keys = sorted(
                k for k, ups in pending.items() if policy.require == "any" or required <= set(ups)
            )
            if not keys:
                continue
            touches = self.touches.setdefault(consumer, {})
            seen = {k: touches.get(k, 0) for k in keys}
            causes = {t: list(v) for t, v in self.state.causes.get(consumer, {}).items()}
            trigger = {"kind": "commit", "tables": causes}
            origin = "commit:" + ",".join(
                f"{t}@{lo}..{hi}" for t, (lo, hi) in sorted(causes.items())
            )
            # an unpartitioned consumer's one key ('') is the whole asset: no partitions named
            spec = tuple(keys) if self.pipeline[consumer].partitions.is_partitioned else None
            requested = await self._request(consumer, spec, origin, trigger, "commit")
            if not requested:
                self.retry_at[consumer] = time.monotonic() + min(5.0, self.options.poll * 20)
                continue
            self.retry_at.pop(consumer, None)
            for key in keys:
                if touches.get(key, 0) == seen[key]:  # untouched since it was requested
                    pending.pop(key, None)
                    touches.pop(key, None)
            if not pending:
                self.state.causes.pop(consumer, None)
            await self._save()

    async def _request(
        self,
        select: str,
        partitions: Any,
        origin: str,
        trigger: Mapping[str, Any],
        kind: str,
        *,
        only: str | None = None,
    ) -> bool:
        """Ask the controller for a run; False if it refused (the keys must be asked for again).
        A plan with nothing to do is an answer too: no run, True. `only`: as `Request.only`."""
        request = Request(select=(select,), partitions=partitions, only=only)
        try:
            summary = await self.controller.submit(
                self.pipeline, request, origin, trigger=dict(trigger), skip_empty=True
            )
        except LakeflowError as error:
            self._emit("trigger_failed", asset=select, message=str(error), detail=dict(trigger))
            return False
        self.fired[kind] = self.fired.get(kind, 0) + 1
        if summary.get("run_id"):
            self.recent = [*self.recent[-49:], (summary["run_id"], origin)]
        return True
