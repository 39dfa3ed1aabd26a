"""Following Delta tables for the trigger engine: a `TableFollower` reads a table's new commits
from a cursor, `consumer_partitions` maps the partitions a commit touched onto a consumer's, and
`TriggerState` is what the triggers must not forget (cursors, pending partitions, schedule ticks),
kept in the lake as one JSON document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lakeflow.define.automation import Publish
from lakeflow.define.partitions import Partitions
from lakeflow.lake import Lake
from lakeflow.lake.log import (
    GAP_CHECK_SECONDS,
    Commit,
    TableState,
    cleaned_past,
    commit_path,
    gap_commit,
    parse_commit,
)

__all__ = [
    "DOWN_MARKER",
    "STATE_URL",
    "TableFollower",
    "TriggerState",
    "as_publish",
    "consumer_partitions",
    "is_publish",
]

STATE_URL = "_lakeflow/triggers/state.json"
DOWN_MARKER = "_lakeflow/triggers/down"  # `lakeflow down` from any process drops it


# -- following a table's log -------------------------------------------------------------------
class TableFollower:
    """Reads a Delta table's new commits in order, from a cursor (the last version handled).
    Checking for the next commit is one small read; nothing is listed."""

    def __init__(self, lake: Lake, url: str, column: str | None, cursor: int) -> None:
        self.lake, self.url, self.column, self.cursor = lake, url, column, cursor
        self.gap_checked = 0.0  # monotonic time the missing next commit was last asked about
        # a gap commit's version -> the version that published each partition of lakeflow's
        # then (the engine holds those a failed table check published)
        self.gaps: dict[int, dict[str, int]] = {}

    @staticmethod
    def current_version(lake: Lake, url: str) -> int:
        """The table's newest version (-1 if it does not exist yet)."""
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(url, storage_options=lake.delta_options()):
            return -1
        return DeltaTable(url, storage_options=lake.delta_options()).version()

    def poll(self, limit: int = 1000) -> list[Commit]:
        """The commits after the cursor (at most `limit`); the cursor is not moved.

        Commits Delta cleaned up before they were read (the cursor fell behind the log's
        retention, say while lakeflow was down) are reported as one `gap_commit` at the table's
        version read afresh, touching what that read says changed after the cursor (every
        partition when lakeflow's checkpoint cannot tell); asked at most every
        `GAP_CHECK_SECONDS`."""
        out: list[Commit] = []
        version = self.cursor + 1
        while len(out) < limit:
            raw = self.lake.read_bytes(commit_path(self.url, version))
            if raw is None:
                clock = time.monotonic()
                if clock - self.gap_checked < GAP_CHECK_SECONDS:
                    break
                self.gap_checked = clock
                if not cleaned_past(self.lake, self.url, version - 1):
                    break
                state = TableState.load(self.lake, self.url, column=self.column)
                if state.version < version:
                    break
                out.append(gap_commit(state, version - 1))
                self.gaps[state.version] = {k: p.version for k, p in state.published.items()}
                self.column = state.column
                version = state.version + 1
                continue
            commit = parse_commit(raw, version, self.column)
            if commit.partition_columns is not None:
                self.column = commit.partition_columns[0] if commit.partition_columns else None
            out.append(commit)
            version += 1
        return out


def is_publish(commit: Commit) -> bool:
    """Is the commit news to consumers and subscribers? It is when it changed rows, or when
    lakeflow made it (a publish that deleted nothing still records its units); an optimize
    (rows moved between files) or a change of table properties is not."""
    return commit.data_change or bool(commit.metadata)


def as_publish(table: str, commit: Commit) -> Publish:
    meta = commit.metadata or {}
    return Publish(
        table=table,
        version=commit.version,
        partitions=tuple(sorted(commit.touched)),
        operation=commit.operation,
        timestamp=commit.timestamp_ms / 1000,
        by_lakeflow=bool(meta),
        run_id=meta.get("run"),
    )


def consumer_partitions(
    down: Partitions, up: Partitions, mapping: Any, touched_keys: Iterable[str]
) -> list[str]:
    """Keys of `down` whose mapped `up` partitions include any of `touched_keys`."""
    if not len(down):
        return []
    ups = up.indices(list(touched_keys)) if up.is_partitioned else np.zeros(1, np.int64)
    ups = np.unique(ups[ups >= 0])
    if not len(ups):
        return []
    every = np.arange(len(down), dtype=np.int64)
    lo, hi = mapping.ranges(down, up, every)
    hit = np.searchsorted(ups, hi, side="left") > np.searchsorted(ups, lo, side="left")
    return down.keys(every[hit])


# -- what the triggers remember ------------------------------------------------------------------------------------
@dataclass
class TriggerState:
    """What the triggers must not forget, kept in the lake as one JSON document."""

    cursors: dict[str, int] = field(default_factory=dict)  # table -> last version handled
    pending: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # consumer -> key -> ups
    causes: dict[str, dict[str, list[int]]] = field(
        default_factory=dict
    )  # consumer -> up -> [lo, hi]
    ticks: dict[str, float] = field(default_factory=dict)  # schedule -> last tick fired

    @classmethod
    def load(cls, lake: Lake) -> TriggerState:
        raw = lake.read_bytes(f"{lake.url}/{STATE_URL}")
        if raw is None:
            return cls()
        data = json.loads(raw)
        return cls(
            {k: int(v) for k, v in data.get("cursors", {}).items()},
            data.get("pending", {}),
            data.get("causes", {}),
            {k: float(v) for k, v in data.get("ticks", {}).items()},
        )

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "cursors": self.cursors,
                "pending": self.pending,
                "causes": self.causes,
                "ticks": self.ticks,
            },
            sort_keys=True,
        ).encode()
