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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import PostCommitHookProperties

from lakeflow.lake import Lake
from lakeflow.secrets import redact

__all__ = [
    "EVENTS_TABLE",
    "LOGS",
    "LOGS_TABLE",
    "Event",
    "EventLog",
    "event_detail",
    "read_events",
    "read_logs",
]

EVENTS_TABLE = "_lakeflow/events"
LOGS = "logs"  # the kind of a unit attempt's captured output; `detail` is {"logs": text}
LOGS_TABLE = "_lakeflow/logs"  # their text (the event log keeps {"chars", "lines", "table"})
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
    Each attempt whose code printed or logged anything also leaves a `logs` event (`attempt`,
    `detail` {"logs": its last 64 KiB of stdout, stderr and logging output, secrets redacted});
    its text is stored in `_lakeflow/logs` (`read_logs`), the event log keeps its size.
    Each group commit leaves a `table_committed` event (`version`, `seconds` the publish took,
    `detail` {"units": how many it published}).
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


def event_detail(text: str | None) -> dict[str, Any]:
    """An event's `detail` column read back as a dict ({} when empty or not a JSON object)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _table(events: Iterable[Event], secrets: frozenset[str] = frozenset()) -> pa.Table:
    """The events as an Arrow table; any of `secrets` in a message or detail is redacted."""
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
    if secrets:
        # in the JSON of `detail` a secret (or its repr) holding a quote, a backslash or
        # non-ASCII is escaped once more
        forms = {*secrets, *(repr(value)[1:-1] for value in secrets)}
        escaped = {*secrets, *(json.dumps(value)[1:-1] for value in forms)}
        rows["message"] = [redact(t, secrets) if t else t for t in rows["message"]]
        rows["detail"] = [redact(t, escaped) if t else t for t in rows["detail"]]
    return pa.table(rows, schema=SCHEMA)


class _Table:
    """One append-only Delta table of events: its handle, appends, and compaction."""

    def __init__(self, lake: Lake, url: str) -> None:
        self.lake = lake
        self.url = url
        self.handle: DeltaTable | None = None
        self.appended = 0  # files added since the last compaction (all of them, at first)

    def write(self, table: pa.Table) -> None:
        options = self.lake.delta_options()
        try:
            if self.handle is None and DeltaTable.is_deltatable(self.url, storage_options=options):
                self.handle = DeltaTable(self.url, storage_options=options)
                self.appended = len(self.handle.file_uris())
            if self.handle is None:
                write_deltalake(self.url, table, mode="append", storage_options=options,
                                configuration={"delta.checkpointInterval": "50"})  # fmt: skip
                self.handle = DeltaTable(self.url, storage_options=options)
                self.appended = 1
                return
            self.handle.update_incremental()
            write_deltalake(self.handle, table, mode="append")
            self.appended += 1
        except Exception:
            self.handle = None  # which opens the table afresh (it may be gone or replaced)
            raise

    def compact(self) -> None:
        if not DeltaTable.is_deltatable(self.url, storage_options=self.lake.delta_options()):
            return
        self.appended = 0
        try:
            handle = DeltaTable(self.url, storage_options=self.lake.delta_options())
            handle.optimize.compact(
                target_size=COMPACT_TARGET,
                post_commithook_properties=PostCommitHookProperties(create_checkpoint=True),
            )
            handle.vacuum(
                retention_hours=KEEP_MERGED_HOURS, dry_run=False, enforce_retention_duration=False
            )
        except Exception as error:  # the log stays correct, only less compact
            logger.warning("compacting the event log %s failed: %s", self.url, error)


def _pointer(event: Event) -> Event:
    """What the event log keeps of a `logs` event: how much was captured, not the text."""
    text = str((event.detail or {}).get("logs", ""))
    detail = {"chars": len(text), "lines": text.count("\n"), "table": LOGS_TABLE}
    return replace(event, detail=detail)


class EventLog:
    """Buffers events and appends them to the lake in batches (one Delta commit a flush). The
    text of `logs` events goes to its own table, `_lakeflow/logs` (written first), and the event
    log keeps a pointer: readers of runs and status never decode units' output."""

    def __init__(self, lake: Lake, *, compact_after: int = COMPACT_AFTER) -> None:
        self.lake = lake
        self.url = lake.table_url(EVENTS_TABLE)
        self.compact_after = compact_after
        self._buffer: list[Event] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._events = _Table(lake, self.url)
        self._logs = _Table(lake, lake.table_url(LOGS_TABLE))
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
            secrets = self.lake.secret_values()
            logs = [e for e in batch if e.kind == LOGS]
            try:
                if logs:  # a rewrite after a failure may repeat them: readers keep the last
                    self._logs.write(_table(logs, secrets))
                self._events.write(
                    _table([_pointer(e) if e.kind == LOGS else e for e in batch], secrets)
                )
            except Exception:
                with self._lock:  # keep them for the next flush
                    self._buffer = batch + self._buffer
                raise
            self.written = max(self.written, upto)
            return len(batch)

    def compact_due(self) -> bool:
        """Have enough flushes (one small file each) piled up since the last compaction?"""
        return max(self._events.appended, self._logs.appended) >= self.compact_after

    def compact(self) -> None:
        """Merge the log's small files and delete the files merged away more than a day ago, so
        that reading the log stays fast under a controller that runs for months. Not part of a
        flush: it takes hundreds of milliseconds, and a flush is on the path of every run's
        start. It works on its own handle, so flushes go on meanwhile (appends by other writers
        are safe); a failure only waits for the next turn."""
        with self._compact_lock:
            self._events.compact()
            self._logs.compact()


def read_events(
    lake: Lake,
    *,
    run_id: str | None = None,
    kinds: Iterable[str] | None = None,
    asset: str | None = None,
    run_ids: Iterable[str] | None = None,
) -> pl.DataFrame:
    """The event log (or a filtered part of it) as a DataFrame, oldest first; empty if none yet."""
    url = lake.table_url(EVENTS_TABLE)
    try:
        if not DeltaTable.is_deltatable(url, storage_options=lake.delta_options()):
            return pl.from_arrow(pa.Table.from_batches([], schema=SCHEMA))  # type: ignore[return-value]
        frame = pl.scan_delta(url, storage_options=lake.delta_options())
        if run_id is not None:
            frame = frame.filter(pl.col("run_id") == run_id)
        if run_ids is not None:
            frame = frame.filter(pl.col("run_id").is_in(list(run_ids)))
        if kinds is not None:
            frame = frame.filter(pl.col("kind").is_in(list(kinds)))
        if asset is not None:
            frame = frame.filter(pl.col("asset") == asset)
        return frame.sort("ts", maintain_order=True).collect()
    except OSError as error:
        raise lake.unreachable(error) from error


def read_logs(
    lake: Lake, *, run_id: str, asset: str | None = None, partition: str | None = None
) -> pl.DataFrame:
    """The captured output of a run's unit attempts (of one asset, one partition), oldest first:
    asset, partition, attempt, ts, logs (from `_lakeflow/logs`)."""
    url = lake.table_url(LOGS_TABLE)
    columns = ["asset", "partition", "attempt", "ts", "logs"]
    try:
        if not DeltaTable.is_deltatable(url, storage_options=lake.delta_options()):
            return pl.DataFrame(schema={"asset": pl.String, "partition": pl.String,
                                        "attempt": pl.Int32, "ts": pl.Datetime("us", "UTC"),
                                        "logs": pl.String})  # fmt: skip
        frame = pl.scan_delta(url, storage_options=lake.delta_options())
        frame = frame.filter(pl.col("run_id") == run_id)
        if asset is not None:
            frame = frame.filter(pl.col("asset") == asset)
        if partition is not None:
            frame = frame.filter(pl.col("partition").fill_null("") == partition)
        logs = pl.col("detail").str.json_path_match("$.logs").fill_null("").alias("logs")
        found = frame.with_columns(logs).select(columns).sort("ts", maintain_order=True).collect()
    except OSError as error:
        raise lake.unreachable(error) from error
    # a flush retried after a failure may have written an attempt twice: keep its last
    return found.unique(["asset", "partition", "attempt"], keep="last", maintain_order=True)
