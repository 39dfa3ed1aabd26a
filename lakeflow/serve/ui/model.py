"""What the web UI shows, read from the lake and cached per table version: each asset's partition
states as one int8 array (fresh, stale, missing, failed, ...), aggregated server side into
buckets (days, months, years of a time partitioning; fixed ranges of others) so a million
partitions cost the browser what a hundred do. A reader only: no controller, no Ray.

Imports the plan layer's snapshots and status (the same reading `lakeflow status` does), the
lake's logs and event log; nothing above `serve`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import STAMP_KEYS, FilePartitions
from lakeflow.define.time_windows import TimeWindowPartitions
from lakeflow.lake import Lake
from lakeflow.lake.events import EVENTS_TABLE, read_events
from lakeflow.lake.log import TableState, commit_path
from lakeflow.lake.registry import load_registry
from lakeflow.plan.planner import DELETED, FRESH, MISSING, STALE, partition_status
from lakeflow.plan.snapshots import AssetSnapshot, open_table, snapshot

__all__ = ["STATES", "Bucket", "LakeView", "asset_health", "buckets"]

# a partition's state in the UI; the order is the code stored in the arrays
STATES = ("fresh", "stale", "missing", "deleted", "failed", "check_failed", "blocked", "running")
CODE = {name: code for code, name in enumerate(STATES)}
_FROM_PLAN = np.zeros(4, np.int8)
_FROM_PLAN[[FRESH, STALE, MISSING, DELETED]] = [CODE[s] for s in STATES[:4]]
_HELD = {
    "unit_failed": "failed",
    "unit_check_failed": "check_failed",
    "unit_blocked": "blocked",
    "unit_upstream_failed": "blocked",
}
_OUTCOMES = ["unit_published", "unit_deleted", "unit_started", "unit_fresh", "unit_cancelled"]
# an asset's colour: its worst partition state, in this order (missing counts as stale)
_HEALTH = ("running", "failed", "check_failed", "blocked", "stale", "missing")
MAX_BUCKETS = 400


def asset_health(counts: Mapping[str, int]) -> str:
    """fresh, stale, failed, check_failed, blocked or running: what an asset's colour says."""
    for state in _HEALTH:
        if counts.get(state, 0):
            return "stale" if state == "missing" else state
    return "fresh"


@dataclass(frozen=True, slots=True)
class Bucket:
    """A contiguous range of partition indices [lo, hi) and its count per state."""

    lo: int
    hi: int
    label: str
    first: str  # first and last partition keys
    last: str
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "lo": self.lo, "hi": self.hi, "label": self.label, "first": self.first,
            "last": self.last, "counts": self.counts,
        }  # fmt: skip


class LakeView:
    """The lake as the UI reads it. Tables are opened once and followed commit by commit (a
    reload reads one missing log file per table); snapshots are cached per table version and
    the states per (table versions, event-log version), so a page reload recomputes nothing."""

    def __init__(self, *, pipeline: Pipeline, lake: Lake) -> None:
        self.pipeline = pipeline
        self.lake = lake
        self._lock = threading.RLock()  # one reader of the lake at a time; re-entered
        self._tables: dict[str, TableState] = {}
        self._snaps: dict[str, tuple[int, AssetSnapshot]] = {}
        self._changed: dict[str, set[str]] = {}  # partitions touched since the cached snapshot
        self._events_version = -2
        self._events = pl.DataFrame()
        self._states_key: tuple[Any, ...] | None = None
        self._states: dict[str, np.ndarray] = {}
        self._buckets: dict[tuple[Any, ...], tuple[str, list[Bucket]]] = {}

    # -- reading, cached -----------------------------------------------------------------------
    def table(self, name: str) -> TableState:
        """Asset `name`'s table, brought up to date. Under the view's lock: the partitions a
        refresh touched are noted before any snapshot of the new version can be cached."""
        with self._lock:
            state = self._tables.get(name)
            if state is None:
                state = self._tables[name] = open_table(self.lake, self.pipeline, name)
                return state
            for commit in state.refresh(self.lake):
                if commit.schema_changed:  # a new partitioning: no patching the old arrays
                    self._snaps.pop(name, None)
                self._changed.setdefault(name, set()).update(commit.touched)
            return state

    def events(self) -> pl.DataFrame:
        """The event log, read again only when it has a new version. The version is listed
        before the events are read: a flush in between makes the frame newer than the version
        noted (read again next time), never older (a missed event shown until the next one)."""
        with self._lock:
            url = self.lake.table_url(EVENTS_TABLE)
            version = self._events_version
            if version >= 0 and self.lake.read_bytes(commit_path(url, version + 1)) is None:
                return self._events
            versions = [
                int(n[:20])
                for n in self.lake.list_dir(f"{url}/_delta_log")
                if n.endswith(".json") and n[:20].isdigit()
            ]
            frame = read_events(self.lake)
            self._events, self._events_version = frame, max(versions, default=-1)
            return frame

    def states(self) -> dict[str, np.ndarray]:
        """asset -> int8 code (index in STATES) per partition index."""
        return self._keyed_states()[1]

    def _keyed_states(self) -> tuple[tuple[Any, ...] | None, dict[str, np.ndarray]]:
        """The states and the lake state they are of, read together."""
        with self._lock:
            tables = {name: self.table(name) for name in self.pipeline.assets}
            events = self.events()
            key = (tuple(t.version for t in tables.values()), self._events_version)
            if key == self._states_key:
                return key, self._states
            snaps = {name: self._snapshot(name, t) for name, t in tables.items()}
            flags = partition_status(self.pipeline, snaps)
            states = {name: _FROM_PLAN[codes] for name, codes in flags.items()}
            self._overlay(states, flags, events)
            self._states_key, self._states = key, states
            return key, states

    def _snapshot(self, name: str, table: TableState) -> AssetSnapshot:
        parts = self.pipeline[name].partitions
        if isinstance(parts, FilePartitions):  # the files its sensor has seen: not versioned here
            parts.load(load_registry(self.lake, name))
        else:
            cached = self._snaps.get(name)
            changed = self._changed.pop(name, set())
            if cached is not None and cached[0] == table.version:
                return cached[1]
            if cached is not None and table.exists:
                snap = _patched(cached[1], table, parts, changed)
                self._snaps[name] = (table.version, snap)
                return snap
        self._changed.pop(name, None)
        upstream = [e.up for e in self.pipeline.upstream(name)]
        if isinstance(parts, FilePartitions):  # the stamps its files were read with, as status
            upstream += STAMP_KEYS
        snap = snapshot(table, parts, upstream)
        self._snaps[name] = (table.version, snap)
        return snap

    def _overlay(
        self, states: dict[str, np.ndarray], flags: dict[str, np.ndarray], events: pl.DataFrame
    ) -> None:
        """A partition whose latest unit outcome is a failure or a hold shows it (unless it was
        deleted since); one a running run has started and not finished shows running."""
        if events.is_empty():
            return
        units = events.filter(pl.col("kind").is_in([*_HELD, *_OUTCOMES]))
        last = units.group_by("asset", "partition", maintain_order=True).last()
        running_runs = _running_runs(events)
        for (asset,), group in last.partition_by("asset", as_dict=True).items():
            if asset not in states:
                continue
            parts = self.pipeline[asset].partitions
            keys = group["partition"].fill_null("").to_list()
            index = parts.indices(keys) if parts.is_partitioned else np.zeros(len(keys), np.int64)
            kinds = group["kind"].to_numpy()
            runs = group["run_id"].to_numpy()
            ours = index >= 0
            for kind, state in _HELD.items():
                hit = index[ours & (kinds == kind)]
                hit = hit[flags[asset][hit] != DELETED]
                states[asset][hit] = CODE[state]
            started = ours & (kinds == "unit_started") & np.isin(runs, list(running_runs))
            states[asset][index[started]] = CODE["running"]

    def warm(self) -> threading.Thread:
        """Read the lake on a background thread now, so the first page finds it cached (a
        million-partition table's log takes seconds to read the first time)."""

        def read() -> None:
            try:
                self.states()
            except Exception:  # the page that asks next reports it
                pass

        thread = threading.Thread(target=read, name="lakeflow-ui-warm", daemon=True)
        thread.start()
        return thread

    def buckets(
        self, name: str, *, lo: int, hi: int | None, state: str | None
    ) -> tuple[np.ndarray, str, list[Bucket]]:
        """`buckets()` of asset `name` as the lake is now, cached with the states."""
        lake_state, states = self._keyed_states()
        codes = states[name]
        key = (lake_state, name, lo, hi, state)
        with self._lock:
            found = self._buckets.get(key)
        if found is None:
            found = buckets(self.pipeline, name, codes, lo=lo, hi=hi, state=state)
            with self._lock:
                if len(self._buckets) > 256:
                    self._buckets.clear()
                self._buckets[key] = found
        return codes, found[0], found[1]

    # -- what the pages ask --------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """asset -> state -> partitions in it."""
        return {
            name: dict(zip(STATES, np.bincount(codes, minlength=len(STATES)).tolist(), strict=True))
            for name, codes in self.states().items()
        }

    def runs(self) -> pl.DataFrame:
        """Every run: id, origin, requested time, its request, status, per-asset unit counts."""
        return run_table(self.events())


def _patched(old: AssetSnapshot, table: TableState, parts: Any, keys: set[str]) -> AssetSnapshot:
    """`old` moved forward to `table`'s version: only the partitions its new commits touched
    are read again (what `snapshot` would give, without going over a million keys)."""
    snap = AssetSnapshot(
        table.version, old.present.copy(), old.touched.copy(), old.code.copy(), old.run.copy(),
        {name: values.copy() for name, values in old.inputs.items()},
    )  # fmt: skip
    if not keys:
        return snap
    ordered = sorted(keys)
    index = parts.indices(ordered) if parts.is_partitioned else np.zeros(len(ordered), np.int64)
    with table.lock:
        for key, i in zip(ordered, index.tolist(), strict=True):
            if i < 0:
                continue  # a key outside the definition
            info = table.published.get(key)
            snap.present[i] = bool(table.files.get(key))
            snap.touched[i] = table.touched.get(key, -1)
            snap.code[i] = info.code_version if info is not None else ""
            snap.run[i] = info.run_id if info is not None else ""
            for name, values in snap.inputs.items():
                values[i] = info.inputs.get(name, -1) if info is not None else -1
    return snap


def _running_runs(events: pl.DataFrame) -> set[str]:
    lifecycle = events.filter(
        pl.col("kind").is_in(["run_requested", "run_resumed", "run_finished"])
    )
    latest = lifecycle.group_by("run_id").agg(pl.col("kind").last())
    return set(latest.filter(pl.col("kind") != "run_finished")["run_id"].to_list())


def run_table(events: pl.DataFrame) -> pl.DataFrame:
    """One row per run, newest first: run_id, origin, ts, detail (its request), status
    (running, or run_finished's message)."""
    if events.is_empty():
        return pl.DataFrame(schema={"run_id": pl.String, "origin": pl.String, "status": pl.String})
    requested = events.filter(pl.col("kind") == "run_requested").unique("run_id", keep="first")
    lifecycle = events.filter(
        pl.col("kind").is_in(["run_requested", "run_resumed", "run_finished"])
    )
    last = lifecycle.group_by("run_id").agg(
        pl.col("kind").last().alias("last"), pl.col("message").last().alias("ended")
    )
    return (
        requested.select("run_id", pl.col("message").alias("origin"), "ts", "detail")
        .join(last, on="run_id", how="left")
        .with_columns(
            pl.when(pl.col("last") == "run_finished")
            .then(pl.col("ended"))
            .otherwise(pl.lit("running"))
            .alias("status")
        )
        .drop("last", "ended")
        .sort("run_id", descending=True)
    )


# -- buckets -----------------------------------------------------------------------------------
def buckets(
    pipeline: Pipeline,
    name: str,
    codes: np.ndarray,
    *,
    lo: int = 0,
    hi: int | None = None,
    state: str | None = None,
) -> tuple[str, list[Bucket]]:
    """Partitions [lo, hi) of asset `name` in at most MAX_BUCKETS buckets, each with its count
    per state (only `state` counted when given). Time partitions fall into calendar buckets (the
    finest of hour, day, month, year that fits); others into equal ranges. Returns the bucket
    unit ("partition", "hour", "day", "month", "year" or "range") and the buckets."""
    parts = pipeline[name].partitions
    total = len(codes)
    hi = total if hi is None else min(hi, total)
    lo = max(0, min(lo, hi))
    if hi <= lo:
        return "partition", []
    window = codes[lo:hi]
    unit, starts = _bounds(parts, lo, hi)
    marks = np.zeros(hi - lo, np.int64)
    marks[starts[1:] - lo] = 1
    ids = np.cumsum(marks)
    nstates = len(STATES)
    table = np.bincount(ids * nstates + window, minlength=len(starts) * nstates).reshape(
        len(starts), nstates
    )
    ends = [*starts[1:].tolist(), hi]
    first_keys = parts.keys(np.asarray(starts, np.int64)) if parts.is_partitioned else [""]
    last_keys = parts.keys(np.asarray(ends, np.int64) - 1) if parts.is_partitioned else [""]
    out = []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends, strict=True)):
        row = table[i]
        counts = {s: int(row[c]) for c, s in enumerate(STATES) if row[c]}
        if state is not None:
            counts = {state: counts.get(state, 0)}
        label = _label(unit, first_keys[i], last_keys[i])
        out.append(Bucket(start, end, label, first_keys[i], last_keys[i], counts))
    return unit, out


_UNITS = (("hour", "datetime64[h]"), ("day", "datetime64[D]"), ("month", "datetime64[M]"),
          ("year", "datetime64[Y]"))  # fmt: skip


def _bounds(parts: Any, lo: int, hi: int) -> tuple[str, np.ndarray]:
    """The bucket unit and the first index of each bucket of [lo, hi)."""
    if hi - lo <= MAX_BUCKETS:
        return "partition", np.arange(lo, hi, dtype=np.int64)
    if isinstance(parts, TimeWindowPartitions):
        times = parts.starts(np.arange(lo, hi, dtype=np.int64))
        for unit, dtype in _UNITS:
            truncated = times.astype(dtype)
            change = np.flatnonzero(truncated[1:] != truncated[:-1]) + 1
            if len(change) + 1 <= MAX_BUCKETS:
                return unit, np.concatenate([[lo], change + lo]).astype(np.int64)
    size = -(-(hi - lo) // MAX_BUCKETS)
    size = int(10 ** np.ceil(np.log10(size))) if size > 1 else 1  # a round size: 10, 100, ...
    size = max(size // 2, 1) if -(-(hi - lo) // max(size // 2, 1)) <= MAX_BUCKETS else size
    return "range", np.arange(lo, hi, size, dtype=np.int64)


def _label(unit: str, first: str, last: str) -> str:
    if unit == "partition" or first == last:
        return first or "(unpartitioned)"
    if unit == "day":
        return first[:10]
    if unit == "month":
        return first[:7]
    if unit == "year":
        return first[:4]
    if unit == "hour":
        return first[:13]
    return f"{first} .. {last}"
