"""Keeping the lake's tables tidy: `vacuum` deletes what no version needs any more.

Two kinds of files pile up in an asset's table directory: files that a later commit replaced
(the previous versions' data, kept for time travel), and staged files that were never committed
(the attempts of units whose worker or node died). Delta's vacuum removes both once they are
older than the retention window. Outputs quarantined by a failed check
(`_lakeflow/quarantine/<asset>/<partition>/<run>/`) go too once all their files are that old.

>>> lf.vacuum(pipeline, retain_hours=168, dry_run=True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import polars as pl
import pyarrow.fs as pafs
from deltalake import DeltaTable

from lakeflow.define.assets import AssetDef
from lakeflow.define.graph import Pipeline
from lakeflow.errors import LakeError, RequestError
from lakeflow.lake import Lake
from lakeflow.lake.log import TableState
from lakeflow.plan.status import as_pipeline

__all__ = ["MIN_RETAIN_HOURS", "vacuum"]

MIN_RETAIN_HOURS = 1  # a unit's staged file waits for its commit, a run reads pinned versions

SCHEMA = {
    "asset": pl.String,
    "files": pl.Int64,
    "bytes": pl.Int64,
    "quarantined_files": pl.Int64,
    "dry_run": pl.Boolean,
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
