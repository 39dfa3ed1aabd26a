"""A lake's run history and its units' captured logs, as the event log tells them: what
`lakeflow runs` and `lakeflow logs` print and the web UI shows. Reads the lake only (never Ray,
never a controller), so it answers from any process, for runs of any controller, past or running.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from lakeflow.control.runs import RUN_ID, UnknownRun
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.lake.events import LOGS, event_detail, read_events, read_logs

__all__ = ["FAILING", "OUTCOMES", "UnknownRun", "run_history", "run_logs"]

LIFECYCLE = ["run_requested", "run_resumed", "run_finished"]
OUTCOMES = [
    "unit_published",
    "unit_deleted",
    "unit_failed",
    "unit_upstream_failed",
    "unit_check_failed",
    "unit_blocked",
    "unit_cancelled",
    "unit_waiting",
]
FAILING = ["failed", "check_failed"]  # outcomes whose own code or check went wrong


def _iso(stamp: dt.datetime | None) -> str | None:
    return stamp.isoformat() if stamp is not None else None


def run_history(lake: Lake, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest `limit` runs, newest first: id, kind, origin, status, when it started, how long
    it took (so far, if running), and its units' counts by latest outcome (with `fresh`: the
    units its plan found up to date)."""
    if limit < 1:
        raise RequestError(f"--limit must be 1 or more, not {limit}")
    lifecycle = read_events(lake, kinds=LIFECYCLE)
    requested = (
        lifecycle.filter(pl.col("kind") == "run_requested")
        .unique("run_id", keep="first", maintain_order=True)
        .sort("ts", "run_id", descending=True)  # ids of one second sort at random
        .head(limit)
    )
    if requested.is_empty():
        return []
    ids = requested["run_id"].to_list()
    finished = {  # a run's latest lifecycle event: running again once resumed after its end
        run_id: (ts, message)
        for run_id, kind, ts, message in lifecycle.group_by("run_id", maintain_order=True)
        .last()
        .select("run_id", "kind", "ts", "message")
        .iter_rows()
        if kind == "run_finished"
    }
    units = (
        read_events(lake, kinds=OUTCOMES, run_ids=ids)
        .group_by("run_id", "asset", "partition", maintain_order=True)
        .last()
        .group_by("run_id", "kind")
        .len()
    )
    counts: dict[str, dict[str, int]] = {}
    for run_id, kind, n in units.iter_rows():
        counts.setdefault(run_id, {})[kind.removeprefix("unit_")] = int(n)
    now = dt.datetime.now(dt.UTC)
    runs = []
    for row in requested.iter_rows(named=True):
        detail = event_detail(row["detail"])
        ended, status = finished.get(row["run_id"], (None, "running"))
        mine = dict(sorted(counts.get(row["run_id"], {}).items()))
        if detail.get("fresh"):
            mine["fresh"] = int(detail["fresh"])
        runs.append({
            "run_id": row["run_id"], "kind": detail.get("kind", "materialize"),
            "origin": row["message"], "status": status, "started": _iso(row["ts"]),
            "finished": _iso(ended), "seconds": ((ended or now) - row["ts"]).total_seconds(),
            "units": detail.get("units"), "counts": mine, "select": detail.get("select"),
            "partitions": detail.get("partitions"),
        })  # fmt: skip
    return runs


def _run_events(lake: Lake, run_id: str) -> pl.DataFrame:
    events = read_events(lake, run_id=run_id) if RUN_ID.match(run_id) else None
    if events is None or events.is_empty():
        raise UnknownRun(
            f"no run {run_id} in the event log of the lake {lake.url}",
            hint="`lakeflow runs --lake ...` lists the runs a lake knows; is --lake the run's lake?",
        )
    return events


def _choose(events: pl.DataFrame, run_id: str, asset: str | None, partition: str | None) -> pl.DataFrame:  # fmt: skip
    """The run's units' events, narrowed to `asset` (and `partition`): an error naming what the
    run has if it has no such unit."""
    units = events.filter(pl.col("asset").is_not_null())
    if asset is None:
        return units
    assets = sorted(set(units["asset"].to_list()))
    if asset not in assets:
        shown = ", ".join(assets[:20]) or "none"
        raise RequestError(
            f"run {run_id} has no unit of asset {asset!r}",
            hint=f"its assets: {shown}",
        )
    units = units.filter(pl.col("asset") == asset)
    if partition is None:
        return units
    units = units.with_columns(pl.col("partition").fill_null(""))
    keys = units["partition"].unique(maintain_order=True).to_list()
    if partition not in keys:
        shown = ", ".join(k or '""' for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        raise RequestError(
            f"run {run_id} did not run asset {asset} partition {partition!r}",
            hint=f"its partitions of {asset}: {shown}",
        )
    return units.filter(pl.col("partition") == partition)


def run_logs(
    lake: Lake, run_id: str, *, asset: str | None = None, partition: str | None = None
) -> dict[str, Any]:
    """A run's units with their outcome, captured output per attempt, and error (message and
    traceback): the units of `asset` (and `partition`) if given, else the failing ones.

    `{"run_id", "status", "units": [{"asset", "partition", "outcome", "attempts", "error",
    "traceback", "logs": [{"attempt", "ts", "logs"}]}], "logged": [...], "logged_units": N}`:
    `logged` lists (the first 200 of) the run's units that captured any output, what
    `lakeflow logs RUN ASSET PARTITION` can show."""
    events = _run_events(lake, run_id)
    finished = events.filter(pl.col("kind") == "run_finished")
    status = finished["message"][-1] if len(finished) else "running"
    chosen = _choose(events, run_id, asset, partition).with_columns(
        pl.col("partition").fill_null("")
    )
    outcome = (
        chosen.filter(pl.col("kind").is_in(OUTCOMES))
        .group_by("asset", "partition", maintain_order=True)
        .last()
    )
    logs = chosen.filter(pl.col("kind") == LOGS)  # pointers: the text is in _lakeflow/logs
    texts = read_logs(lake, run_id=run_id, asset=asset, partition=partition)
    failures = chosen.filter(pl.col("kind").is_in(["unit_failed", "unit_retry"]))
    keys = sorted(outcome.select("asset", "partition", "kind").rows())
    if asset is None:
        keys = [k for k in keys if k[2].removeprefix("unit_") in FAILING]
    elif not keys:  # running, or its outcome not logged yet: what it printed so far
        keys = sorted(
            (a, p, "running") for a, p in logs.select("asset", "partition").unique().rows()
        )
    units = []
    for name, key, kind in keys:
        mine = outcome.filter((pl.col("asset") == name) & (pl.col("partition") == key))
        last = mine.row(0, named=True) if len(mine) else {}
        detail = event_detail(last.get("detail"))
        if not detail.get("traceback"):  # a retried failure keeps its error on the retry events
            tried = failures.filter((pl.col("asset") == name) & (pl.col("partition") == key))
            detail = {"message": tried["message"][-1]} if len(tried) else detail
        attempts = texts.filter(
            (pl.col("asset") == name) & (pl.col("partition").fill_null("") == key)
        )
        units.append({
            "asset": name, "partition": key, "outcome": kind.removeprefix("unit_"),
            "attempts": last.get("attempt"), "error": last.get("message") or detail.get("message"),
            "traceback": detail.get("traceback"),
            "logs": [
                {"attempt": a, "ts": _iso(ts), "logs": text}
                for a, ts, text in attempts.select("attempt", "ts", "logs").iter_rows()
            ],
        })  # fmt: skip
    logged = (
        events.filter(pl.col("kind") == LOGS)
        .group_by("asset", "partition", maintain_order=True)
        .agg(pl.len().alias("attempts"))
    )
    return {
        "run_id": run_id,
        "status": status,
        "units": units,
        "logged": [
            dict(zip(("asset", "partition", "attempts"), r, strict=True))
            for r in logged.head(200).rows()
        ],
        "logged_units": len(logged),
    }
