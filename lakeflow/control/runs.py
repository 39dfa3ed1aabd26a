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
from typing import Any

import numpy as np
import polars as pl

from lakeflow.define.definition import (
    NotImportable,
    PipelineRef,
    ResumeError,
    import_pipeline,
    reference,
)
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.lake.log import TableState
from lakeflow.lake.registry import load_registry
from lakeflow.plan.planner import Request
from lakeflow.plan.scheduler import NOT_BUILT

__all__ = [
    "RUNS_DIR",
    "UnknownRun",
    "attempts_used",
    "cancel_marker",
    "dump_request",
    "failed_partitions",
    "load_request",
    "load_stored",
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
        if isinstance(parts, FilePartitions):  # its keys are the files registered in the lake
            parts.load(load_registry(lake, name))
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
