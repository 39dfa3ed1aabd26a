"""Runs as durable things in the lake: the stored request a restarted controller resumes from
(JSON naming the pipeline's module, never a pickle of it), cancel markers any process can drop,
which runs are unfinished, which partitions last failed, and a run's per-unit result as an
Arrow table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from lakeflow.define.definition import (
    NotImportable,
    PipelineRef,
    ResumeError,
    import_pipeline,
    reference,
)
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.plan.planner import Request
from lakeflow.plan.scheduler import NOT_BUILT, UnitStatus

if TYPE_CHECKING:
    from lakeflow.control.runner import Run
    from lakeflow.define.graph import Pipeline
    from lakeflow.lake.log import TableState
    from lakeflow.plan.planner import Plan
    from lakeflow.plan.scheduler import RunState

__all__ = [
    "RESULT_SCHEMA",
    "RUNS_DIR",
    "UnknownRun",
    "attempts_used",
    "cancel_marker",
    "dump_request",
    "failed_partitions",
    "load_request",
    "load_stored",
    "plan_result",
    "published_by",
    "recent_runs",
    "run_status",
    "stored_pipeline",
    "unfinished_runs",
]

RUNS_DIR = "_lakeflow/runs"
RUN_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{8}$")  # what controller.new_run_id makes
LIFECYCLE = ["run_requested", "run_resumed", "run_finished"]
FAILED_KINDS = ["unit_failed", "unit_check_failed", "unit_blocked", "unit_upstream_failed"]

RESULT_SCHEMA = pa.schema(
    [
        ("asset", pa.string()),
        ("partition", pa.string()),
        ("outcome", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("version", pa.int64()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
    ]
)


STORED_FORMAT = 1


def dump_request(pipeline: Pipeline, request: Request | None, origin: str) -> bytes:
    """A run's stored request as JSON: the request, and where its pipeline is defined (module,
    name, file, definition hash) or why it cannot be re-imported. Never the pipeline object, never
    its storage options."""
    ref = reference(pipeline)
    data: dict[str, Any] = {
        "format": STORED_FORMAT,
        "origin": origin,
        "pipeline_name": pipeline.name,
        "request": dataclasses.asdict(request) if request is not None else None,
        "pipeline": ref.to_json() if isinstance(ref, PipelineRef) else None,
        "not_importable": ref if isinstance(ref, str) else None,
    }
    return json.dumps(data, sort_keys=True).encode()


def load_stored(lake: Lake, url: str, *, what: str) -> dict[str, Any]:
    """A stored record (run or triggers) as JSON; a legacy pickle is refused, never loaded."""
    blob = lake.read_bytes(url)
    if blob is None:
        if lake.exists(url.removesuffix(".json") + ".pkl"):
            raise ResumeError(
                f"{what} was stored by an older lakeflow as a pickle, which lakeflow no longer "
                "loads: unpickling what the lake holds would run whatever code its writer put there",
                hint="start it again with the same options; what it published is fresh and skipped",
            )
        raise RequestError(
            f"no {what} in {lake.url}: it has no stored request in {RUNS_DIR}",
            hint="lakeflow backfill status RUN_ID --lake ... shows the runs a lake knows",
        )
    try:
        data = json.loads(blob)
    except ValueError as error:
        raise ResumeError(f"{what}: its stored record {url} is not JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != STORED_FORMAT:
        raise ResumeError(f"{what}: its stored record {url} has an unknown format")
    return data


def stored_pipeline(
    data: dict[str, Any], lake: Lake, *, what: str, accept_changed_code: bool = False
) -> Pipeline:
    """The pipeline a stored record names, imported here and put on `lake`."""
    if data.get("pipeline") is None:
        raise NotImportable(
            f"{what} cannot be resumed by another process: {data.get('not_importable')}",
            hint="define the pipeline in a module (a .py file) at module level, or run it again "
            "from the process that defined it",
        )
    ref = PipelineRef.from_json(data["pipeline"])
    found = import_pipeline(ref, what=what, accept_changed_code=accept_changed_code)
    return found.with_lake(lake.url)


def load_request(
    lake: Lake, run_id: str, *, accept_changed_code: bool = False
) -> tuple[Pipeline, Request, str]:
    """The stored run `run_id`: its pipeline re-imported (refused if its definition changed,
    unless `accept_changed_code`), its request and origin."""
    what = f"run {run_id}"
    data = load_stored(lake, f"{lake.url}/{RUNS_DIR}/{run_id}.json", what=what)
    pipeline = stored_pipeline(data, lake, what=what, accept_changed_code=accept_changed_code)
    raw = dict(data["request"])
    raw["select"] = tuple(raw["select"])
    if isinstance(raw.get("partitions"), list):
        raw["partitions"] = tuple(raw["partitions"])
    return pipeline, Request(**raw), data["origin"]


def cancel_marker(lake: Lake, run_id: str) -> str:
    """The file whose presence asks the controller running `run_id` to cancel it."""
    return f"{lake.url}/{RUNS_DIR}/{run_id}.cancel"


def unfinished_runs(lake: Lake) -> list[str]:
    """Runs whose latest lifecycle event is not `run_finished`, oldest first. A run with a cancel
    marker is recorded as cancelled instead (its controller died before it could do that)."""
    events = read_events(lake, kinds=LIFECYCLE)
    if events.is_empty():
        return []
    latest = events.group_by("run_id", maintain_order=True).last()
    return [r for r, kind in latest.select("run_id", "kind").iter_rows() if kind != "run_finished"]


def failed_partitions(
    lake: Lake, pipeline: Pipeline, assets: Iterable[str]
) -> dict[str, np.ndarray]:
    """Per asset, the partition indices whose latest unit outcome was a failure of any kind."""
    events = read_events(lake, kinds=["unit_published", "unit_deleted", *FAILED_KINDS])
    out: dict[str, np.ndarray] = {}
    if events.is_empty():
        return out
    latest = events.group_by("asset", "partition", maintain_order=True).last()
    failing = latest.filter(pl.col("kind").is_in(FAILED_KINDS))
    for asset in assets:
        keys = failing.filter(pl.col("asset") == asset)["partition"].fill_null("").to_list()
        if keys:
            parts = pipeline[asset].partitions
            index = parts.indices(keys) if parts.is_partitioned else np.zeros(len(keys), np.int64)
            out[asset] = np.unique(index[index >= 0])
    return out


_OUTCOMES = np.array([s.name.lower() for s in sorted(UnitStatus, key=int)], dtype=object)


def published_by(
    lake: Lake, pipeline: Pipeline, tables: dict[str, TableState], run_id: str
) -> tuple[dict[str, dict[int, int]], list[tuple[str, str, int]]]:
    """What run `run_id` already published, from the tables' commit metadata (the truth): per
    asset, partition index -> version; and the (asset, key, version) of those publishes whose
    `unit_published` event never reached the event log (its controller died first)."""
    logged = read_events(lake, run_id=run_id, kinds=["unit_published", "unit_deleted"])
    seen = set(zip(logged["asset"].to_list(), logged["partition"].to_list(), strict=True))
    done: dict[str, dict[int, int]] = {}
    unlogged: list[tuple[str, str, int]] = []
    for name, table in tables.items():
        parts = pipeline[name].partitions
        with table.lock:
            mine = [
                (k, info.version) for k, info in table.published.items() if info.run_id == run_id
            ]
        keys = [k for k, _ in mine]
        indices = parts.indices(keys) if parts.is_partitioned else np.zeros(len(keys), np.int64)
        for (key, version), index in zip(mine, indices.tolist(), strict=True):
            if index < 0:
                continue  # a partition the definition no longer has
            done.setdefault(name, {})[index] = version
            if (name, key) not in seen:
                unlogged.append((name, key, version))
    return done, unlogged


def attempts_used(lake: Lake, run_id: str) -> dict[tuple[str, str], int]:
    """(asset, partition) -> the attempts run `run_id` spent on it before now, from its
    `unit_retry` and `unit_failed` events (a retry for a lost task is not charged). A resumed
    run starts each unit's count there, so a retry policy caps attempts across restarts."""
    events = read_events(lake, run_id=run_id, kinds=["unit_retry", "unit_failed"])
    out: dict[tuple[str, str], int] = {}
    for asset, partition, attempt, detail in events.select(
        "asset", "partition", "attempt", "detail"
    ).iter_rows():
        if attempt is None or (detail and '"charged": false' in detail):
            continue
        key = (asset, partition or "")
        out[key] = max(out.get(key, 0), int(attempt))
    return out


def plan_result(run: Run) -> dict[str, Any]:
    """The run's units (planned, fresh, and published before a restart) as an Arrow table."""
    plan, state, pipeline = run.plan, run.state, run.pipeline
    tables = []
    for j, asset in enumerate(plan.assets):
        lo, hi = int(plan.offsets[j]), int(plan.offsets[j + 1])
        errors = np.full(hi - lo, None, dtype=object)
        for unit, failure in state.errors.items():
            if lo <= unit < hi:
                errors[unit - lo] = failure.error.first_line()
        for unit, cause in state.cause.items():
            if lo <= unit < hi:
                verb = (
                    "blocked by a failed check on"
                    if state.status[unit] == UnitStatus.BLOCKED
                    else "upstream"
                )
                where = f"{plan.locate(cause)[0]} {pipeline[plan.locate(cause)[0]].partitions.key(plan.locate(cause)[1])}".rstrip()
                errors[unit - lo] = f"{verb} {where}" + (
                    "" if verb.startswith("blocked") else " failed"
                )
        version = state.version[lo:hi]
        tables.append(pa.table({
            "asset": pa.array([asset] * (hi - lo), pa.string()),
            "partition": pa.array(pipeline[asset].partitions.keys(plan.indices[j]), pa.string()),
            "outcome": pa.array(_outcomes(plan, state, lo, hi), pa.string()),
            "rows": pa.array(state.rows[lo:hi]),
            "bytes": pa.array(state.bytes[lo:hi]),
            "seconds": pa.array(state.seconds[lo:hi].astype(np.float64)),
            "version": pa.array(version, mask=version < 0),
            "attempts": pa.array(state.attempts[lo:hi].astype(np.int32)),
            "error": pa.array(errors, pa.string()),
        }, schema=RESULT_SCHEMA))  # fmt: skip
    for asset, prior in run.prior.items():
        indices = np.array(sorted(prior), np.int64)
        tables.append(
            _simple(pipeline, asset, indices, "published", [prior[i] for i in indices.tolist()])
        )
    for asset, fresh in plan.fresh.items():
        tables.append(_simple(pipeline, asset, fresh, "fresh", None))
    for asset, indices, reasons in waiting_units(plan, pipeline):
        tables.append(_simple(pipeline, asset, indices, "waiting", None, errors=reasons))
    units = pa.concat_tables(tables) if tables else RESULT_SCHEMA.empty_table()
    errors_text: dict[str, str] = {}
    for unit, failure in list(state.errors.items())[:50]:
        asset, index = plan.locate(unit)
        errors_text[f"{asset} {pipeline[asset].partitions.key(index)}".strip()] = (
            failure.error.traceback or failure.error.message
        )
    infrastructure = [
        f"{asset} {pipeline[asset].partitions.key(index)}".strip()
        for unit, failure in state.errors.items()
        if failure.error.kind == "infrastructure"
        for asset, index in [plan.locate(unit)]
    ]
    return {
        "run_id": run.id,
        "status": run.outcome(),
        "started": state.started,
        "finished": state.finished,
        "units": units,
        "errors": errors_text,
        "infrastructure": infrastructure,
    }


def _outcomes(plan: Plan, state: RunState, lo: int, hi: int) -> np.ndarray:
    """Each unit's outcome; a published delete unit's is "deleted"."""
    out = _OUTCOMES[state.status[lo:hi]]
    if plan.deletes is not None:
        out = out.copy()
        out[plan.deletes[lo:hi] & (state.status[lo:hi] == UnitStatus.PUBLISHED)] = "deleted"
    return out


def waiting_units(plan: Plan, pipeline: Pipeline) -> list[tuple[str, np.ndarray, list[str]]]:
    """Per asset, the units the plan left waiting (`Plan.waiting`) and what each waits for."""
    out: dict[str, tuple[list[int], list[str]]] = {}
    for item in plan.waiting:
        key = pipeline[item.upstream].partitions.key(item.upstream_index)
        reason = (
            f"input {item.upstream} {key} is not materialized and lies outside the "
            "requested partitions; a request that covers it builds this unit"
        )
        indices, reasons = out.setdefault(item.asset, ([], []))
        indices.append(item.index)
        reasons.append(reason)
    return [(a, np.array(i, np.int64), r) for a, (i, r) in out.items()]


def _simple(
    pipeline: Pipeline,
    asset: str,
    indices: np.ndarray,
    outcome: str,
    versions: list[int] | None,
    *,
    errors: list[str] | None = None,
) -> pa.Table:
    n = len(indices)
    none_int = pa.nulls(n, pa.int64())
    return pa.table({
        "asset": pa.array([asset] * n, pa.string()),
        "partition": pa.array(pipeline[asset].partitions.keys(indices), pa.string()),
        "outcome": pa.array([outcome] * n, pa.string()),
        "rows": none_int, "bytes": none_int, "seconds": pa.nulls(n, pa.float64()),
        "version": pa.array(versions, pa.int64()) if versions is not None else none_int,
        "attempts": pa.array(np.zeros(n, np.int32)),
        "error": pa.array(errors, pa.string()) if errors is not None else pa.nulls(n, pa.string()),
    }, schema=RESULT_SCHEMA)  # fmt: skip


class UnknownRun(RequestError):
    """No run with this id in the lake's event log."""


def recent_runs(lake: Lake, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest `limit` runs, newest first, as the event log tells them: id, origin, when it
    was requested, what it selected, its planned units and its status (running or how it ended)."""
    events = read_events(lake, kinds=["run_requested", "run_finished"])
    requested = events.filter(pl.col("kind") == "run_requested").unique("run_id", keep="first")
    finished = (
        events.filter(pl.col("kind") == "run_finished")
        .unique("run_id", keep="last")
        .select("run_id", pl.col("message").alias("ended"))
    )
    latest = (
        requested.join(finished, on="run_id", how="left")
        .sort("run_id", descending=True)
        .head(limit)
    )
    runs = []
    for row in latest.iter_rows(named=True):
        detail = _json(row["detail"])
        runs.append({
            "run_id": row["run_id"], "origin": row["message"],
            "requested_at": row["ts"].isoformat(), "kind": detail.get("kind", "materialize"),
            "select": detail.get("select"), "partitions": detail.get("partitions"),
            "units": detail.get("units"), "status": row["ended"] or "running",
        })  # fmt: skip
    return runs


def run_status(lake: Lake, run_id: str) -> dict[str, Any]:
    """A run's progress as the event log tells it, readable from any process: counts by latest
    unit outcome, rate, ETA, and the failures by asset with their first error lines."""
    events = read_events(lake, run_id=run_id) if RUN_ID.match(run_id) else None
    if events is None or events.is_empty():
        raise UnknownRun(
            f"no run {run_id} in the event log of {lake.url}", hint="is --lake the run's lake?"
        )
    lifecycle = events.filter(pl.col("kind").is_in(LIFECYCLE))
    latest = lifecycle["kind"][-1] if len(lifecycle) else "run_requested"
    requested = events.filter(pl.col("kind") == "run_requested")
    detail = _json(requested["detail"][0]) if len(requested) else {}
    finished = lifecycle.filter(pl.col("kind") == "run_finished")
    status = finished["message"][-1] if latest == "run_finished" else "running"
    units = events.filter(
        pl.col("kind").str.starts_with("unit_") & (pl.col("kind") != "unit_retry")
    )
    last = units.group_by("asset", "partition", maintain_order=True).last()
    outcome = {k: int(v) for k, v in last.group_by("kind").len().iter_rows()}
    published = outcome.get("unit_published", 0) + outcome.get("unit_deleted", 0)
    unbuilt = {k: outcome.get(f"unit_{k}", 0) for k in NOT_BUILT}  # each its own count
    failed = sum(unbuilt.values())
    total = max(int(detail.get("units", 0)), len(last))
    stamps = (units if len(units) else events)["ts"]
    started: dt.datetime = stamps.min()  # type: ignore[assignment]
    ended: dt.datetime = stamps.max() if status != "running" else dt.datetime.now(dt.UTC)  # type: ignore[assignment]
    elapsed = (ended - started).total_seconds()
    rate = (published + failed) / elapsed if elapsed > 0 else 0.0
    remaining = max(0, total - published - failed) if status == "running" else 0
    failures = last.filter(pl.col("kind").is_in(["unit_failed", "unit_check_failed"])).join(
        events.filter(pl.col("kind").is_in(["unit_failed", "unit_check_failed"])).select("asset", "partition", "message"),
        on=["asset", "partition"], how="left", suffix="_first",
    )  # fmt: skip
    by_asset: dict[str, dict[str, Any]] = {}
    for asset, partition, message in failures.select("asset", "partition", "message").iter_rows():
        entry = by_asset.setdefault(asset, {"failed": 0, "first_errors": []})
        entry["failed"] += 1
        if len(entry["first_errors"]) < 3:
            entry["first_errors"].append(f"{partition}: {message}")
    return {
        "run_id": run_id,
        "kind": detail.get("kind", "materialize"),
        "status": status,
        "select": detail.get("select"),
        "partitions": detail.get("partitions"),
        "total": total,
        "published": published,
        **unbuilt,
        "counts": {k.removeprefix("unit_"): v for k, v in sorted(outcome.items())},
        "rate": rate,
        "eta": remaining / rate if rate > 0 else None,
        "failures": by_asset,
    }


def _json(text: str | None) -> dict[str, Any]:
    import json

    return json.loads(text) if text else {}
