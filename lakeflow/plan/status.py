"""What the lake says about a pipeline: per-asset partition counts and check outcomes. Readers
only: the tables' logs and the event log, no controller."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl

from lakeflow.define.assets import AssetDef
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import STAMP_KEYS, FilePartitions, describe_stamp
from lakeflow.errors import DefinitionError
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.plan.planner import (
    DELETED,
    FRESH,
    MISSING,
    STALE,
    AssetSnapshot,
    default_plan,
    file_changed,
    partition_status,
)
from lakeflow.plan.snapshots import open_table, read_snapshots

__all__ = [
    "as_pipeline",
    "check_frame",
    "check_results",
    "file_status",
    "held_partitions",
    "status",
]


def as_pipeline(
    target: Pipeline | Iterable[AssetDef],
    lake: str | None,
    storage_options: Mapping[str, str] | None,
) -> Pipeline:
    """A pipeline from a Pipeline or a list of assets, on `lake` if given."""
    if isinstance(target, Pipeline):
        if lake is None and storage_options is None:
            return target
        return target.with_lake(lake or target.lake, storage_options or None)
    assets = list(target)
    if not assets:
        raise DefinitionError("no assets given")
    return Pipeline(assets, lake=lake or "./lake", storage_options=storage_options)


_NAMES = np.empty(4, dtype=object)  # partition_status code -> category
_NAMES[[FRESH, STALE, MISSING, DELETED]] = ["published", "stale", "missing", "deleted"]
_HELD = {
    "unit_failed": "failed",
    "unit_check_failed": "check_failed",
    "unit_blocked": "blocked",
    "unit_upstream_failed": "upstream_failed",
}
COUNTS = (
    "published", "stale", "failed", "check_failed", "blocked", "upstream_failed", "missing",
    "deleted",
)  # fmt: skip


def status(
    target: Pipeline | Iterable[AssetDef],
    *,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Per asset, each partition counted once: published (fresh), stale, failed, check_failed
    (a blocking check failed), blocked (held behind a failed check), upstream_failed (held
    behind a failed unit), missing, deleted (no data and nothing to build it from: deleted
    upstream, or emptied by its producer for a source); `code_changed`, the partitions holding
    data that lakeflow published with another code version than the asset's current one (not
    counted apart: they are also among the stale); `to_run`, the partitions a backfill with no
    `only` would run now (what `backfill --dry-run` counts: the stale and missing ones, and fresh
    ones that read a partition it would build); the table version and the last publish time.

    A partition whose last attempt failed, was held or blocked is counted as that, even when
    its older data is still fresh (but not once it was deleted upstream since). A source's
    partitions are published when they hold data, never stale. Reads the tables and the event
    log only, as the controller reads them.

    >>> lf.status(pipeline)
    """
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    states = {n: open_table(where, pipeline, n) for n in pipeline.assets}
    snapshots = read_snapshots(where, pipeline, pipeline.assets, states=states)
    flags = partition_status(pipeline, snapshots)
    plan = default_plan(pipeline, snapshots)
    to_run = plan.counts() if plan is not None else {}
    held = held_partitions(where)
    rows = []
    for name, codes in flags.items():
        parts = pipeline[name].partitions
        category = _NAMES[codes]
        for kind, keys in held.get(name, {}).items():
            index = parts.indices(keys) if parts.is_partitioned else np.zeros(len(keys), np.int64)
            index = index[index >= 0]
            category[index[codes[index] != DELETED]] = kind  # the last attempt's outcome
        published = [info.timestamp_ms for info in states[name].published.values()]
        counts = {k: int((category == k).sum()) for k in COUNTS}
        rows.append({
            "asset": name, "partitions": len(codes), **counts,
            "code_changed": _code_changed(pipeline[name], snapshots[name]),
            "to_run": to_run.get(name, 0),
            "version": states[name].version if states[name].exists else None,
            "last_publish": datetime.fromtimestamp(max(published) / 1000, UTC) if published else None,
        })  # fmt: skip
    counts_schema = dict.fromkeys(("partitions", *COUNTS, "code_changed", "to_run"), pl.Int64)
    return pl.DataFrame(
        rows,
        schema={
            "asset": pl.String,
            **counts_schema,
            "version": pl.Int64,
            "last_publish": pl.Datetime("us", "UTC"),
        },
    )


FILE_COLUMNS = {
    "asset": pl.String, "file": pl.String, "url": pl.String, "state": pl.String,
    "message": pl.String,
}  # fmt: skip


def file_status(
    target: Pipeline | Iterable[AssetDef],
    *,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """The files of `FilePartitions` assets that need a look, one row each: `failed` (or
    `check_failed`): its last unit failed, and `lakeflow up` leaves it until the file changes or
    it is materialized explicitly; `changed`: the file changed since the data of its partition
    was built (a re-run is due, or with `on_change="refuse"` was refused). The files' stamps
    are as the sensor last listed them.

    >>> lf.file_status(pipeline)
    """
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    names = [n for n, a in pipeline.assets.items() if isinstance(a.partitions, FilePartitions)]
    snapshots = read_snapshots(where, pipeline, names)
    rows = []
    for name in names:
        parts = pipeline[name].partitions
        assert isinstance(parts, FilePartitions)
        events = read_events(where, kinds=["unit_published", "unit_deleted", *_HELD], asset=name)
        last = events.group_by("partition", maintain_order=True).last()
        known = set(parts.keys())
        for key, kind, message in last.select("partition", "kind", "message").iter_rows():
            if kind in _HELD and key in known:
                url = parts.partition(parts.index(key)).url
                hint = (
                    f"; it waits for a change, or: lakeflow materialize PIPELINE --select {name} "
                )
                rows.append(
                    (name, key, url, _HELD[kind], f"{message or kind}{hint}--partitions {key}")
                )
        everything = np.arange(len(parts))
        verb = "re-run due" if parts.on_change == "rerun" else "refused (on_change='refuse')"
        for i in np.flatnonzero(file_changed(parts, snapshots[name], everything)).tolist():
            key = parts.key(i)
            stamps = {k: snapshots[name].inputs[k] for k in STAMP_KEYS}
            recorded = {k: int(v[i]) for k, v in stamps.items() if v[i] >= 0}
            now = describe_stamp(parts.stamp(key))
            message = (
                f"the file changed since: built from {describe_stamp(recorded)}, now {now}; {verb}"
            )
            rows.append((name, key, parts.partition(i).url, "changed", message))
    return pl.DataFrame(rows, schema=FILE_COLUMNS, orient="row")


def _code_changed(definition: AssetDef, snap: AssetSnapshot) -> int:
    """Partitions holding data that lakeflow published with another code version than the
    asset's current one (they are stale, unless their inputs were deleted upstream)."""
    if definition.source:
        return 0
    published = snap.present & (snap.code != "")
    return int((published & (snap.code != definition.code_version)).sum())


def held_partitions(
    lake: Lake, asset: str | None = None, *, cleared_by: Sequence[str] = ()
) -> dict[str, dict[str, list[str]]]:
    """asset -> {failed|check_failed|blocked|upstream_failed: partitions} whose latest unit
    outcome is that (a later publish or delete of the partition clears it, and a later event
    of a kind in `cleared_by`); of `asset` only when given."""
    kinds = ["unit_published", "unit_deleted", *cleared_by, *_HELD]
    events = read_events(lake, kinds=kinds, asset=asset)
    if events.is_empty():
        return {}
    last = (
        events.group_by("asset", "partition", maintain_order=True)
        .last()
        .filter(pl.col("kind").is_in(list(_HELD)))
    )
    out: dict[str, dict[str, list[str]]] = {}
    for asset, partition, kind in last.select("asset", "partition", "kind").iter_rows():
        out.setdefault(asset, {}).setdefault(_HELD[kind], []).append(partition or "")
    return out


def check_results(
    target: Pipeline | Iterable[AssetDef],
    *,
    asset: str | None = None,
    failed: bool = False,
    history: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Check outcomes per unit from the event log: the latest result of each check on each
    partition (every result with `history`), only the ones that did not pass with `failed`.
    Units whose output was quarantined show where the files went.

    >>> lf.check_results(pipeline, asset="raw_flights", failed=True)
    """
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    events = read_events(where, kinds=["check_result", "unit_check_failed"], asset=asset)
    if asset is not None:
        pipeline[asset]  # an unknown asset is an error, not an empty table
    results = check_frame(events)
    if not history:
        results = results.group_by("asset", "partition", "check", maintain_order=True).last()
    if failed:
        results = results.filter(pl.col("status") != "passed")
    return results.sort("ts")


def check_frame(events: pl.DataFrame) -> pl.DataFrame:
    """check_result events as rows, with the quarantine folder of units whose gate failed."""
    fields = {
        "check": pl.String, "severity": pl.String, "status": pl.String, "failing": pl.Int64,
        "scope": pl.String, "quarantine": pl.String,
    }  # fmt: skip
    decoded = pl.col("detail").str.json_decode(dtype=pl.Struct(fields)).alias("d")
    frame = events.with_columns(decoded).unnest("d")
    columns = [
        "ts",
        "run_id",
        "asset",
        "partition",
        "version",
        "check",
        "scope",
        "severity",
        "status",
        "failing",
        "rows",
        "message",
    ]
    results = frame.filter(pl.col("kind") == "check_result").select(columns)
    quarantined = frame.filter(pl.col("kind") == "unit_check_failed").select(
        "run_id", "asset", "partition", "quarantine"
    )
    return results.join(
        quarantined, on=["run_id", "asset", "partition"], how="left", nulls_equal=True
    )
