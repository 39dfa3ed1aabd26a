"""The planner: a request and the tables' state in, a plan of units out. Pure: no Ray, no I/O.

Units are numbered globally (asset by asset in topological order), so a plan is a handful of
arrays: each asset's planned partition indices, each unit's count of upstream units it waits
for, and the reverse edges in CSR form. A million units is tens of megabytes and a few seconds.

Fresh means: published by lakeflow, with the asset's current code version, and no mapped
upstream partition touched since the versions recorded at that publish. A unit also runs when an
upstream unit it reads runs in the same plan.

A file sensor's partition (`FilePartitions`, `on_change="rerun"`) is also stale when its file's
stamp, as the sensor last took it, differs from the one its publish recorded.

Deleted upstream: an upstream partition that a commit emptied (touched, holding no files) is
known to be empty, unlike one never written, which is missing. A partition whose inputs are all
such (see `gaps.vanished`) has nothing to be built from: if it holds data it becomes a delete unit
(`Plan.deletes`), else there is nothing to do. A partition whose inputs still hold some data
(a roll-up or lookback window with a day gone) runs on what remains.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lakeflow.define.graph import Pipeline
from lakeflow.define.mappings import AllPartitions, expand_ranges
from lakeflow.define.partitions import STAMP_KEYS, FilePartitions, Partitions
from lakeflow.errors import PartitionError, RequestError
from lakeflow.plan.gaps import (
    MissingInput,
    deleted_partitions,
    range_count,
    range_max,
    vanished,
    waiting_units,
)
from lakeflow.plan.snapshots import AssetSnapshot, snapshot

__all__ = [
    "AssetSnapshot",
    "MissingInput",
    "Plan",
    "Request",
    "build_plan",
    "check_request",
    "default_plan",
    "file_changed",
    "partition_status",
    "snapshot",
]


@dataclass(frozen=True)
class Request:
    """What a user asked for. `partitions` is a spec such as "2013-01-01..2013-01-31"."""

    select: tuple[str, ...]
    partitions: str | tuple[str, ...] | None = None
    force: bool = False
    order: str = "oldest"  # or "newest": which partitions go first
    only: str | None = None  # "missing", "stale", "failed" or "all"; None: missing or stale
    kind: str = "materialize"  # or "backfill": larger commits, a share of the cluster
    concurrency: int | None = None  # tasks of this run in flight at most
    max_share: float | None = None  # fraction of the cluster's task slots this run may use

    def __post_init__(self) -> None:
        if self.only not in (None, "missing", "stale", "failed", "all"):
            raise RequestError(f"only must be missing, stale, failed or all, not {self.only!r}")
        if self.order not in ("oldest", "newest"):
            raise RequestError(f"order must be oldest or newest, not {self.order!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise RequestError("concurrency must be at least 1")
        if self.max_share is not None and not 0 < self.max_share <= 1:
            raise RequestError("max_share must be in (0, 1]")


@dataclass(frozen=True)
class Plan:
    """Units to run and how they wait on each other.

    Unit `u` of asset `assets[j]` is partition `indices[j][u - offsets[j]]`.
    """

    assets: tuple[str, ...]
    indices: tuple[np.ndarray, ...]
    offsets: np.ndarray  # int64, len(assets) + 1
    waits: np.ndarray  # int32 per unit: upstream units in the plan it waits for
    down_ptr: np.ndarray  # CSR: downstream units of unit u are down_ids[down_ptr[u]:down_ptr[u+1]]
    down_ids: np.ndarray
    ranges: Mapping[
        tuple[str, str], tuple[np.ndarray, np.ndarray]
    ]  # (down, up) -> lo, hi per planned unit
    fresh: Mapping[str, np.ndarray]  # asset -> selected partition indices skipped as fresh
    missing: tuple[MissingInput, ...] = ()  # the first 1,000, with the input each lacks
    unready: np.ndarray | None = None  # every unit that lacks an input (unit ids, sorted)
    order: str = "oldest"
    # units left out: an input partition they need is missing and outside the request (a roll-up
    # or lookback window reaching past the requested span), or is itself such a unit
    waiting: tuple[MissingInput, ...] = ()
    selected: tuple[str, ...] = field(default=())
    deletes: np.ndarray | None = None  # bool per unit: remove the partition's data, build nothing

    def is_delete(self, unit: int) -> bool:
        return self.deletes is not None and bool(self.deletes[unit])

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def asset_of(self, unit: int) -> int:
        return bisect.bisect_right(self._bounds, unit) - 1

    @functools.cached_property
    def _bounds(self) -> list[int]:
        return self.offsets.tolist()

    def locate(self, unit: int) -> tuple[str, int]:
        """(asset, partition index) of a unit."""
        j = self.asset_of(unit)
        return self.assets[j], int(self.indices[j][unit - self._bounds[j]])

    def unit(self, asset: str, index: int) -> int | None:
        j = self.assets.index(asset)
        pos = int(np.searchsorted(self.indices[j], index))
        if pos < len(self.indices[j]) and self.indices[j][pos] == index:
            return int(self.offsets[j]) + pos
        return None

    def downstream(self, unit: int) -> np.ndarray:
        return self.down_ids[self.down_ptr[unit] : self.down_ptr[unit + 1]]

    def counts(self) -> dict[str, int]:
        return {a: len(i) for a, i in zip(self.assets, self.indices, strict=True)}


def _wanted(
    request: Request,
    name: str,
    candidates: np.ndarray,
    snapshots: Mapping[str, AssetSnapshot],
    pipeline: Pipeline,
    failed: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Which candidate partitions the request's mode asks for, before propagation."""
    present = snapshots[name].present[candidates]
    if request.force or request.only == "all":
        return np.ones(len(candidates), bool)
    if request.only == "missing":
        return ~present
    if request.only == "failed":
        return np.isin(candidates, failed.get(name, np.zeros(0, np.int64)))
    stale = _stale(pipeline, name, candidates, snapshots, {})
    return (present & stale) if request.only == "stale" else (~present | stale)


def _stale(
    pipeline: Pipeline,
    name: str,
    candidates: np.ndarray,
    snapshots: Mapping[str, AssetSnapshot],
    upstream_flags: Mapping[str, np.ndarray],
    *,
    only_flags: bool = False,
) -> np.ndarray:
    """For each candidate partition: built by other code, or an input changed since its publish,
    or a mapped upstream partition is flagged in `upstream_flags` (rerunning, or itself stale).
    With `only_flags`, just the last."""
    definition = pipeline[name]
    parts = definition.partitions
    if only_flags:
        stale = np.zeros(len(candidates), bool)
    else:
        snap = snapshots[name]
        stale = snap.code[candidates] != definition.code_version
        if isinstance(parts, FilePartitions) and parts.on_change == "rerun":
            stale |= file_changed(parts, snap, candidates)
    for edge in pipeline.upstream(name):
        lo, hi = edge.mapping.ranges(parts, pipeline[edge.up].partitions, candidates)
        if not only_flags:
            recorded = snap.inputs.get(edge.up, np.full(len(parts), -1, np.int64))[candidates]
            stale |= range_max(snapshots[edge.up].touched, lo, hi) > recorded
        flags = upstream_flags.get(edge.up) if edge.up != name else None
        if flags is not None:
            stale |= range_count(flags, lo, hi) > 0
    return stale


def file_changed(parts: FilePartitions, snap: AssetSnapshot, candidates: np.ndarray) -> np.ndarray:
    """For each candidate partition: was its file's stamp, as the sensor last took it, another
    than the one its publish recorded? Unknown on either side (a lake from before stamps) is
    no change."""
    changed = np.zeros(len(candidates), bool)
    now = parts.stamps()
    for name in STAMP_KEYS:
        recorded = snap.inputs.get(name)
        if recorded is None:
            continue
        was, current = recorded[candidates], now[name][candidates]
        changed |= (was >= 0) & (current >= 0) & (was != current)
    return changed


def _cascade_self(pipeline: Pipeline, name: str, candidates: np.ndarray, flags: np.ndarray) -> None:
    """A partition built on its own earlier partition is flagged when that one is."""
    edges = [e for e in pipeline.upstream(name) if e.up == name]
    if not edges:
        return
    parts = pipeline[name].partitions
    lo, hi = edges[0].mapping.ranges(parts, parts, np.arange(len(parts)))
    chosen = np.zeros(len(parts), bool)
    chosen[candidates] = True
    for i in np.flatnonzero(chosen).tolist():
        if not flags[i] and hi[i] > lo[i] and flags[lo[i] : hi[i]].any():
            flags[i] = True


FRESH, STALE, MISSING, DELETED = 0, 1, 2, 3


def partition_status(
    pipeline: Pipeline, snapshots: Mapping[str, AssetSnapshot]
) -> dict[str, np.ndarray]:
    """Per asset, per partition: FRESH (built from what its inputs hold now, by the current
    code), STALE (published, but its code or an input changed, here or upstream), MISSING (no
    data) or DELETED (no data, and nothing to build it from: deleted upstream, see `gaps.vanished`;
    for a source, emptied by a commit). A source is never stale: lakeflow does not build it, its
    partitions holding data are FRESH. `snapshots` holds every asset of the pipeline.

    This is each partition's own state; what a run would do about it is `default_plan`'s (a
    fresh partition still runs when an input of it is planned, e.g. a missing one)."""
    out: dict[str, np.ndarray] = {}
    stale_flags: dict[str, np.ndarray] = {}
    for name in pipeline.assets:
        snap = snapshots[name]
        everything = np.arange(len(snap.present))
        stale = np.zeros(len(everything), bool)
        if not pipeline[name].source:  # a source's data is what its producer wrote: current
            stale[:] = _stale(pipeline, name, everything, snapshots, stale_flags) & snap.present
        _cascade_self(pipeline, name, everything[snap.present], stale)
        stale_flags[name] = stale
        absent = np.where(deleted_partitions(pipeline, name, snapshots), DELETED, MISSING)
        out[name] = np.where(snap.present, np.where(stale, STALE, FRESH), absent).astype(np.int8)
    return out


def default_plan(pipeline: Pipeline, snapshots: Mapping[str, AssetSnapshot]) -> Plan | None:
    """What a backfill of every asset lakeflow builds, in the default mode, would run now (the
    units `backfill --dry-run` counts); None for a pipeline of sources only."""
    built = [n for n, a in pipeline.assets.items() if not a.source]
    return build_plan(pipeline, Request(select=tuple(built)), snapshots) if built else None


def _selected(pipeline: Pipeline, request: Request) -> list[str]:
    selected = pipeline.select(list(request.select))
    if request.partitions is not None and not any(
        pipeline[a].partitions.is_partitioned for a in selected
    ):
        raise PartitionError("partitions were given but no selected asset is partitioned")
    return selected


def _candidates(name: str, parts: Partitions, request: Request) -> np.ndarray:
    try:
        return parts.select(request.partitions)
    except PartitionError as error:
        raise PartitionError(f"asset {name}: {error.message}", hint=error.hint) from None


def check_request(pipeline: Pipeline, request: Request) -> None:
    """Refuse a request that no lake state can make right (an unknown asset, a malformed or
    reversed partition spec, a key outside an asset's partitions) without reading the lake, so
    that a caller can do it before it starts or reaches Ray. File partitions are left to the
    planner: their keys live in the lake."""
    for name in _selected(pipeline, request):
        parts = pipeline[name].partitions
        if not isinstance(parts, FilePartitions):
            _candidates(name, parts, request)


def build_plan(
    pipeline: Pipeline,
    request: Request,
    snapshots: Mapping[str, AssetSnapshot],
    *,
    done: Mapping[str, np.ndarray] | None = None,
    failed: Mapping[str, np.ndarray] | None = None,
) -> Plan:
    """Plan `request`. `snapshots` holds every selected asset and every upstream they read.

    `done` lists, per asset, partitions to leave out whatever their freshness (a resumed run's
    units that it already published); `failed`, the partitions whose last outcome was a failure
    (for `only="failed"`). Whatever the mode, a unit also runs when a unit it reads runs.

    A partition whose inputs were all deleted upstream (`gaps.vanished`) is never built: when the
    mode asks for it and it holds data, it is a delete unit (`Plan.deletes`); when it holds
    none, it counts as fresh, whatever the mode (also with `force`).
    """
    selected = _selected(pipeline, request)
    planned: dict[str, np.ndarray] = {}  # asset -> bool mask over its partitions
    fresh: dict[str, np.ndarray] = {}
    ranges: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    deleting: dict[str, np.ndarray] = {}  # asset -> bool mask: delete units
    waiting: list[MissingInput] = []
    waiting_masks: dict[str, np.ndarray] = {}  # asset -> bool mask: units left out as waiting
    for name in selected:
        definition = pipeline[name]
        parts = definition.partitions
        candidates = _candidates(name, parts, request)
        run = np.zeros(len(parts), bool)
        run[candidates] = _wanted(request, name, candidates, snapshots, pipeline, failed or {})
        run[candidates] |= _stale(pipeline, name, candidates, {}, planned, only_flags=True)
        _cascade_self(pipeline, name, candidates, run)
        gone = np.zeros(len(parts), bool)
        gone[candidates] = vanished(pipeline, name, candidates, snapshots, planned, deleting)
        run &= ~(gone & ~snapshots[name].present)  # nothing there, nothing to build it from
        skipped = candidates[~run[candidates]]
        if done and name in done:
            run[done[name]] = False
            skipped = np.setdiff1d(candidates[~run[candidates]], done[name])  # published, not fresh
        if request.partitions is not None:
            waits, why = waiting_units(
                pipeline, request.partitions, name, run, snapshots, planned, waiting_masks
            )
            run &= ~waits
            waiting.extend(why)
            waiting_masks[name] = waits
        deleting[name] = run & gone
        planned[name] = run
        fresh[name] = skipped
    assets = tuple(a for a in selected if planned[a].any())
    indices = tuple(np.flatnonzero(planned[a]).astype(np.int64) for a in assets)
    offsets = np.concatenate(([0], np.cumsum([len(i) for i in indices]))).astype(np.int64)
    ups_edges: list[np.ndarray] = []
    downs_edges: list[np.ndarray] = []
    missing: list[MissingInput] = []
    unready: list[np.ndarray] = []
    for j, name in enumerate(assets):
        parts = pipeline[name].partitions
        for edge in pipeline.upstream(name):
            up = pipeline[edge.up].partitions
            lo, hi = edge.mapping.ranges(parts, up, indices[j])
            ranges[(name, edge.up)] = (lo, hi)
            up_planned = planned.get(edge.up, np.zeros(len(up), bool))
            strict = not (isinstance(edge.mapping, AllPartitions) and up.is_partitioned)
            if strict:  # a partition emptied by a commit is there: it reads as empty
                available = (
                    snapshots[edge.up].present | up_planned | (snapshots[edge.up].touched >= 0)
                )
                short = np.flatnonzero(range_count(available, lo, hi) < hi - lo)
                unready.append(offsets[j] + short)
                for pos in short[:1000].tolist():
                    gap = lo[pos] + int(np.flatnonzero(~available[lo[pos] : hi[pos]])[0])
                    missing.append(MissingInput(name, int(indices[j][pos]), edge.up, gap))
            if edge.up not in assets:
                continue
            owners, ups = expand_ranges(lo, hi)
            keep = up_planned[ups]
            owners, ups = owners[keep], ups[keep]
            k = assets.index(edge.up)
            ups_edges.append(offsets[k] + np.searchsorted(indices[k], ups))
            downs_edges.append(offsets[j] + owners)
    size = int(offsets[-1])
    up_ids = np.concatenate(ups_edges) if ups_edges else np.zeros(0, np.int64)
    down_ids = np.concatenate(downs_edges) if downs_edges else np.zeros(0, np.int64)
    waits = np.bincount(down_ids, minlength=size).astype(np.int32)
    order = np.argsort(up_ids, kind="stable")
    down_ptr = np.concatenate(([0], np.cumsum(np.bincount(up_ids, minlength=size)))).astype(
        np.int64
    )
    return Plan(
        assets=assets,
        indices=indices,
        offsets=offsets,
        waits=waits,
        down_ptr=down_ptr,
        down_ids=down_ids[order],
        ranges=ranges,
        fresh=fresh,
        missing=tuple(missing),
        unready=np.unique(np.concatenate(unready)) if unready else np.zeros(0, np.int64),
        waiting=tuple(waiting),
        order=request.order,
        selected=tuple(selected),
        deletes=np.concatenate(
            [np.zeros(0, bool)] + [deleting[a][i] for a, i in zip(assets, indices, strict=True)]
        ),
    )
