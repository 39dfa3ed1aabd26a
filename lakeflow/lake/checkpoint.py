"""Checkpoints: a table read from its newest Delta checkpoint instead of its whole log, and
lakeflow's own checkpoint of what it knows per partition, which Delta's does not keep.

A Delta checkpoint (`_delta_log/NNN.checkpoint.parquet`) holds the table's files, metadata and
application transactions as of version NNN, but not the commits' `commitInfo`, where lakeflow
records what each partition was built from. And when Delta writes a checkpoint it deletes the
commits older than the table's log retention (30 days by default): without a record of its
own, lakeflow would forget how the partitions of those commits were built and count them stale.
So when one of its commits leaves a new Delta checkpoint, lakeflow writes beside the table's
log `_lakeflow/checkpoints/VVV.parquet`: per partition key the version that last touched it
and, when that commit was lakeflow's, what it recorded (one row a key; the record's columns
repeat within a commit's group and are stored once by Parquet's dictionary encoding). A reader
then takes the files from the Delta checkpoint, the partitions' history from lakeflow's, and
reads only the JSON commits after them, each once (`log.TableState.load`).

Plain data in and out: this module knows nothing of `TableState`.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lakeflow.lake import Lake
from lakeflow.lake.registry import write_atomic

__all__ = [
    "CHECKPOINTS_DIR",
    "DeltaCheckpoint",
    "PartitionCheckpoint",
    "Record",
    "last_checkpoint_version",
    "newest_checkpoint",
    "read_delta_checkpoint",
    "read_partition_checkpoint",
    "write_partition_checkpoint",
]

CHECKPOINTS_DIR = (
    "_lakeflow/checkpoints"  # under the table's root: Delta's vacuum leaves "_" folders
)
FORMAT = 1
ADD_FIELDS = ["add.path", "add.size", "add.partitionValues"]  # read as path, size, ...
KEEP = 2  # partition checkpoints kept: a reader that listed the older one can still read it
_CLASSIC = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("touched", pa.int64()),  # version of the commit that last touched the partition
        ("group", pa.int32()),  # its lakeflow record (rows of one record share it); null: none
        ("version", pa.int64()),  # the record: the commit that published the partition ...
        ("run", pa.string()),
        ("code", pa.string()),
        ("inputs", pa.string()),  # ... upstream table -> version read, as JSON
        ("timestamp_ms", pa.int64()),
    ]
)

Record = tuple[int, str, str, dict[str, int], int]  # version, run, code, inputs, timestamp_ms


@dataclass(frozen=True)
class DeltaCheckpoint:
    """What a Delta checkpoint says of its table."""

    version: int
    table_id: str
    partition_columns: tuple[str, ...]
    schema_json: str
    files: dict[str, dict[str, int]]  # partition key of the first partition column -> {path: size}
    transactions: dict[str, int]  # application id -> version


@dataclass(frozen=True)
class PartitionCheckpoint:
    """lakeflow's record of a table's partitions as of `version`: each key's last touching
    version, and an index into `records` when that commit was lakeflow's."""

    version: int
    keys: list[str]
    touched: list[int]
    groups: list[int | None]
    records: dict[int, Record]  # group -> what lakeflow recorded


def newest_checkpoint(names: Iterable[str]) -> tuple[int, list[str]] | None:
    """The newest complete classic checkpoint in a `_delta_log` listing (one file, or every
    part of a multi-part one): its version and file names. A v2 checkpoint (named by a UUID)
    is not one."""
    parts: dict[tuple[int, int], dict[int, str]] = {}
    for name in names:
        found = _CLASSIC.match(name)
        if found is None:
            continue
        version, part, total = int(found[1]), int(found[2] or 1), int(found[3] or 1)
        parts.setdefault((version, total), {})[part] = name
    complete = [(v, t) for (v, t), p in parts.items() if len(p) == t]
    if not complete:
        return None
    version, total = max(complete)
    return version, [parts[version, total][i] for i in range(1, total + 1)]


def last_checkpoint_version(lake: Lake, url: str) -> int | None:
    """The version Delta's `_last_checkpoint` hint names (None without one)."""
    raw = lake.read_bytes(f"{url}/_delta_log/_last_checkpoint")
    try:
        return int(json.loads(raw)["version"]) if raw else None
    except (ValueError, KeyError, TypeError):
        return None


def read_delta_checkpoint(
    lake: Lake, url: str, version: int, names: Sequence[str]
) -> DeltaCheckpoint | None:
    """The files, metadata and transactions of a classic checkpoint; None for one this reader
    leaves to deltalake: one that points to sidecar files (v2 checkpoints), and a table with
    column mapping (its partition values are keyed by physical column names)."""
    adds, others = [], []
    for name in names:
        path = lake.path(f"{url}/_delta_log/{name}")
        try:
            present = set(pq.read_schema(path, filesystem=lake.filesystem()).names)
            if "add" in present:  # only the fields needed: a file's stats are most of its bytes
                adds.append(pq.read_table(path, columns=ADD_FIELDS, filesystem=lake.filesystem()))
            wanted = [c for c in ("metaData", "txn", "sidecar") if c in present]
            others.append(pq.read_table(path, columns=wanted, filesystem=lake.filesystem()))
        except pa.ArrowInvalid:  # not Parquet we can read: deltalake may, or says why not
            return None
        except OSError as error:
            raise lake.unreachable(error) from error
    frame = pa.concat_tables(others, promote_options="permissive")
    if "sidecar" in frame.column_names and frame.column("sidecar").null_count < len(frame):
        return None
    meta = _first(frame.column("metaData"))
    if meta is None:
        return None
    configuration = dict(meta.get("configuration") or ())
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        return None
    partition_columns = tuple(meta.get("partitionColumns") or ())
    column = partition_columns[0] if partition_columns else None
    return DeltaCheckpoint(
        version,
        meta["id"],
        partition_columns,
        meta["schemaString"],
        _files(pa.concat_tables(adds) if adds else None, column),
        _transactions(frame),
    )


def _first(column: pa.ChunkedArray) -> dict[str, Any] | None:
    present = column.drop_null()
    return present[0].as_py() if len(present) else None


def _files(adds: pa.Table | None, column: str | None) -> dict[str, dict[str, int]]:
    """Partition key -> {path: size} of the `add` rows (the nested fields read: `ADD_FIELDS`)."""
    files: dict[str, dict[str, int]] = {}
    if adds is None:
        return files
    adds = adds.filter(pc.is_valid(adds.column("path")))  # the rows of other actions: null
    paths = adds.column("path").to_pylist()
    sizes = adds.column("size").to_pylist()
    if column:
        values = pc.map_lookup(adds.column("partitionValues"), column, "first")
        keys = values.fill_null("").to_pylist()
    else:
        keys = [""] * len(paths)
    for key, path, size in zip(keys, paths, sizes, strict=True):
        files.setdefault(key, {})[path] = size
    return files


def _transactions(frame: pa.Table) -> dict[str, int]:
    if "txn" not in frame.column_names:
        return {}
    txns = frame.column("txn").drop_null()
    apps = pc.struct_field(txns, "appId").to_pylist()
    versions = pc.struct_field(txns, "version").to_pylist()
    return dict(zip(apps, versions, strict=True))


def _folder(url: str) -> str:
    return f"{url}/{CHECKPOINTS_DIR}"


def write_partition_checkpoint(
    lake: Lake, url: str, table_id: str, checkpoint: PartitionCheckpoint
) -> None:
    """Write lakeflow's checkpoint of the table's partitions (replacing none: one file a
    version), then delete all but the newest `KEEP`."""
    records = checkpoint.records
    count = max(records, default=-1) + 1
    groups = pa.array(checkpoint.groups, pa.int32())

    def per_row(field: int, kind: pa.DataType, show: Any = None) -> pa.Array:
        """One field of the records, per group, then taken for each row by its group."""
        values = [records[g][field] if g in records else None for g in range(count)]
        if show is not None:
            values = [show(v) if v is not None else None for v in values]
        return pc.take(pa.array(values, kind), groups)

    about = {"format": FORMAT, "table": table_id, "version": checkpoint.version}
    table = pa.table(
        {
            "key": pa.array(checkpoint.keys, pa.string()),
            "touched": pa.array(checkpoint.touched, pa.int64()),
            "group": groups,
            "version": per_row(0, pa.int64()),
            "run": per_row(1, pa.string()),
            "code": per_row(2, pa.string()),
            "inputs": per_row(3, pa.string(), lambda v: json.dumps(v, sort_keys=True)),
            "timestamp_ms": per_row(4, pa.int64()),
        },
        schema=_SCHEMA.with_metadata({"lakeflow": json.dumps(about)}),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    folder = _folder(url)
    write_atomic(lake, f"{folder}/{checkpoint.version:020d}.parquet", sink.getvalue())
    versions = _versions(lake, folder)
    older = [v for v in versions if v < checkpoint.version]
    newer = [v for v in versions if v > checkpoint.version]  # a dropped table's, made again here
    for version in older[: max(0, len(older) - (KEEP - 1))] + newer:
        try:
            lake.filesystem().delete_file(lake.path(f"{folder}/{version:020d}.parquet"))
        except FileNotFoundError:
            continue  # another writer pruned it
        except OSError as error:
            raise lake.unreachable(error) from error


def _versions(lake: Lake, folder: str) -> list[int]:
    return sorted(
        int(name[:20])
        for name in lake.list_dir(folder)
        if name.endswith(".parquet") and len(name) == 28 and name[:20].isdigit()
    )


def read_partition_checkpoint(
    lake: Lake, url: str, table_id: str, newest: int
) -> PartitionCheckpoint | None:
    """The newest of lakeflow's partition checkpoints of this table (`table_id`: not of a
    table that was dropped and created again at the same place) at `newest` or before; None if
    there is none (or it cannot be read: the log is read instead)."""
    folder = _folder(url)
    for version in reversed(_versions(lake, folder)):
        if version > newest:
            continue
        raw = lake.read_bytes(f"{folder}/{version:020d}.parquet")
        if raw is None:  # pruned meanwhile by a writer of a newer one
            continue
        try:
            table = pq.read_table(pa.BufferReader(raw))
            about = json.loads((table.schema.metadata or {}).get(b"lakeflow", b"{}"))
        except (pa.ArrowException, ValueError):
            return None
        if about.get("format") != FORMAT or about.get("table") != table_id:
            continue  # another table's (dropped, made again here) or another format's
        return _partition_checkpoint(version, table)
    return None


def _partition_checkpoint(version: int, table: pa.Table) -> PartitionCheckpoint:
    frame = pl.from_arrow(table.drop_columns(["key", "touched"]))
    assert isinstance(frame, pl.DataFrame)
    first = frame.drop_nulls("group").unique("group", keep="first")
    records = {
        group: (published, run, code, json.loads(inputs), stamp)
        for group, published, run, code, inputs, stamp in first.iter_rows()
    }
    return PartitionCheckpoint(
        version,
        table.column("key").to_pylist(),
        table.column("touched").to_pylist(),
        table.column("group").to_pylist(),
        records,
    )
