"""Lineage of one partition version, read from the tables' Delta logs: what it was built from,
recursively, or what it fed.

Every lakeflow commit records, per group of partitions, the version of each upstream table it
read (`lake.log.Published.inputs`). With the asset's partition mapping that names the exact
upstream partitions, and each of those partitions' version at that table version is the last
commit at or before it that touched the partition. Forward, a partition version `v` of X was
current until the next commit touching it; a consumer partition fed by it is one whose commit
read X at a version in that span. Nothing but the lake is read: no run needs to be stored.

    lf.lineage(pipeline, "daily_delays", "2013-01-05")                    what it read
    lf.lineage(pipeline, "flights_clean", "2013-01-05", downstream=True)   what it fed

Commits older than the log keeps (after a log clean-up) are `unknown`: lineage stops there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from lakeflow.define.assets import AssetDef
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions, Partitions
from lakeflow.errors import PartitionError
from lakeflow.lake import Lake
from lakeflow.lake.log import Published, TableState, commit_path, parse_commit
from lakeflow.lake.registry import load_registry
from lakeflow.plan.snapshots import open_table
from lakeflow.plan.status import as_pipeline

__all__ = ["Lineage", "LineageNode", "PartitionVersion", "lineage", "trace"]

Kind = Literal["lakeflow", "outside", "deleted", "missing", "unknown"]
_READERS = 16  # commit files read at once (an object store answers each in tens of ms)


@dataclass(frozen=True, slots=True)
class PartitionVersion:
    """One partition of one table as a given commit left it.

    `kind`: `lakeflow` (our commit: run and code version known), `outside` (another producer's
    commit), `deleted` (the commit removed it), `missing` (never written at that table version),
    `unknown` (written before the oldest commit the log still keeps)."""

    asset: str
    partition: str
    version: int | None  # the commit that wrote it; None when missing or unknown
    kind: Kind
    run_id: str | None = None
    code_version: str | None = None
    timestamp_ms: int | None = None
    inputs: tuple[tuple[str, int], ...] = ()  # upstream table -> version read (ours only)


@dataclass(frozen=True, slots=True)
class LineageNode:
    unit: PartitionVersion
    via: str | None  # the mapping that led here from the parent ("identity", "lookback(7)" ...)
    edges: tuple[LineageNode, ...]  # what it read (upstream) or what read it (downstream)
    repeated: bool = False  # shown once already in this trace: its edges are not repeated

    def walk(self, depth: int = 0) -> Iterator[tuple[int, LineageNode]]:
        yield depth, self
        for edge in self.edges:
            yield from edge.walk(depth + 1)


@dataclass(frozen=True, slots=True)
class Lineage:
    """A lineage trace: the root partition version and, edge by edge, what it read or fed."""

    root: LineageNode
    direction: Literal["upstream", "downstream"]

    def rows(self) -> pl.DataFrame:
        """One row per node, depth first: depth, asset, partition, version, kind, run, code."""
        rows = [
            {
                "depth": depth,
                "asset": node.unit.asset,
                "partition": node.unit.partition,
                "version": node.unit.version,
                "kind": node.unit.kind,
                "via": node.via,
                "run_id": node.unit.run_id,
                "code_version": node.unit.code_version,
                "timestamp_ms": node.unit.timestamp_ms,
                "repeated": node.repeated,
            }
            for depth, node in self.root.walk()
        ]
        schema = {
            "depth": pl.Int64, "asset": pl.String, "partition": pl.String,
            "version": pl.Int64, "kind": pl.String, "via": pl.String, "run_id": pl.String,
            "code_version": pl.String, "timestamp_ms": pl.Int64, "repeated": pl.Boolean,
        }  # fmt: skip
        return pl.DataFrame(rows, schema=schema).with_columns(
            pl.from_epoch("timestamp_ms", "ms").alias("built_at")
        )

    def to_dict(self) -> dict[str, Any]:
        def node(n: LineageNode) -> dict[str, Any]:
            unit = n.unit
            return {
                "asset": unit.asset, "partition": unit.partition, "version": unit.version,
                "kind": unit.kind, "run_id": unit.run_id, "code_version": unit.code_version,
                "timestamp_ms": unit.timestamp_ms, "inputs": dict(unit.inputs), "via": n.via,
                "repeated": n.repeated, "edges": [node(e) for e in n.edges],
            }  # fmt: skip

        return {"direction": self.direction, "root": node(self.root)}

    def __str__(self) -> str:
        lines = []
        for depth, n in self.root.walk():
            unit = n.unit
            where = f"{unit.asset} {unit.partition or '(unpartitioned)'}"
            what = f"v{unit.version}" if unit.version is not None else unit.kind
            extra = (
                f" run {unit.run_id} code {unit.code_version}"
                if unit.kind == "lakeflow"
                else f" ({unit.kind})"
                if unit.version is not None
                else ""
            )
            via = f"  [{n.via}]" if n.via and depth else ""
            more = "  (see above)" if n.repeated else ""
            lines.append(f"{'  ' * depth}{where} @ {what}{extra}{via}{more}")
        return "\n".join(lines)


@dataclass
class _History:
    """The commits of one table still in its log, per partition key (read once per trace)."""

    state: TableState
    first: int  # the oldest commit still in the log
    by_key: dict[str, list[PartitionVersion]] = field(default_factory=dict)  # oldest first

    @classmethod
    def read(cls, lake: Lake, asset: str, state: TableState) -> _History:
        if not state.exists:
            return cls(state, 0)
        versions = sorted(
            int(name[:20])
            for name in lake.list_dir(f"{state.url}/_delta_log")
            if name.endswith(".json") and name[:20].isdigit() and int(name[:20]) <= state.version
        )
        with ThreadPoolExecutor(_READERS) as pool:
            raws = list(pool.map(lambda v: lake.read_bytes(commit_path(state.url, v)), versions))
        history = cls(state, versions[0] if versions else state.version + 1)
        for version, raw in zip(versions, raws, strict=True):
            if raw is None:
                continue
            commit = parse_commit(raw, version, state.column)
            ours = commit.published()
            deleted = set((commit.metadata or {}).get("deleted", ()))
            for key in commit.touched:
                info = ours.get(key)
                gone = key in deleted or (key in commit.removed and key not in commit.added)
                history.by_key.setdefault(key, []).append(
                    _version(asset, key, commit.version, commit.timestamp_ms, info, gone)
                )
        return history

    def at(self, asset: str, key: str, version: int) -> PartitionVersion:
        """The partition as table version `version` left it."""
        last = None
        for entry in self.by_key.get(key, ()):
            if entry.version is not None and entry.version <= version:
                last = entry
        if last is not None:
            return last
        if self.first > 0 and version >= self.first - 1:  # it may have been written earlier
            return PartitionVersion(asset, key, None, "unknown")
        return PartitionVersion(asset, key, None, "missing")

    def current_until(self, key: str, version: int) -> int:
        """The first version after `version` that touched `key` (a huge number if none)."""
        for entry in self.by_key.get(key, ()):
            if entry.version is not None and entry.version > version:
                return entry.version
        return 2**62


def _version(
    asset: str, key: str, version: int, ts: int, info: Published | None, gone: bool
) -> PartitionVersion:
    if gone:
        kind: Kind = "deleted"
    else:
        kind = "lakeflow" if info is not None else "outside"
    return PartitionVersion(
        asset, key, version, kind,
        run_id=info.run_id if info else None,
        code_version=info.code_version if info else None,
        timestamp_ms=ts,
        inputs=tuple(sorted(info.inputs.items())) if info else (),
    )  # fmt: skip


class _Tracer:
    def __init__(self, lake: Lake, pipeline: Pipeline, depth: int | None) -> None:
        self.lake, self.pipeline, self.depth = lake, pipeline, depth
        self.histories: dict[str, _History] = {}
        self.seen: set[tuple[str, str, int | None]] = set()

    def history(self, asset: str) -> _History:
        if asset not in self.histories:
            parts = self.pipeline[asset].partitions
            if isinstance(parts, FilePartitions):  # its keys are the files its sensor saw
                parts.load(load_registry(self.lake, asset))
            state = open_table(self.lake, self.pipeline, asset)
            self.histories[asset] = _History.read(self.lake, asset, state)
        return self.histories[asset]

    def node(self, unit: PartitionVersion, via: str | None, depth: int, down: bool) -> LineageNode:
        mark = (unit.asset, unit.partition, unit.version)
        if mark in self.seen:
            return LineageNode(unit, via, (), repeated=True)
        self.seen.add(mark)
        if self.depth is not None and depth >= self.depth:
            return LineageNode(unit, via, ())
        edges = self.fed(unit, depth) if down else self.read(unit, depth)
        return LineageNode(unit, via, tuple(edges))

    def read(self, unit: PartitionVersion, depth: int) -> list[LineageNode]:
        """The upstream partition versions the commit behind `unit` read."""
        if unit.kind not in ("lakeflow", "deleted") or not unit.inputs:
            return []
        inputs = dict(unit.inputs)
        asset = self.pipeline[unit.asset]
        out = []
        for edge in self.pipeline.upstream(unit.asset):
            if edge.up not in inputs:
                continue
            history = self.history(edge.up)
            for key in _mapped(asset.partitions, self.pipeline[edge.up].partitions, edge, unit):
                upstream = history.at(edge.up, key, inputs[edge.up])
                out.append(self.node(upstream, edge.mapping.describe(), depth + 1, down=False))
        return out

    def fed(self, unit: PartitionVersion, depth: int) -> list[LineageNode]:
        """The consumer partition versions whose commits read `unit`."""
        if unit.version is None:
            return []
        until = self.history(unit.asset).current_until(unit.partition, unit.version)
        parts = self.pipeline[unit.asset].partitions
        index = _index(parts, unit.partition)
        out = []
        for edge in self.pipeline.downstream(unit.asset):
            down_parts = self.pipeline[edge.down].partitions
            history = self.history(edge.down)
            all_down = np.arange(len(down_parts), dtype=np.int64)
            lo, hi = edge.mapping.ranges(down_parts, parts, all_down)
            keys = down_parts.keys(all_down[(lo <= index) & (index < hi)])
            for key in keys:
                for entry in history.by_key.get(key, ()):
                    read = dict(entry.inputs).get(unit.asset)
                    if read is not None and unit.version <= read < until:
                        out.append(self.node(entry, edge.mapping.describe(), depth + 1, True))
        return out


def _index(parts: Partitions, key: str) -> int:
    return parts.index(key) if parts.is_partitioned else 0


def _mapped(down: Partitions, up: Partitions, edge: Any, unit: PartitionVersion) -> list[str]:
    lo, hi = edge.mapping.ranges(down, up, np.array([_index(down, unit.partition)]))
    return up.keys(np.arange(int(lo[0]), int(hi[0]), dtype=np.int64))


def trace(
    lake: Lake,
    pipeline: Pipeline,
    asset: str,
    partition: str | None = None,
    *,
    version: int | None = None,
    downstream: bool = False,
    depth: int | None = None,
) -> Lineage:
    """The lineage of `asset`'s `partition` as table version `version` left it (default: now):
    the upstream partition versions it was built from, recursively, or with `downstream=True`
    the consumer partition versions built from it. `depth` limits the levels followed.
    Raises `SelectionError` (unknown asset) or `PartitionError` (not one of its partitions)."""
    definition = pipeline[asset]  # SelectionError for an unknown asset
    tracer = _Tracer(lake, pipeline, depth)
    history = tracer.history(asset)
    parts = definition.partitions
    key = partition or ""
    if parts.is_partitioned:
        if not partition:
            raise PartitionError(
                f"{asset} is partitioned ({parts.describe()}): name one of its partitions"
            )
        parts.index(partition)  # PartitionError for a key that is not one of its partitions
    elif partition:
        raise PartitionError(f"{asset} is not partitioned: it has no partition {partition!r}")
    state = history.state
    if version is not None and not 0 <= version <= state.version:
        raise PartitionError(
            f"{asset} has no version {version}: its versions are 0..{state.version}"
            if state.exists
            else f"{asset} has no table yet"
        )
    at = state.version if version is None else version
    unit = (
        history.at(asset, key, at)
        if state.exists
        else PartitionVersion(asset, key, None, "missing")
    )
    root = tracer.node(unit, None, 0, down=downstream)
    return Lineage(root, "downstream" if downstream else "upstream")


def lineage(
    target: Pipeline | Iterable[AssetDef],
    asset: str,
    partition: str | None = None,
    *,
    version: int | None = None,
    downstream: bool = False,
    depth: int | None = None,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Lineage:
    """What `asset`'s `partition` was built from, recursively (or with `downstream=True`, what
    was built from it), read from the lake's Delta logs; see `trace`.

    >>> lf.lineage(pipeline, "daily_delays", "2013-01-05").rows()
    """
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    return trace(
        where, pipeline, asset, partition, version=version, downstream=downstream, depth=depth
    )
