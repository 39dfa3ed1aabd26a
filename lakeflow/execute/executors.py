"""Executors run a task's units somewhere: Ray remote tasks across the cluster, or threads in this
process. The controller sees one small interface and is the same code over both.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lakeflow.aio import within
from lakeflow.define.checks import CheckResult
from lakeflow.define.graph import Pipeline
from lakeflow.execute.sql import interrupt
from lakeflow.execute.table_audit import TableAudit, Verdict, ray_table_audit, run_table_audit
from lakeflow.execute.worker import (
    UnitRecord,
    UnitSpec,
    execute_units,
    ray_table_task,
    ray_task,
    table_audit,
)
from lakeflow.lake import Lake

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "TaskLost", "TaskTimedOut"]


class TaskLost(Exception):
    """A task died without reporting (worker process crash, node loss). Its units may be retried."""


class TaskTimedOut(Exception):
    """A task ran past its budget (the asset's timeout times its units) and was given up on."""

    def __init__(self, budget: float, units: int) -> None:
        self.budget = budget
        self.units = units
        super().__init__(f"the task of {units} unit(s) ran past its budget of {budget:g}s")


def _budget(pipeline: Pipeline, asset: str, units: Sequence[UnitSpec]) -> float | None:
    """Seconds a task may run: the asset's timeout per unit, times its units."""
    timeout = pipeline.timeout_of(asset)
    return timeout * len(units) if timeout is not None else None


async def _in_daemon_thread(work: Callable[[], Any], budget: float) -> Any:
    """Run `work` in a daemon thread, waiting `budget` seconds at most. A thread cannot be
    killed: past the budget it is abandoned (a daemon thread keeps no process alive, unlike the
    default executor's threads, which `asyncio.run` waits for on exit), and the SQL it runs, if
    any, is interrupted."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(outcome: Any, error: BaseException | None) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(outcome)

    def body() -> None:
        try:
            outcome, error = work(), None
        except BaseException as raised:  # handed to the awaiting task
            outcome, error = None, raised
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(settle, outcome, error)
            except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                pass

    thread = threading.Thread(target=body, name="lakeflow-unit", daemon=True)
    thread.start()
    try:
        return await within(future, budget)
    except TimeoutError:
        interrupt(thread.ident)
        raise


class Executor(Protocol):
    def slots(self) -> int:
        """How many tasks it makes sense to keep in flight."""

    def prepare(self, run_id: str, pipeline: Pipeline) -> Any:
        """Whatever `run` needs to reach the pipeline from a worker (done once per run)."""

    def forget(self, handle: Any) -> None:
        """The run is over: release what `prepare` made."""

    def infeasible(self, resources: dict[str, Any]) -> str | None:
        """Why no worker could ever run a task with these Ray options, or None."""

    async def run(
        self,
        lake: Lake,
        run_id: str,
        handle: Any,
        pipeline: Pipeline,
        asset: str,
        units: Sequence[UnitSpec],
    ) -> list[UnitRecord]:
        """Run one task; raises `TaskLost` if the task died, `TaskTimedOut` (having cancelled
        it where it can) if it ran past `pipeline.timeout_of(asset)` seconds per unit."""

    async def audit_group(
        self, lake: Lake, handle: Any, pipeline: Pipeline, spec: TableAudit
    ) -> Verdict:
        """Run the asset's table-scope checks on the version a group commit would make."""

    async def audit_table(
        self, lake: Lake, handle: Any, pipeline: Pipeline, asset: str, version: int
    ) -> list[CheckResult]:
        """Run the asset's table-scope checks on its published `version` (tables whose files
        cannot be read on their own: see `GroupCommits`)."""


class LocalExecutor:
    """Threads in this process: for tests, notebooks without a cluster, and debugging.

    A task past its timeout cannot be stopped here (Python cannot kill a thread): its units fail
    with a TimeoutError and the thread is abandoned, its DuckDB query interrupted; what it
    stages later is never committed."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or max(1, os.cpu_count() or 1)

    def slots(self) -> int:
        return self.threads

    def prepare(self, run_id: str, pipeline: Pipeline) -> Any:
        return None

    def forget(self, handle: Any) -> None:
        pass

    def infeasible(self, resources: dict[str, Any]) -> str | None:
        return None  # threads here ignore resource requests

    async def run(self, lake, run_id, handle, pipeline, asset, units):
        budget = _budget(pipeline, asset, units)
        if budget is None:
            return await asyncio.to_thread(execute_units, lake, run_id, pipeline, units)
        try:
            return await _in_daemon_thread(
                lambda: execute_units(lake, run_id, pipeline, units), budget
            )
        except TimeoutError:
            raise TaskTimedOut(budget, len(units)) from None

    async def audit_group(self, lake, handle, pipeline, spec):
        checks = pipeline.assets[spec.asset].table_checks
        return await asyncio.to_thread(run_table_audit, lake, checks, spec)

    async def audit_table(self, lake, handle, pipeline, asset, version):
        return await asyncio.to_thread(table_audit, lake, pipeline, asset, version)


class RayExecutor:
    """Ray remote tasks, one per batch of units, with the asset's resources."""

    def __init__(self, max_in_flight: int | None = None) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(ray_task)
        self._table_remote = ray.remote(ray_table_task)
        self._group_remote = ray.remote(ray_table_audit)
        self._max_in_flight = max_in_flight

    def slots(self) -> int:
        if self._max_in_flight:
            return self._max_in_flight
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        return max(2, 2 * cpus)  # one running and one queued per CPU keeps workers busy

    def prepare(self, run_id: str, pipeline: Pipeline) -> Any:
        return (run_id, [self._ray.put(pipeline)])

    def forget(self, handle: Any) -> None:
        handle[1].clear()

    def infeasible(self, resources: dict[str, Any]) -> str | None:
        wanted = {"CPU": resources.get("num_cpus", 1), **resources.get("resources", {})}
        if resources.get("memory"):
            wanted["memory"] = resources["memory"]
        nodes = [n["Resources"] for n in self._ray.nodes() if n.get("Alive")]
        if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
            return None
        short = [
            f"{k}={v:g}"
            for k, v in wanted.items()
            if not any(node.get(k, 0) >= v for node in nodes)
        ]
        shown = (
            ", ".join(short) or ", ".join(f"{k}={v:g}" for k, v in wanted.items()) + " on one node"
        )
        return f"needs {shown} but no node of the cluster has that much"

    async def run(self, lake, run_id, handle, pipeline, asset, units):
        key, box = handle
        options = pipeline.assets[asset].resources.ray_options()
        task = self._remote.options(name=f"lakeflow:{asset}", max_retries=0, **options)
        wire = [(u.index, u.attempt, u.inputs) for u in units]
        try:
            ref = task.remote(lake, run_id, key, box, asset, units[0].table_schema, wire)
            budget = _budget(pipeline, asset, units)
            if budget is None:
                records = await ref
            else:
                try:
                    records = await within(asyncio.wrap_future(ref.future()), budget)
                except TimeoutError:
                    # kill the worker process: a hung function holds its slot (and maybe a lock)
                    self._ray.cancel(ref, force=True)
                    raise TaskTimedOut(budget, len(units)) from None
        except self._ray.exceptions.RayError as error:
            text = str(error).strip()
            raise TaskLost(
                f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
            ) from error
        return [UnitRecord.from_wire(asset, record) for record in records]

    async def audit_group(self, lake, handle, pipeline, spec):
        key, box = handle
        options = pipeline.assets[spec.asset].resources.ray_options()
        task = self._group_remote.options(
            name=f"lakeflow:{spec.asset}:table-checks", max_retries=2, **options
        )
        return await task.remote(lake, key, box, spec)

    async def audit_table(self, lake, handle, pipeline, asset, version):
        key, box = handle
        options = pipeline.assets[asset].resources.ray_options()
        task = self._table_remote.options(
            name=f"lakeflow:{asset}:table-checks", max_retries=2, **options
        )
        return await task.remote(lake, key, box, asset, version)
