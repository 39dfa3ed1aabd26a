"""Staging: a unit's output written as Parquet into its table's directory, not yet committed.

A staged file is invisible to every Delta reader until the controller commits an add action for
it, so a failed, crashed or quarantined unit never shows. The worker also computes the Delta
statistics (row count, min/max, null counts) from the Parquet footer so that readers can skip
files, and normalizes column types to ones Delta stores faithfully.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import Schema as DeltaSchema

from lakeflow.errors import SchemaError, storage_failure
from lakeflow.lake import Lake

__all__ = ["StagedFile", "check_schema", "delta_type_map", "normalize_output", "stage_output"]

_MAX_STAT_STRING = 64  # writers truncate longer string statistics: such a max is no bound
_STATS_COLUMNS = 32  # Delta's default delta.dataSkippingNumIndexedCols


class StagedFile(NamedTuple):
    """A Parquet file written under a table root and waiting to be committed (a tuple on the wire)."""

    path: str  # relative to the table root
    size: int
    rows: int
    stats: str  # Delta stats JSON
    modification_time: int  # ms


Frame = pl.DataFrame | pl.LazyFrame


def _to_frame(output: Any, where: str) -> Frame:
    """A polars frame, eager outputs kept eager (written directly) and lazy ones lazy (streamed)."""
    if isinstance(output, pl.LazyFrame | pl.DataFrame):
        return output
    if isinstance(output, pa.Table | pa.RecordBatch):
        return pl.DataFrame(pl.from_arrow(output))
    kind = type(output).__module__ + "." + type(output).__qualname__
    if type(output).__module__.startswith("pandas"):
        return pl.from_pandas(output)
    raise SchemaError(
        f"{where} returned {kind}",
        hint="return a polars DataFrame or LazyFrame, or a pyarrow Table",
    )


def normalize_output(output: Any, *, where: str, column: str | None, key: str) -> Frame:
    """The output as a polars frame of Delta-faithful types, without the partition column.

    Unsigned integers widen to the next signed type, nanosecond and millisecond timestamps become
    microseconds (Delta's unit), zoned timestamps become UTC, categoricals become strings. Types
    Delta cannot store (time, duration, untyped nulls, objects) are refused by name.
    """
    frame = _to_frame(output, where)
    schema = frame.collect_schema()
    casts: list[pl.Expr] = []
    widen: dict[Any, Any] = {
        pl.UInt8: pl.Int16,
        pl.UInt16: pl.Int32,
        pl.UInt32: pl.Int64,
        pl.UInt64: pl.Int64,
    }
    for name, dtype in schema.items():
        if name == column:
            continue
        if dtype in widen:
            casts.append(pl.col(name).cast(widen[dtype]))
        elif isinstance(dtype, pl.Datetime):
            expr = pl.col(name)
            if dtype.time_zone not in (None, "UTC"):
                expr = expr.dt.convert_time_zone("UTC")
            if dtype.time_unit != "us":
                expr = expr.dt.cast_time_unit("us")
            if dtype.time_unit != "us" or dtype.time_zone not in (None, "UTC"):
                casts.append(expr.alias(name))
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            casts.append(pl.col(name).cast(pl.String))
        elif isinstance(dtype, pl.Time | pl.Duration | pl.Null | pl.Object) or dtype == pl.Float16:
            raise SchemaError(
                f"{where}: column {name!r} has type {dtype}, which a Delta table cannot store",
                hint="cast it (e.g. pl.col(name).cast(pl.Int64)) before returning",
            )
    if casts:
        frame = frame.with_columns(casts)
    if column and column in schema:
        # a null is another key too: dropping the column would publish its row under this key
        value = pl.col(column)
        mismatched = (
            frame.lazy()
            .filter(value.is_null() | (value.cast(pl.String) != key))
            .select(pl.len())
            .collect()
            .item()
        )
        if mismatched:
            raise SchemaError(
                f"{where}: column {column!r} is the partition column but holds nulls or values "
                f"other than {key!r}",
                hint="drop it, or give the partitions another column name (column='...')",
            )
        frame = frame.drop(column)
    return frame


def delta_type_map(schema: pa.Schema) -> dict[str, str]:
    """Column -> Delta type name, the level at which table and output schemas are compared."""
    return dict(_delta_types(schema))


@lru_cache(maxsize=256)
def _delta_types(schema: pa.Schema) -> tuple[tuple[str, str], ...]:
    try:
        delta = DeltaSchema.from_arrow(schema)
    except Exception as error:
        raise SchemaError(f"schema cannot be stored in Delta: {error}".splitlines()[0]) from error
    return tuple((f.name, _type_name(f.type)) for f in delta.fields)


def _type_name(delta_type: Any) -> str:
    name = getattr(delta_type, "type", None)  # primitive types: "long", "string", ...
    return name if isinstance(name, str) else str(delta_type)


def polars_to_arrow_schema(schema: pl.Schema) -> pa.Schema:
    return _arrow_schema(tuple(schema.items()))


@lru_cache(maxsize=256)
def _arrow_schema(columns: tuple[tuple[str, Any], ...]) -> pa.Schema:
    return pl.DataFrame(schema=dict(columns)).to_arrow().schema


def schema_id(schema: pa.Schema, column: str | None) -> str:
    """A fingerprint of a schema at the Delta level, without the partition column and the order."""
    return ";".join(
        sorted(f"{name}:{kind}" for name, kind in _delta_types(schema) if name != column)
    )


def check_schema(
    output: pa.Schema, table: pa.Schema | None, *, where: str, column: str | None
) -> list[str]:
    """Compare an output schema with its table's; returns the table's column order.

    Raises `SchemaError` naming every column that is missing, extra or of another type.
    """
    produced = delta_type_map(output)
    if table is None:
        return list(produced)
    expected = {k: v for k, v in delta_type_map(table).items() if k != column}
    problems = []
    missing = [c for c in expected if c not in produced]
    extra = [c for c in produced if c not in expected]
    if missing:
        problems.append(f"missing columns {', '.join(missing)}")
    if extra:
        problems.append(f"extra columns {', '.join(extra)}")
    for name in expected:
        if name in produced and produced[name] != expected[name]:
            problems.append(
                f"column {name}: table has {expected[name]}, output has {produced[name]}"
            )
    if problems:
        raise SchemaError(
            f"{where}: output does not match the existing table: " + "; ".join(problems),
            hint="change the function, or drop the table to start over with a new schema",
        )
    return list(expected)


def _stat_value(value: Any, *, upper: bool) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, str):
        return value if len(value) < _MAX_STAT_STRING else None
    if isinstance(value, dt.datetime):
        micros = value.microsecond % 1000
        if micros and upper:  # statistics carry milliseconds: round a maximum up
            value = value + dt.timedelta(microseconds=1000 - micros)
        value = value.replace(microsecond=value.microsecond - value.microsecond % 1000)
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(value, dt.date):
        return value.isoformat()
    return None  # decimals, binary: no statistics rather than wrong ones


def delta_stats(metadata: pq.FileMetaData) -> str:
    """Delta file statistics from a Parquet footer, only for values that are exact bounds."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    schema = metadata.schema.to_arrow_schema()
    leaves = {metadata.schema.column(i).path: i for i in range(len(metadata.schema))}
    for name in schema.names[:_STATS_COLUMNS]:
        index = leaves.get(name)
        if index is None:  # nested column: no statistics
            continue
        low = high = None
        null_count, complete = 0, True
        for g in range(metadata.num_row_groups):
            stats = metadata.row_group(g).column(index).statistics
            if stats is None:
                complete = False
                break
            null_count += stats.null_count or 0
            if stats.has_min_max:
                lo, hi = stats.min, stats.max
                low = lo if low is None or lo < low else low
                high = hi if high is None or hi > high else high
            elif (stats.num_values or 0) > 0:
                complete = False
        if not complete:
            continue
        nulls[name] = null_count
        lo_value, hi_value = _stat_value(low, upper=False), _stat_value(high, upper=True)
        if low is not None and lo_value is not None and hi_value is not None:
            mins[name], maxs[name] = lo_value, hi_value
    return json.dumps(
        {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls},
        separators=(",", ":"),
    )


def stage_output(
    frame: Frame,
    *,
    lake: Lake,
    table_url: str,
    column: str | None,
    key: str,
    tag: str,
    order: list[str] | None = None,
    compression: Any = "snappy",  # one of polars' ParquetCompression names
) -> StagedFile:
    """Write `frame` as one Parquet file under the partition's directory, uncommitted.

    `tag` (run id and attempt) goes into the file name so that staged leftovers can be traced.
    """
    directory = f"{column}={key}/" if column else ""
    relative = f"{directory}part-{tag}-{uuid.uuid4().hex[:12]}.parquet"
    uri = lake.uri(table_url, relative)
    if order is not None:
        frame = frame.select(order)
    options = lake.delta_options() if lake.is_s3 else None
    if not lake.is_s3:
        os.makedirs(os.path.dirname(uri), exist_ok=True)
    try:
        if isinstance(frame, pl.DataFrame):  # already in memory: write it, no streaming engine
            frame.write_parquet(
                uri, storage_options=options, compression=compression, statistics=True
            )
        else:  # lazy: stream it, whatever its size
            frame.sink_parquet(
                uri, storage_options=options, compression=compression, statistics=True
            )
    except Exception as error:
        _discard(lake, uri)  # a partial file holds the space the event log and retries need
        what = storage_failure(error)
        if what is None:
            raise  # the user's lazy query failed: theirs to see
        table = table_url.removeprefix(f"{lake.url}/")
        raise lake.storage_failed(what, writing=f"{table}/{relative}") from error
    fs = lake.filesystem()
    path = lake.path(uri)
    with fs.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
        size = handle.size()
    return StagedFile(
        relative, size, metadata.num_rows, delta_stats(metadata), int(time.time() * 1000)
    )


def _discard(lake: Lake, uri: str) -> None:
    """Remove what a failed write left, if anything; a failure to do so is not the news."""
    try:
        lake.filesystem().delete_file(lake.path(uri))
    except Exception:
        pass


def quarantine_files(
    lake: Lake, table_url: str, paths: list[str], asset: str, key: str, run_id: str
) -> str:
    """Move staged files that failed a blocking check out of the table, to
    `_lakeflow/quarantine/<asset>/<partition>/<run>/`, kept for inspection; returns that folder."""
    folder = f"{lake.url}/_lakeflow/quarantine/{asset}/{key or '_all'}/{run_id}"
    fs = lake.filesystem()
    if not lake.is_s3:
        fs.create_dir(lake.path(folder), recursive=True)
    for relative in paths:
        fs.move(
            lake.path(lake.uri(table_url, relative)),
            lake.path(f"{folder}/{relative.rsplit('/', 1)[-1]}"),
        )
    return folder


def partition_values(column: str | None, key: str) -> Mapping[str, str | None]:
    return {column: key} if column else {}
