"""What lakeflow knows of a table, read from its Delta log.

For each partition: the files that hold it now, the version of the last commit that touched it,
and — when that commit was ours — what it was built from (run, code version, input versions),
which lakeflow writes into the commit's metadata. That is the whole of asset state: there is no
other database. A `TableState` is loaded once and then moved forward commit by commit, reading
only the new `_delta_log/NNN.json` files, which also tells a watcher exactly which partitions each
commit added or removed.

A commit that changes no rows (OPTIMIZE: compaction or z-order, every add and remove marked
`dataChange: false`) moves the files and touches nothing: its partitions keep what they were
published with, and no consumer, trigger or lineage sees a change.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import PostCommitHookProperties

from lakeflow.errors import LakeError
from lakeflow.lake import Lake
from lakeflow.lake.checkpoint import (
    PartitionCheckpoint,
    Record,
    last_checkpoint_version,
    newest_checkpoint,
    read_delta_checkpoint,
    read_partition_checkpoint,
    write_partition_checkpoint,
)

__all__ = [
    "APP_ID", "GAP_OPERATION", "NO_CLEANUP", "Commit", "Published", "TableState", "cleaned_past", "commit_path",
    "gap_commit", "parse_commit",
]  # fmt: skip

APP_ID = "lakeflow"  # application transaction id of lakeflow's own commits
CHECKPOINT_ACTIONS = 100_000  # file actions since a table's last checkpoint before another
# lakeflow's commits leave Delta's log cleanup to `TableState.checkpoint`, which cleans up only
# once lakeflow's own checkpoint covers what the cleaned commits recorded
NO_CLEANUP = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
logger = logging.getLogger(__name__)
METADATA_KEY = "lakeflow"
METADATA_VERSION = 1


def commit_path(table_url: str, version: int) -> str:
    return f"{table_url}/_delta_log/{version:020d}.json"


GAP_CHECK_SECONDS = 5.0  # how often a follower whose next commit is missing asks why
GAP_OPERATION = "LAKEFLOW LOG GAP"  # the operation of a commit standing for cleaned-up ones


def cleaned_past(lake: Lake, url: str, version: int) -> bool:
    """After commit `version + 1` was not found: were the commits after `version` cleaned up?
    Delta removes old commits only behind a checkpoint, so they were when the table's newest
    checkpoint is past `version` (its commit was written, then removed). A follower that fell
    that far behind (log retention passed while it slept) must read the table afresh: waiting
    for a commit that will never appear would miss every later one."""
    raw = lake.read_bytes(f"{url}/_delta_log/_last_checkpoint")
    if raw is None:
        return False
    try:
        return int(json.loads(raw)["version"]) > version
    except (ValueError, KeyError, TypeError):
        return False


def gap_commit(state: TableState, after: int) -> Commit:
    """What a follower reports for commits it could not read (cleaned up before it came to
    them, after version `after`): one commit at the state's version that touched every
    partition the state says changed after `after` (all of them when that is not known), with
    the table's metadata (caches start again)."""
    with state.lock:
        changed = [key for key, version in state.touched.items() if version > after]
        added = {key: tuple(state.files[key].items()) for key in changed if state.files.get(key)}
        removed = {key: () for key in changed if key not in added}
        columns = (state.column,) if state.column else ()
        schema = (
            DeltaSchema.from_arrow(state.schema).to_json() if state.schema is not None else None
        )
        return Commit(state.version, 0, GAP_OPERATION, None, {}, added, removed, columns,
                      schema, state.table_id)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Published:
    """What one lakeflow commit recorded for a group of partitions it published."""

    version: int
    run_id: str
    code_version: str
    inputs: Mapping[str, int]  # upstream table -> version read
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Commit:
    """One Delta commit, reduced to what lakeflow needs."""

    version: int
    timestamp_ms: int
    operation: str
    metadata: Mapping[str, Any] | None  # lakeflow's commit metadata, None for outside commits
    txn: Mapping[str, int]
    added: Mapping[str, tuple[tuple[str, int], ...]]  # partition key -> ((path, size), ...)
    removed: Mapping[str, tuple[str, ...]]  # partition key -> paths
    partition_columns: tuple[str, ...] | None = (
        None  # set when the commit changes the table's metadata
    )
    schema_json: str | None = None  # the table's schema, when the commit changes its metadata
    table_id: str | None = None  # the table's Delta id, when the commit changes its metadata
    # False: it changes no rows: it only moves them between files (OPTIMIZE: every add and
    # remove says dataChange=false), or changes no file at all (table properties)
    data_change: bool = True

    @property
    def schema_changed(self) -> bool:
        return self.partition_columns is not None

    @property
    def touched(self) -> set[str]:
        """The partitions whose data this commit changed (none for one that only moves rows)."""
        if not self.data_change:
            return set()
        return set(self.added) | set(self.removed)

    @property
    def file_actions(self) -> int:
        """Files the commit added and removed."""
        return sum(map(len, self.added.values())) + sum(map(len, self.removed.values()))

    def published(self) -> dict[str, Published]:
        """Partition key -> what this lakeflow commit recorded for it (empty for outside commits)."""
        meta = self.metadata
        if not meta:
            return {}
        out: dict[str, Published] = {}
        for group in meta.get("groups", ()):
            info = Published(
                self.version,
                meta["run"],
                meta.get("code", ""),
                group.get("in", {}),
                self.timestamp_ms,
            )
            for key in group["keys"]:
                out[key] = info
        return out


def _partition_key(values: Mapping[str, str | None] | None, column: str | None) -> str:
    if not column or not values:
        return ""
    value = values.get(column)
    return "" if value is None else value


BULK = 256  # add/remove actions from which a commit's are parsed by polars, not line by line


def parse_commit(raw: bytes, version: int, column: str | None) -> Commit:
    """Parse a `_delta_log/NNN.json` commit file. A `metaData` action in the commit overrides
    `column` (the table's partition column) for the commit's own actions. A commit of many
    files (a backfill's group commit: 100,000 adds) has its add and remove lines parsed by
    polars in one go, several times faster than `json.loads` per line."""
    lines = [line for line in raw.splitlines() if line.strip()]
    files = [line for line in lines if line.lstrip().startswith((b'{"add"', b'{"remove"'))]
    bulk = len(files) >= BULK
    actions = [json.loads(line) for line in (lines if not bulk else _others(lines))]
    partition_columns: tuple[str, ...] | None = None
    schema_json: str | None = None
    table_id: str | None = None
    for action in actions:
        if "metaData" in action:
            partition_columns = tuple(action["metaData"].get("partitionColumns") or ())
            column = partition_columns[0] if partition_columns else None
            schema_json = action["metaData"].get("schemaString")
            table_id = action["metaData"].get("id")
    timestamp, operation, metadata = 0, "", None
    txn: dict[str, int] = {}
    added: dict[str, list[tuple[str, int]]] = {}
    removed: dict[str, list[str]] = {}
    changes = _bulk_files(files, column, added, removed) if bulk else False
    for action in actions:
        if "add" in action:
            add = action["add"]
            added.setdefault(_partition_key(add.get("partitionValues"), column), []).append(
                (add["path"], add["size"])
            )
            changes = changes or add.get("dataChange") is not False
        elif "remove" in action:
            rm = action["remove"]
            removed.setdefault(_partition_key(rm.get("partitionValues"), column), []).append(
                rm["path"]
            )
            changes = changes or rm.get("dataChange") is not False
        elif "commitInfo" in action:
            info = action["commitInfo"]
            timestamp = int(info.get("timestamp", 0))
            operation = info.get("operation", "")
            meta = info.get(METADATA_KEY)
            metadata = meta if isinstance(meta, dict) else None
        elif "txn" in action:
            txn[action["txn"]["appId"]] = int(action["txn"]["version"])
    if column and "" in removed:  # the protocol lets a remove leave its partition values out
        _key_removes_by_path(removed, column)
    return Commit(
        version,
        timestamp,
        operation,
        metadata,
        txn,
        {k: tuple(v) for k, v in added.items()},
        {k: tuple(v) for k, v in removed.items()},
        partition_columns,
        schema_json,
        table_id,
        data_change=changes,
    )


def _key_removes_by_path(removed: dict[str, list[str]], column: str) -> None:
    """File removes that named no partition under the partition their path names (`col=value/`,
    as every Delta writer lays a partitioned table out); a path that names none stays under ""
    and `TableState` finds it by path."""
    unknown = removed.pop("")
    for path in unknown:
        key = ""
        for part in path.split("/")[:-1]:
            name, eq, value = part.partition("=")
            if eq and unquote(name) == column:
                value = unquote(value)
                key = "" if value == "__HIVE_DEFAULT_PARTITION__" else value
                break
        removed.setdefault(key, []).append(path)


def _others(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if not line.lstrip().startswith((b'{"add"', b'{"remove"'))]


def _bulk_files(
    files: list[bytes],
    column: str | None,
    added: dict[str, list[tuple[str, int]]],
    removed: dict[str, list[str]],
) -> bool:
    """Add and remove actions (one JSON object a line) into `added` and `removed`, by polars;
    whether any of them changes data (a `dataChange` that is not false)."""
    values = pl.Struct({column: pl.String}) if column else pl.Struct({"_": pl.String})
    action = pl.Struct(
        {"path": pl.String, "size": pl.Int64, "partitionValues": values, "dataChange": pl.Boolean}
    )
    frame = pl.read_ndjson(io.BytesIO(b"\n".join(files)), schema={"add": action, "remove": action})
    changes = False
    for kind in ("add", "remove"):
        rows = frame.get_column(kind).drop_nulls()
        if rows.is_empty():
            continue
        parts = rows.struct.unnest()
        changes = changes or not parts.get_column("dataChange").eq_missing(False).all()
        keys = (
            parts.get_column("partitionValues").struct.field(column).fill_null("").to_list()
            if column
            else [""] * len(parts)
        )
        paths = parts.get_column("path").to_list()
        if kind == "add":
            sizes = parts.get_column("size").to_list()
            for key, path, size in zip(keys, paths, sizes, strict=True):
                added.setdefault(key, []).append((path, size))
        else:
            for key, path in zip(keys, paths, strict=True):
                removed.setdefault(key, []).append(path)
    return changes


def _unreadable_commit(lake: Lake, url: str) -> str | None:
    """The first commit file of a table's log that is not JSON lines, and why; None if all are."""
    log = f"{url}/_delta_log"
    for name in sorted(n for n in lake.list_dir(log) if n.endswith(".json")):
        data = lake.read_bytes(f"{log}/{name}") or b""
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except ValueError as error:
                return f"{log}/{name} line {number} is not JSON ({error})"
    return None


def _raise_if_corrupt(lake: Lake, url: str) -> None:
    """After the log failed to read: a `LakeError` naming the commit file that is not JSON,
    if there is one."""
    broken = _unreadable_commit(lake, url)
    if broken is not None:
        raise LakeError(
            f"the log of table {url} is corrupt: {broken}",
            hint="restore that file from a backup, or drop the table to rebuild it",
        )


@dataclass
class TableState:
    """A table as of `version` (-1: the table does not exist yet)."""

    url: str
    column: str | None = None
    version: int = -1
    schema: pa.Schema | None = None
    files: dict[str, dict[str, int]] = field(default_factory=dict)  # key -> {path: size}
    touched: dict[str, int] = field(default_factory=dict)  # key -> version last touched
    published: dict[str, Published] = field(default_factory=dict)  # key -> ours, if last touch was
    txn_version: int = 0
    table_id: str | None = None  # Delta's id of the table (a table made again has another)
    delta_checkpoint: int = -1  # version of the newest Delta checkpoint known ...
    since_checkpoint: int = 0  # ... and the file actions of the commits applied after it
    checkpointed: int = -1  # version of the newest partition checkpoint read or written
    handle: DeltaTable | None = field(default=None, repr=False)
    lock: threading.RLock = field(
        default_factory=threading.RLock, repr=False
    )  # commits apply off-loop
    gap_checked: float = field(default=0.0, repr=False)  # monotonic time of the last check
    commit_seconds: float = field(default=0.0, repr=False)  # the last commit of ours took

    @property
    def exists(self) -> bool:
        return self.version >= 0

    def keys(self) -> list[str]:
        """Partitions that hold at least one file now."""
        return [k for k, paths in self.files.items() if paths]

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, lake: Lake, url: str, *, column: str | None = None) -> TableState:
        """Read the table's current state; a table that does not exist yet gives version -1.

        From the newest Delta checkpoint (the files), lakeflow's partition checkpoint (what the
        partitions were built from, `lake.checkpoint`) and the JSON commits after them, each
        read once; a table without a checkpoint from its JSON commits. A log this cannot follow
        (a v2 checkpoint, column mapping, commits missing after the checkpoint) is read by
        deltalake instead."""
        state = cls(url, column)
        names = lake.list_dir(f"{url}/_delta_log")
        commits = sorted(int(n[:20]) for n in names if n.endswith(".json") and n[:20].isdigit())
        found = newest_checkpoint(names)
        if not commits and found is None:
            return state
        newest = max(commits[-1] if commits else -1, found[0] if found else -1)
        try:
            if found is None or state._start_from_checkpoint(lake, *found, commits):
                state.refresh(lake, check_gap=None)  # `newest` below decides
        except (ValueError, pl.exceptions.PolarsError, pa.ArrowException):  # never half-read
            _raise_if_corrupt(lake, url)
            return cls._load_through_deltalake(lake, url, column)
        if state.version >= newest:
            return state
        return cls._load_through_deltalake(lake, url, column)

    def _start_from_checkpoint(
        self, lake: Lake, version: int, names: list[str], commits: list[int]
    ) -> bool:
        """Take the files from the Delta checkpoint at `version`, and what lakeflow knows of
        the partitions up to it from its own checkpoint and the JSON commits between the two;
        False for a checkpoint left to deltalake."""
        delta = read_delta_checkpoint(lake, self.url, version, names)
        if delta is None:
            return False
        self.version, self.table_id, self.delta_checkpoint = version, delta.table_id, version
        self.column = delta.partition_columns[0] if delta.partition_columns else None
        self.schema = pa.schema(DeltaSchema.from_json(delta.schema_json).to_arrow())
        self.files = delta.files
        self.txn_version = delta.transactions.get(APP_ID, 0)
        ours = read_partition_checkpoint(lake, self.url, delta.table_id, newest=version)
        if ours is not None and ours.version < version and ours.version + 1 not in commits:
            ours = None  # the commits after it are gone: it cannot be brought up to date
        after = -1
        if ours is not None:
            self._take_partition_checkpoint(ours)
            after = ours.version
        self._replay_notes(lake, [v for v in commits if after < v <= version], after)
        return True

    def _take_partition_checkpoint(self, checkpoint: PartitionCheckpoint) -> None:
        records = {
            group: Published(*record) for group, record in checkpoint.records.items()
        }  # one record a group, shared by its keys, as a commit's `published()` shares it
        self.touched = dict(zip(checkpoint.keys, checkpoint.touched, strict=True))
        ours = [
            (key, g)
            for key, g in zip(checkpoint.keys, checkpoint.groups, strict=True)
            if g is not None
        ]
        self.published = {key: records[g] for key, g in ours}
        self.checkpointed = checkpoint.version

    @classmethod
    def _load_through_deltalake(cls, lake: Lake, url: str, column: str | None) -> TableState:
        """The table's state with deltalake reading the files: for logs `load` cannot follow."""
        state = cls(url, column)
        try:
            handle = DeltaTable(url, storage_options=lake.delta_options())
        except TableNotFoundError:
            return state
        except OSError as error:
            raise lake.unreachable(error) from error
        except Exception as error:  # deltalake wraps I/O failures in its own types
            if "not a delta table" in str(error).lower() or "no files in log" in str(error).lower():
                return state
            _raise_if_corrupt(lake, url)
            raise lake.unreachable(error) from error
        state.handle = handle
        partition_columns = handle.metadata().partition_columns
        state.column = partition_columns[0] if partition_columns else None
        state.table_id = handle.metadata().id
        state._reset_from_handle()
        commits = sorted(
            int(name[:20])
            for name in lake.list_dir(f"{url}/_delta_log")
            if name.endswith(".json") and name[:20].isdigit()
        )
        state._replay_notes(lake, [v for v in commits if v <= state.version], -1)
        return state

    def _reset_from_handle(self) -> None:
        assert self.handle is not None
        self.version = self.handle.version()
        self.schema = pa.schema(self.handle.schema().to_arrow())
        # read through the Arrow C stream: `pa.table(...)` of deltalake's arro3 table imports
        # pandas (~1 s of a `lakeflow status`)
        stream = self.handle.get_add_actions(flatten=True)
        actions = pa.RecordBatchReader.from_stream(stream).read_all()
        paths = actions.column("path").to_pylist()
        sizes = actions.column("size_bytes").to_pylist()
        part = f"partition.{self.column}"
        keys = (
            actions.column(part).to_pylist()
            if self.column and part in actions.column_names
            else [""] * len(paths)
        )
        self.files = {}
        for key, path, size in zip(keys, paths, sizes, strict=True):
            self.files.setdefault(key or "", {})[path] = size
        self.txn_version = self.handle.transaction_version(APP_ID) or 0

    def _replay_notes(self, lake: Lake, versions: list[int], after: int) -> None:
        """Learn `touched` and `published` from the commits `versions` (those still in the log
        of the ones after version `after`). When older ones were cleaned up, their partitions
        are taken as changed just before the first one left."""
        first = versions[0] if versions else self.version + 1
        if first > after + 1:
            for key in self.keys():
                self.touched[key] = first - 1
        for version in versions:
            raw = lake.read_bytes(commit_path(self.url, version))
            if raw is not None:
                self._note(parse_commit(raw, version, self.column))
            else:  # cleaned up since it was listed: what it changed is not known
                for key in self.keys():
                    self.touched[key] = max(self.touched.get(key, -1), version)

    def _note(self, commit: Commit) -> None:
        """Record a commit's touched partitions and publish info (not its files)."""
        ours = commit.published()
        for key in commit.touched:
            self.touched[key] = commit.version
            info = ours.get(key)
            if info is None:
                self.published.pop(key, None)
            else:
                self.published[key] = info

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, lake: Lake, *, now: bool = False) -> bool:
        """After a commit of ours (made with Delta's log cleanup off: `NO_CLEANUP`).

        A Delta checkpoint once the commits since the last one changed half as many files as
        the table has partitions (`CHECKPOINT_ACTIONS` at least): a growing table is
        checkpointed each time it doubled, and a new reader (deltalake's or ours) parses at
        most about as much JSON as the checkpoint holds. Delta's own cadence, one every 100
        versions, is too seldom for a table that grows in big group commits. When Delta has a
        checkpoint newer than lakeflow's own, lakeflow writes its checkpoint of the partitions
        at the same version (making a Delta checkpoint at this version when the newest is
        another's), so that what they were built from outlives the commits Delta cleans up;
        only then are expired commits cleaned up, behind both. A failure is logged and tried
        again after the next commit: the commit stands, and readers read the log.

        `now`: both checkpoints at this version whatever the cadence (before a commit that
        cleans up the log itself: deltalake's optimize ignores its post-commit settings).
        Returns whether lakeflow's checkpoint is at this version now (or was not due)."""
        try:
            delta = last_checkpoint_version(lake, self.url)
            if delta is not None and delta > self.delta_checkpoint:  # deltalake made one
                self.delta_checkpoint, self.since_checkpoint = delta, 0
            grown = self.since_checkpoint >= max(CHECKPOINT_ACTIONS, len(self.files) // 2)
            behind = self.delta_checkpoint > self.checkpointed
            wanted = now and self.checkpointed < self.version
            if self.table_id is None or not (grown or behind or wanted):
                return self.table_id is not None or not now
            with self.lock:
                checkpoint = self._partition_checkpoint()
            handle = self.current_handle(lake)
            if grown or (self.delta_checkpoint != checkpoint.version
                         and handle.version() == checkpoint.version):  # fmt: skip
                handle.create_checkpoint()  # at the version lakeflow's checkpoint describes
                self.delta_checkpoint, self.since_checkpoint = handle.version(), 0
            write_partition_checkpoint(lake, self.url, self.table_id, checkpoint)
            self.checkpointed = checkpoint.version
            if self.checkpointed == self.delta_checkpoint:
                handle.cleanup_metadata()  # expired commits before the checkpoint both cover
            return self.checkpointed == self.delta_checkpoint
        except Exception as error:  # best effort: the commit stands either way
            logger.warning("checkpointing %s failed: %s", self.url, error)
            return False

    def _partition_checkpoint(self) -> PartitionCheckpoint:
        keys = list(self.touched)
        groups: list[int | None] = []
        records: dict[int, Record] = {}
        numbers: dict[int, int] = {}  # id() of a record its keys share -> its group
        for key in keys:
            info = self.published.get(key)
            if info is None:
                groups.append(None)
                continue
            group = numbers.setdefault(id(info), len(numbers))
            if group not in records:
                records[group] = (
                    info.version, info.run_id, info.code_version, dict(info.inputs),
                    info.timestamp_ms,
                )  # fmt: skip
            groups.append(group)
        touched = [self.touched[key] for key in keys]
        return PartitionCheckpoint(self.version, keys, touched, groups, records)

    # -- moving forward ------------------------------------------------------------------------
    def apply(self, commit: Commit) -> None:
        """Move the state forward by one commit (which must be `version + 1`)."""
        with self.lock:
            self._apply(commit)

    def _apply(self, commit: Commit) -> None:
        if commit.version != self.version + 1:
            raise LakeError(
                f"commit {commit.version} applied to {self.url} at version {self.version}"
            )
        for key, paths in commit.removed.items():
            current = self.files.get(key)
            for path in paths:
                if current is not None and path in current:
                    current.pop(path)
                elif key == "" and self.column:  # a remove that named no partition: by path
                    for held in self.files.values():
                        if held.pop(path, None) is not None:
                            break
        for key, added in commit.added.items():
            self.files.setdefault(key, {}).update(added)
        self.since_checkpoint += commit.file_actions
        self._note(commit)
        self.txn_version = max(self.txn_version, commit.txn.get(APP_ID, 0))
        self.version = commit.version

    def refresh(self, lake: Lake, *, check_gap: bool | None = False) -> list[Commit]:
        """Read and apply the commits made since `version`; returns those this call applied,
        oldest first (threads may refresh one state at once: each commit is applied once, by
        one of them). A table that did not exist is followed from its version 0 on.

        When the next commit is missing because Delta cleaned it up (`cleaned_past`: asked at
        most every `GAP_CHECK_SECONDS`, now with `check_gap=True`, never with None), the table is
        read afresh and one commit stands for those that could not be read (`_catch_up`)."""
        commits: list[Commit] = []
        while True:
            version = self.version + 1
            raw = lake.read_bytes(commit_path(self.url, version))
            if raw is None:
                if check_gap is not None and self._fell_behind(lake, version - 1, check_gap):
                    gap = self._catch_up(lake, version - 1)
                    if gap is not None:
                        commits.append(gap)
                        continue
                break
            with self.lock:
                if self.version + 1 != version:  # another thread's refresh applied it
                    continue
                commit = parse_commit(raw, version, self.column)
                if commit.partition_columns is not None:
                    self.column = commit.partition_columns[0] if commit.partition_columns else None
                    self.table_id = commit.table_id
                self._apply(commit)
                if commit.schema_json is not None:
                    # from the commit itself: a second read here could fail on its own and
                    # leave a table that exists without a schema
                    self.schema = pa.schema(DeltaSchema.from_json(commit.schema_json).to_arrow())
            commits.append(commit)
        return commits

    def _catch_up(self, lake: Lake, seen: int) -> Commit | None:
        """Read the table afresh over commits cleaned up before they were read (this state had
        seen up to version `seen`), and return one commit standing for them: the partitions the
        fresh read says changed after `seen` (all of them when lakeflow's checkpoint could not
        bridge the gap either), and those that were deleted meanwhile. The fresh state replaces
        this one at once, under the lock; None when another thread moved it on already."""
        with self.lock:
            known = dict(self.touched)
        fresh = TableState.load(lake, self.url, column=self.column)
        for key in set(known) - set(fresh.touched):  # gone, and not even a trace left
            fresh.touched[key] = fresh.version
        with self.lock:
            if self.version != seen or fresh.version <= seen:
                return None
            before = {key: tuple(files) for key, files in self.files.items() if files}
            for f in fields(self):
                if f.name not in ("lock", "gap_checked"):
                    setattr(self, f.name, getattr(fresh, f.name))
            gap = gap_commit(self, seen)
        removed = {key: before.get(key, ()) for key in gap.removed}
        return dataclasses.replace(gap, removed=removed)

    def _fell_behind(self, lake: Lake, version: int, now: bool) -> bool:
        if version < 0:
            return False
        clock = time.monotonic()
        if not now and clock - self.gap_checked < GAP_CHECK_SECONDS:
            return False
        self.gap_checked = clock
        return cleaned_past(lake, self.url, version)

    def reload(self, lake: Lake) -> None:
        """Forget what was followed and read the table afresh: after an unexpected error this
        state may no longer be the table's, and the lake is the truth."""
        fresh = TableState.load(lake, self.url, column=self.column)
        with self.lock:
            for f in fields(self):
                if f.name != "lock":
                    setattr(self, f.name, getattr(fresh, f.name))

    def current_handle(self, lake: Lake) -> DeltaTable:
        """A DeltaTable handle brought up to `version` (opened on first use)."""
        if self.handle is not None and self.handle.version() < self.version:
            try:
                self.handle.update_incremental()
            except Exception:  # the commits after it were cleaned up: open it afresh
                self.handle = None
        if self.handle is None:
            self.handle = DeltaTable(self.url, storage_options=lake.delta_options())
        return self.handle

    def file_list(self, keys: Iterable[str]) -> list[tuple[str, str, int]]:
        """(partition key, relative path, size) of every file of `keys`."""
        out = []
        with self.lock:
            for key in keys:
                for path, size in self.files.get(key, {}).items():
                    out.append((key, path, size))
        return out
