"""Keeping the lake's tables tidy: `vacuum` deletes what no version needs any more, `optimize`
compacts (or z-orders) partitions that hold many small files.

Two kinds of files pile up in an asset's table directory: files that a later commit replaced
(the previous versions' data, kept for time travel), and staged files that were never committed
(the attempts of units whose worker or node died). Delta's vacuum removes both once they are
older than the retention window. Outputs quarantined by a failed check
(`_lakeflow/quarantine/<asset>/<partition>/<run>/`) go too once all their files are that old.

An optimize commit changes no rows (`lakeflow.lake.compaction`): partitions keep the run, code
version and inputs they were published with, and nothing downstream becomes stale.

>>> lf.vacuum(pipeline, retain_hours=168, dry_run=True)
>>> lf.optimize(pipeline, select="flights_clean", partitions="2013-01-01..2013-01-31")
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import polars as pl
import pyarrow.fs as pafs
from deltalake import DeltaTable

from lakeflow.define.assets import AssetDef
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions, selects_all
from lakeflow.errors import LakeError, RequestError
from lakeflow.lake import Lake
from lakeflow.lake.compaction import check_zorder, compact
from lakeflow.lake.log import TableState
from lakeflow.lake.registry import load_registry
from lakeflow.plan.planner import Request, check_request
from lakeflow.plan.snapshots import open_table
from lakeflow.plan.status import as_pipeline

__all__ = ["MIN_RETAIN_HOURS", "optimize", "vacuum"]

MIN_RETAIN_HOURS = 1  # a unit's staged file waits for its commit, a run reads pinned versions

SCHEMA = {
    "asset": pl.String,
    "files": pl.Int64,
    "bytes": pl.Int64,
    "quarantined_files": pl.Int64,
    "dry_run": pl.Boolean,
}

OPTIMIZED = {
    "asset": pl.String,
    "partitions": pl.Int64,  # rewritten
    "files_before": pl.Int64,  # in the partitions looked at
    "files_after": pl.Int64,
    "version_before": pl.Int64,
    "version_after": pl.Int64,
    "retries": pl.Int64,  # commits tried again because a publish landed first
    "properties": pl.Boolean,  # the table properties its retention= asks for were set
}


def vacuum(
    target: Pipeline | Iterable[AssetDef],
    *,
    select: str | None = None,
    retain_hours: int = 168,
    dry_run: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Delete, per selected asset, the files no table version younger than `retain_hours` needs,
    the staged files older than that which no version ever took, and quarantined outputs older
    than that; one row per asset with how many files (and bytes) went from the table, and how
    many quarantined files went (or would go, with `dry_run`). Versions older than the window
    can no longer be read (time travel stops there). Sources are never touched."""
    if retain_hours < MIN_RETAIN_HOURS:
        raise RequestError(
            f"retain_hours={retain_hours} is under {MIN_RETAIN_HOURS} h: it could delete files "
            "that a unit has staged but not yet committed, or that a running unit is reading",
            hint=f"keep at least {MIN_RETAIN_HOURS} h (Delta's default is 168 h)",
        )
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    rows = []
    for name in pipeline.select(select):
        url = where.table_url(name)
        exists = TableState.load(where, url).exists
        files, size = _vacuum_table(where, url, retain_hours, dry_run) if exists else (0, 0)
        quarantined = _clear_quarantine(where, name, retain_hours, dry_run)
        if exists or quarantined:
            rows.append(
                {
                    "asset": name,
                    "files": files,
                    "bytes": size,
                    "quarantined_files": quarantined,
                    "dry_run": dry_run,
                }
            )
    return pl.DataFrame(rows, schema=SCHEMA)


def _clear_quarantine(lake: Lake, asset: str, retain_hours: int, dry_run: bool) -> int:
    """Delete the quarantine folders (one a unit attempt) of `asset` whose files are all older
    than the window; returns how many files they held."""
    root = lake.path(f"{lake.url}/_lakeflow/quarantine/{asset}")
    fs = lake.filesystem()
    try:
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as error:
        raise lake.unreachable(error) from error
    newest: dict[str, float] = {}
    counts: dict[str, int] = {}
    for info in found:
        if info.type != pafs.FileType.File:
            continue
        folder = info.path.rsplit("/", 1)[0]  # .../<asset>/<partition>/<run>
        stamp = info.mtime.timestamp() if info.mtime is not None else time.time()
        newest[folder] = max(newest.get(folder, 0.0), stamp)
        counts[folder] = counts.get(folder, 0) + 1
    cutoff = time.time() - retain_hours * 3600
    old = [folder for folder, stamp in newest.items() if stamp < cutoff]
    if not dry_run:
        for folder in old:
            try:
                fs.delete_dir(folder)
            except OSError as error:
                raise lake.unreachable(error) from error
    return sum(counts[folder] for folder in old)


def _vacuum_table(lake: Lake, url: str, retain_hours: int, dry_run: bool) -> tuple[int, int]:
    try:
        table = DeltaTable(url, storage_options=lake.delta_options())
        doomed = table.vacuum(
            retention_hours=int(retain_hours),
            dry_run=True,
            enforce_retention_duration=False,
            full=True,
        )
        infos = lake.filesystem().get_file_info([lake.path(lake.uri(url, p)) for p in doomed])
        size = sum(max(info.size or 0, 0) for info in infos)
        if dry_run or not doomed:
            return len(doomed), size
        gone = table.vacuum(
            retention_hours=int(retain_hours),
            dry_run=False,
            enforce_retention_duration=False,
            full=True,
        )
        return len(gone), size
    except OSError as error:
        raise lake.unreachable(error) from error
    except Exception as error:  # deltalake wraps I/O failures in its own types
        raise LakeError(f"vacuuming {url} failed: {str(error).splitlines()[0]}") from error


def optimize(
    target: Pipeline | Iterable[AssetDef],
    *,
    select: str | None = None,
    partitions: str | Sequence[str] | None = None,
    zorder: Sequence[str] | None = None,
    target_size: int | None = None,
    min_files: int = 2,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    wait: float = 30.0,
) -> pl.DataFrame:
    """Compact, per selected asset (default: every asset lakeflow builds; sources are never
    touched), the partitions of `partitions` (a spec as for `materialize`; default all) that
    hold at least `min_files` files smaller than the target size, into files of about
    `target_size` bytes (default: the asset's `lf.Compaction`, else the table's
    `delta.targetFileSize`, else 100 MiB). With `zorder` columns (default: the asset's
    `lf.Compaction(zorder=...)`), every such partition is rewritten sorted along their z-order
    curve. The table properties the asset's `retention=` asks for are set where they differ.

    One row per existing table: partitions rewritten, files before and after in the partitions
    looked at, versions before and after. Changes no rows: partitions keep what they were
    published with, consumers stay fresh, triggers do not fire. A bad request (unknown asset,
    bad partition, a column the table lacks) changes nothing. Waits up to `wait` seconds for
    another optimize of the same table to finish."""
    if isinstance(min_files, bool) or not isinstance(min_files, int) or min_files < 1:
        raise RequestError(f"min_files must be at least 1, got {min_files!r}")
    if target_size is not None and not (isinstance(target_size, int) and target_size > 0):
        raise RequestError(f"target_size must be a positive number of bytes, got {target_size!r}")
    pipeline = as_pipeline(target, lake, storage_options)
    names = [n for n in pipeline.select(select) if not pipeline[n].source]
    if not names:
        return pl.DataFrame(schema=OPTIMIZED)
    check_request(pipeline, Request(select=tuple(names), partitions=partitions))
    where = Lake(pipeline.lake, pipeline.storage_options)
    plans = []
    for name in names:  # everything checked before the first table is touched
        state = open_table(where, pipeline, name)
        if not state.exists:
            continue
        policy = pipeline.compaction_of(name)
        columns = tuple(zorder) if zorder is not None else (policy.zorder if policy else ())
        check_zorder(state, columns)
        size = target_size or (policy.target_size if policy else None)
        plans.append((name, state, _keys(where, pipeline, name, partitions), columns, size))
    rows = []
    for name, state, keys, columns, size in plans:
        done = compact(
            where, state, keys=keys, min_files=min_files, target_size=size, zorder=columns,
            properties=pipeline.table_properties(name), wait=wait,
        )  # fmt: skip
        rows.append({"asset": name, **{k: getattr(done, k) for k in OPTIMIZED if k != "asset"}})
    return pl.DataFrame(rows, schema=OPTIMIZED)


def _keys(
    lake: Lake, pipeline: Pipeline, name: str, spec: str | Sequence[str] | None
) -> list[str] | None:
    """The keys of `name` a partition spec names; None for all of them."""
    parts = pipeline[name].partitions
    if selects_all(spec) or not parts.is_partitioned:
        return None
    if isinstance(parts, FilePartitions):  # its keys are the files its sensor has seen
        parts.load(load_registry(lake, name))
    return parts.keys(parts.select(spec))
