"""Keeping the lake's tables tidy: `vacuum` deletes what no version needs any more.

Two kinds of files pile up in an asset's table directory: files that a later commit replaced
(the previous versions' data, kept for time travel), and staged files that were never committed
(the attempts of units whose worker or node died, or whose blocking check failed before the
quarantine move). Delta's vacuum removes both once they are older than the retention window.

>>> lf.vacuum(pipeline, retain_hours=168, dry_run=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl
from deltalake import DeltaTable

from .assets import AssetDef
from .errors import LakeError, RequestError
from .graph import Pipeline
from .lake import Lake
from .lake.log import TableState
from .status import as_pipeline

__all__ = ["MIN_RETAIN_HOURS", "vacuum"]

MIN_RETAIN_HOURS = 1  # a unit's staged file waits for its commit, a run reads pinned versions

SCHEMA = {"asset": pl.String, "files": pl.Int64, "bytes": pl.Int64, "dry_run": pl.Boolean}


def vacuum(
    target: Pipeline | Iterable[AssetDef],
    *,
    select: str | None = None,
    retain_hours: int = 168,
    dry_run: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Delete, per selected asset, the files no table version younger than `retain_hours` needs
    and the staged files older than that which no version ever took; one row per asset with how
    many files (and bytes) went, or would go with `dry_run`. Versions older than the window can
    no longer be read (time travel stops there). Sources are never touched."""
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
        if not TableState.load(where, url).exists:
            continue
        files, size = _vacuum_table(where, url, retain_hours, dry_run)
        rows.append({"asset": name, "files": files, "bytes": size, "dry_run": dry_run})
    return pl.DataFrame(rows, schema=SCHEMA)


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
