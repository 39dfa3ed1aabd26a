"""The event log: run and unit events, appended in batches to the Delta table `_lakeflow/events`.

Anyone can query it with polars or DuckDB. Records have a fixed, versioned schema; field names
never change (add fields, bump `SCHEMA_VERSION`). The facts that must never be lost (what was
published) live in the asset tables' own commits; the controller repairs missing `unit_published`
events from them after a crash, so the log only has to be good, not transactional.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import PostCommitHookProperties

from lakeflow.lake import Lake

__all__ = ["EVENTS_TABLE", "Event", "EventLog", "read_events"]

EVENTS_TABLE = "_lakeflow/events"
SCHEMA_VERSION = 1
COMPACT_AFTER = 200  # flushes (one small file each) between two compactions of the log
COMPACT_TARGET = 64 * 2**20
KEEP_MERGED_HOURS = 24  # merged-away files stay this long for readers of older versions

logger = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("run_id", pa.string()),
        ("kind", pa.string()),
        ("asset", pa.string()),
        ("partition", pa.string()),
        ("attempt", pa.int32()),
        ("version", pa.int64()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("message", pa.string()),
        ("detail", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. `detail` is free-form JSON (tracebacks, requests, counts).

    A unit ends in one of: `unit_published` (`version`: the commit), `unit_deleted` (its inputs
    were deleted upstream, so the commit at `version` removed the partition's data),
    `unit_failed`, `unit_upstream_failed`, `unit_check_failed`, `unit_blocked`, `unit_cancelled`.
    """

    run_id: str
    kind: str
    asset: str | None = None
    partition: str | None = None
    attempt: int | None = None
    version: int | None = None
    rows: int | None = None
    bytes: int | None = None
    seconds: float | None = None
    message: str | None = None
    detail: Mapping[str, Any] | None = None
    ts: float = field(default_factory=time.time)


def _table(events: Iterable[Event]) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for e in events:
        rows["schema_version"].append(SCHEMA_VERSION)
        rows["ts"].append(datetime.fromtimestamp(e.ts, UTC))
        rows["run_id"].append(e.run_id)
        rows["kind"].append(e.kind)
        rows["asset"].append(e.asset)
        rows["partition"].append(e.partition)
        rows["attempt"].append(e.attempt)
        rows["version"].append(e.version)
        rows["rows"].append(e.rows)
        rows["bytes"].append(e.bytes)
        rows["seconds"].append(e.seconds)
        rows["message"].append(e.message)
        rows["detail"].append(json.dumps(e.detail, default=str) if e.detail is not None else None)
    return pa.table(rows, schema=SCHEMA)


class EventLog:
    """Buffers events and appends them to the lake in batches (one Delta commit a flush)."""

    def __init__(self, lake: Lake, *, compact_after: int = COMPACT_AFTER) -> None:
        self.lake = lake
        self.url = lake.table_url(EVENTS_TABLE)
        self.compact_after = compact_after
        self._buffer: list[Event] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._handle: DeltaTable | None = None
        self._appended = 0  # files added since the last compaction (all of them, at first)
        self._emitted = 0  # events emitted so far ...
        self.written = 0  # ... and how many of the first of them are in the lake

    def emit(self, event: Event) -> int:
        """Buffer `event`; returns its number (it is in the lake once `written` reaches it)."""
        with self._lock:
            self._buffer.append(event)
            self._emitted += 1
            return self._emitted

    def extend(self, events: Iterable[Event]) -> None:
        with self._lock:
            batch = list(events)
            self._buffer.extend(batch)
            self._emitted += len(batch)

    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered; returns how many events were written. Thread-safe."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                upto = self._emitted - len(self._buffer)
            if not batch:
                return 0
            try:
                self._write(_table(batch))
            except Exception:
                with self._lock:  # keep them for the next flush
                    self._buffer = batch + self._buffer
                self._handle = None  # which opens the table afresh (it may be gone or replaced)
                raise
            self.written = max(self.written, upto)
            return len(batch)

    def _write(self, table: pa.Table) -> None:
        if self._handle is None and DeltaTable.is_deltatable(
            self.url, storage_options=self.lake.delta_options()
        ):
            self._handle = DeltaTable(self.url, storage_options=self.lake.delta_options())
            self._appended = len(self._handle.file_uris())
        if self._handle is None:
            write_deltalake(
                self.url,
                table,
                mode="append",
                storage_options=self.lake.delta_options(),
                configuration={"delta.checkpointInterval": "50"},
            )
            self._handle = DeltaTable(self.url, storage_options=self.lake.delta_options())
            self._appended = 1
            return
        self._handle.update_incremental()
        write_deltalake(self._handle, table, mode="append")
        self._appended += 1

    def compact_due(self) -> bool:
        """Have enough flushes (one small file each) piled up since the last compaction?"""
        return self._appended >= self.compact_after

    def compact(self) -> None:
        """Merge the log's small files and delete the files merged away more than a day ago, so
        that reading the log stays fast under a controller that runs for months. Not part of a
        flush: it takes hundreds of milliseconds, and a flush is on the path of every run's
        start. It works on its own handle, so flushes go on meanwhile (appends by other writers
        are safe); a failure only waits for the next turn."""
        with self._compact_lock:
            if not DeltaTable.is_deltatable(self.url, storage_options=self.lake.delta_options()):
                return
            self._appended = 0
            try:
                handle = DeltaTable(self.url, storage_options=self.lake.delta_options())
                handle.optimize.compact(
                    target_size=COMPACT_TARGET,
                    post_commithook_properties=PostCommitHookProperties(create_checkpoint=True),
                )
                handle.vacuum(
                    retention_hours=KEEP_MERGED_HOURS,
                    dry_run=False,
                    enforce_retention_duration=False,
                )
            except Exception as error:  # the log stays correct, only less compact
                logger.warning("compacting the event log %s failed: %s", self.url, error)


def read_events(
    lake: Lake,
    *,
    run_id: str | None = None,
    kinds: Iterable[str] | None = None,
    asset: str | None = None,
) -> pl.DataFrame:
    """The event log (or a filtered part of it) as a DataFrame, oldest first; empty if none yet."""
    url = lake.table_url(EVENTS_TABLE)
    try:
        if not DeltaTable.is_deltatable(url, storage_options=lake.delta_options()):
            return pl.from_arrow(pa.Table.from_batches([], schema=SCHEMA))  # type: ignore[return-value]
        frame = pl.scan_delta(url, storage_options=lake.delta_options())
        if run_id is not None:
            frame = frame.filter(pl.col("run_id") == run_id)
        if kinds is not None:
            frame = frame.filter(pl.col("kind").is_in(list(kinds)))
        if asset is not None:
            frame = frame.filter(pl.col("asset") == asset)
        return frame.sort("ts", maintain_order=True).collect()
    except OSError as error:
        raise lake.unreachable(error) from error
