"""What the CLI, a notebook and the web endpoint call: materialize, backfill, status, connect.

>>> import lakeflow as lf
>>> result = lf.materialize(pipeline, select="delays+", partitions="2013-01-01..2013-01-31")
>>> result            # a table of units in a notebook
>>> run = lf.backfill(pipeline, partitions="2013-01-01..2013-12-31", max_share=0.5, wait=False)
>>> run.progress()    # counts, rate, ETA
>>> lf.status(pipeline)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from lakeflow.control.options import ControllerOptions
from lakeflow.control.run_result import plan_result
from lakeflow.control.runs import (
    RUNS_DIR,
    cancel_marker,
    failed_partitions,
    load_stored,
    run_status,
)
from lakeflow.define.assets import AssetDef
from lakeflow.define.definition import reference
from lakeflow.define.graph import Pipeline
from lakeflow.display import CheckFrame, LineageView, StatusFrame, preview_html
from lakeflow.jupyter import NotebookProgress, in_kernel
from lakeflow.lake import Lake
from lakeflow.plan import lineage as lake_lineage
from lakeflow.plan import status as lake_status
from lakeflow.plan.lineage import Lineage
from lakeflow.plan.planner import Plan, Request, build_plan, check_request
from lakeflow.plan.scheduler import RunState, depths
from lakeflow.plan.snapshots import needed, read_snapshots
from lakeflow.plan.status import as_pipeline
from lakeflow.progress import ProgressBar, not_built
from lakeflow.results import RunResult, events_result

if TYPE_CHECKING:  # at run time these load on first use (`_clients`)
    from lakeflow.control.client import connect, stop

__all__ = [
    "CheckFrame",
    "Lineage",
    "LineageView",
    "PlanPreview",
    "RunHandle",
    "RunResult",
    "StatusFrame",
    "backfill",
    "backfill_request",
    "backfill_status",
    "cancel",
    "check_results",
    "connect",
    "file_status",
    "lineage",
    "materialize",
    "materialize_request",
    "nothing_to_run",
    "preview",
    "resume",
    "status",
    "stop",
]

Progress = bool | Callable[[Mapping[str, Any]], None]
LAZY = ("connect", "controller_client", "stop")  # from `lakeflow.control.client`, see `_clients`


def _clients() -> ModuleType:
    """The controller's clients (and, through them, the controller, its executors and the worker
    code), loaded when a run first needs them: commands and notebooks that only read the lake
    never pay for that import (about half of `import lakeflow` before it was deferred)."""
    from lakeflow.control import client  # deferred for start-up time (docs/layers.md)

    return client


def __getattr__(name: str) -> Any:
    """`connect`, `stop` (and `controller_client`) of `lakeflow.control.client`, loaded on use."""
    if name in LAZY:
        return getattr(_clients(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _terms(select: str | Sequence[str] | None) -> tuple[str, ...]:
    if select is None:
        return ("*",)
    return tuple(select.split(",")) if isinstance(select, str) else tuple(select)


def _spec(partitions: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    if partitions is None or isinstance(partitions, str):
        return partitions
    return tuple(partitions)


def materialize_request(
    select: str | Sequence[str] | None,
    partitions: str | Sequence[str] | None,
    *,
    force: bool = False,
    order: str = "oldest",
) -> Request:
    """The `Request` that `materialize` makes of its arguments (bad options raise here)."""
    return Request(select=_terms(select), partitions=_spec(partitions), force=force, order=order)


def backfill_request(
    select: str | Sequence[str] | None,
    partitions: str | Sequence[str] | None,
    *,
    only: str | None = None,
    order: str = "oldest",
    concurrency: int | None = None,
    max_share: float | None = None,
) -> Request:
    """The `Request` that `backfill` makes of its arguments (bad options raise here)."""
    return Request(
        select=_terms(select), partitions=_spec(partitions), order=order, only=only,
        kind="backfill", concurrency=concurrency, max_share=max_share,
    )  # fmt: skip


class RunHandle:
    """A run going on in a controller: ask its progress, wait for it, cancel it."""

    def __init__(self, client: Any, run_id: str, lake: Lake) -> None:
        self._client = client
        self.id = run_id
        self.lake = lake

    def progress(self) -> dict[str, Any]:
        info = self._client.call("progress", self.id)
        return info if info.get("known") else run_status(self.lake, self.id)

    def wait(self, progress: Progress = False) -> RunResult:
        follow(self._client, self.id, progress)
        data = self._client.call("result", self.id)
        return RunResult(data, self.lake) if data is not None else events_result(self.lake, self.id)

    def cancel(self) -> bool:
        """Cancel the run: told to its controller at once, and marked in the lake."""
        self._client.call("cancel", self.id)
        return cancel(self.id, lake=self.lake)

    def __repr__(self) -> str:
        info = self.progress()
        return f"<run {self.id}: {info.get('status')} {info.get('published', 0)}/{info.get('total', 0)} published, {not_built(info)}>"


def _run(
    pipeline: Pipeline,
    request: Request,
    *,
    executor: str,
    address: str | None,
    options: ControllerOptions | None,
    progress: Progress,
    wait: bool,
    raise_on_failure: bool,
    origin: str,
) -> RunResult | RunHandle:
    check_request(pipeline, request)  # a bad selection or partition fails before any controller
    lake = Lake(pipeline.lake, pipeline.storage_options)
    reference(pipeline)  # where it is defined, found here where its module is surely loaded
    client = _clients().controller_client(lake, executor, options, address)
    summary = client.call("submit", pipeline, request, origin, _manual())
    handle = RunHandle(client, summary["run_id"], lake)
    if not wait:
        return handle
    result = handle.wait(progress)
    if raise_on_failure:
        result.raise_on_failure()
    return result


def _manual() -> dict[str, Any]:
    """What a person's run records about who asked."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {"kind": "manual", "user": user}


def materialize(
    target: Pipeline | Iterable[AssetDef],
    select: str | Sequence[str] | None = None,
    partitions: str | Sequence[str] | None = None,
    *,
    force: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    order: Literal["oldest", "newest"] = "oldest",
    executor: Literal["ray", "local"] = "ray",
    address: str | None = None,
    options: ControllerOptions | None = None,
    progress: Progress = False,
    raise_on_failure: bool = False,
    origin: str = "api",
) -> RunResult:
    """Bring the selected assets' partitions up to date and return the run's result.

    >>> lf.materialize(pipeline, select="delays+", partitions="2013-01-01..2013-01-31")

    - select: names, `name+` (and downstream), `+name` (and upstream), `*`, comma lists
    - partitions: a key, `a..b`, a comma list, or None for every partition
    - force: rerun units that are already fresh
    - executor: "ray" (the lake's controller actor; local Ray is started if needed) or "local"
      (threads in this process)
    - progress: True for a live bar, or a callable receiving progress dicts
    """
    pipeline = as_pipeline(target, lake, storage_options)
    request = materialize_request(select, partitions, force=force, order=order)
    result = _run(
        pipeline,
        request,
        executor=executor,
        address=address,
        options=options,
        progress=progress,
        wait=True,
        raise_on_failure=raise_on_failure,
        origin=origin,
    )
    assert isinstance(result, RunResult)
    return result


def backfill(
    target: Pipeline | Iterable[AssetDef],
    select: str | Sequence[str] | None = None,
    partitions: str | Sequence[str] | None = None,
    *,
    only: Literal["missing", "stale", "failed", "all"] | None = None,
    order: Literal["oldest", "newest"] = "oldest",
    concurrency: int | None = None,
    max_share: float | None = None,
    dry_run: bool = False,
    wait: bool = True,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    executor: Literal["ray", "local"] = "ray",
    address: str | None = None,
    options: ControllerOptions | None = None,
    progress: Progress = False,
    raise_on_failure: bool = False,
    origin: str = "api",
) -> RunResult | RunHandle | PlanPreview:
    """Fill in many partitions: a durable run with an id that survives controller restarts,
    pipelined per partition across assets, committed in large groups.

    >>> lf.backfill(pipeline, select="lineitem+", partitions="1992-01-01..1998-12-31", order="newest")

    - only: "missing" (never built), "stale", "failed" (last outcome a failure), "all"; by default
      whatever is missing or stale
    - concurrency: tasks of this backfill in flight at most; max_share: fraction of the cluster's
      task slots it may take, so that triggered work is not starved
    - dry_run: plan only and return a `PlanPreview` (counts per asset, the first units)
    - wait=False: return a `RunHandle` at once (progress(), wait(), cancel())
    """
    pipeline = as_pipeline(target, lake, storage_options)
    request = backfill_request(
        select, partitions, only=only, order=order, concurrency=concurrency, max_share=max_share
    )
    if dry_run:
        return preview(pipeline, request)
    return _run(
        pipeline,
        request,
        executor=executor,
        address=address,
        options=options,
        progress=progress,
        wait=wait,
        raise_on_failure=raise_on_failure,
        origin=origin,
    )


@dataclass(frozen=True)
class PlanPreview:
    """What a request would do, without doing it."""

    units: dict[str, int]
    fresh: dict[str, int]
    missing_inputs: int
    first: list[tuple[str, str]]

    @property
    def total(self) -> int:
        return sum(self.units.values())

    def __repr__(self) -> str:
        lines = [f"{self.total} units to run, {sum(self.fresh.values())} already fresh"]
        lines += [
            f"  {asset:<24} {n:>9} to run  {self.fresh.get(asset, 0):>9} fresh"
            for asset, n in self.units.items()
        ]
        if self.missing_inputs:
            lines.append(
                f"  {self.missing_inputs} units would fail: an input partition is not materialized"
            )
        if self.first:
            lines.append("first units: " + ", ".join(f"{a} {p}".strip() for a, p in self.first))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return preview_html(
            units=self.units, fresh=self.fresh, missing_inputs=self.missing_inputs, first=self.first
        )


def plan_here(pipeline: Pipeline, request: Request) -> Plan:
    """Plan `request` against one snapshot of the lake, in this process (no Ray, no controller,
    nothing written): what `status`, dry runs and `nothing_to_run` see."""
    lake = Lake(pipeline.lake, pipeline.storage_options)
    selected = pipeline.select(list(request.select))
    snapshots = read_snapshots(lake, pipeline, needed(pipeline, selected))
    failed = failed_partitions(lake, pipeline, selected) if request.only == "failed" else None
    return build_plan(pipeline, request, snapshots, failed=failed)


def nothing_to_run(pipeline: Pipeline, request: Request) -> RunResult | None:
    """The result of `request` when it has no unit to run (every partition fresh, or waiting on
    an input outside the request), planned here from one snapshot of the lake; None when units
    must run. No run is started or recorded, so the result's `run_id` is None; its units (fresh,
    waiting) are what a controller's run of the same request would report.

    >>> api.nothing_to_run(pipeline, materialize_request("*", None)) or run_it_on_ray()
    """
    began = time.time()
    check_request(pipeline, request)
    plan = plan_here(pipeline, request)
    if plan.size:
        return None
    state = RunState(plan, depth=depths(pipeline))
    data = plan_result(
        run_id=None, status="succeeded", plan=plan, state=state, pipeline=pipeline, prior={}
    )
    data["started"] = began
    return RunResult(data, Lake(pipeline.lake, pipeline.storage_options))


def preview(pipeline: Pipeline, request: Request, *, first: int = 10) -> PlanPreview:
    """Plan `request` against the lake as it is now, in this process (no Ray)."""
    plan = plan_here(pipeline, request)
    run_state = RunState(plan, depth=depths(pipeline))
    units = run_state.take(first) if plan.size else []
    leading = [plan.locate(u) for u in units]
    fresh = {a: len(v) for a, v in plan.fresh.items() if len(v)}
    return PlanPreview(
        units={a: int(n) for a, n in plan.counts().items()},
        fresh=fresh,
        missing_inputs=len({(m.asset, m.index) for m in plan.missing}),
        first=[(a, pipeline[a].partitions.key(i)) for a, i in leading],
    )


def follow(client: Any, run_id: str, progress: Progress) -> None:
    """Wait for the run, showing a live bar (units done/failed/total, rate, ETA) if asked.
    Ctrl-C cancels the run cleanly: units in flight finish, nothing half published."""
    try:
        if callable(progress) or not progress:
            report = progress if callable(progress) else None
            while True:
                done = client.call("wait", run_id, 0.25 if report else 1.0)
                if report is not None:
                    info = client.call("progress", run_id)
                    report(info)
                    done = done or info["done"]
                if done:
                    return
        # in a Jupyter kernel, a line updated in place (rich's live display needs ipywidgets)
        with NotebookProgress(run_id) if in_kernel() else ProgressBar(run_id) as bar:
            while True:
                done = client.call("wait", run_id, 0.25)
                info = client.call("progress", run_id)
                bar.update(info)
                if done or info["done"]:
                    return
    except KeyboardInterrupt:
        client.call("cancel", run_id)
        while not client.call("wait", run_id, 1.0):
            pass
        raise


def _shown(view: Callable[[Any], Any], compute: Callable[..., Any]) -> Callable[..., Any]:
    """`compute` (a read of the lake in `plan/`, which knows nothing of notebooks) with its result
    wrapped in `view`, the type a notebook shows as HTML; same arguments, same docstring."""

    @functools.wraps(compute)
    def shown(*args: Any, **kwargs: Any) -> Any:
        return view(compute(*args, **kwargs))

    return shown


status = _shown(StatusFrame, lake_status.status)
check_results = _shown(CheckFrame, lake_status.check_results)
file_status = lake_status.file_status
lineage = _shown(LineageView.of, lake_lineage.lineage)


def backfill_status(
    run_id: str, *, lake: str | Lake = "./lake", storage_options: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A run's counts per state, rate and ETA, and its failures by asset, read from the lake's
    event log: it works from any process, whichever controller runs the backfill."""
    where = lake if isinstance(lake, Lake) else Lake(lake, storage_options or {})
    return run_status(where, run_id)


def cancel(
    run_id: str, *, lake: str | Lake = "./lake", storage_options: Mapping[str, str] | None = None
) -> bool:
    """Ask the controller running `run_id` to cancel it (through a marker in the lake, so it works
    from any process): units not started are cancelled, those in flight finish and are
    published or fail; nothing is half published. False if the run already finished."""
    where = lake if isinstance(lake, Lake) else Lake(lake, storage_options or {})
    state = run_status(where, run_id)
    if state["status"] != "running":
        return False
    where.write_bytes(cancel_marker(where, run_id), b"cancel\n")
    return True


def resume(
    run_id: str,
    *,
    lake: str | Lake = "./lake",
    storage_options: Mapping[str, str] | None = None,
    executor: Literal["ray", "local"] = "ray",
    address: str | None = None,
    options: ControllerOptions | None = None,
    progress: Progress = False,
    wait: bool = True,
    accept_changed_code: bool = False,
) -> RunResult | RunHandle:
    """Carry on with a run no controller is running (its process was killed, or it was
    cancelled): its stored request is planned again, leaving out what it already published.

    The lake stores where the run's pipeline is defined (its module and name), not the pipeline:
    the controller imports that module again, and refuses (`ResumeError`, nothing changed) if
    the pipeline's definition hash differs from the stored one, unless `accept_changed_code`.
    A pipeline defined in a notebook can only be resumed by the controller that ran it."""
    where = lake if isinstance(lake, Lake) else Lake(lake, storage_options or {})
    # an unknown run, or one stored as a pickle, is refused before Ray starts for nothing
    load_stored(where, f"{where.url}/{RUNS_DIR}/{run_id}.json", what=f"run {run_id}")
    client = _clients().controller_client(where, executor, options, address)
    client.call("resume", run_id, accept_changed_code)
    handle = RunHandle(client, run_id, where)
    return handle.wait(progress) if wait else handle
