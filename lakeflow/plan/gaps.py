"""Gaps in what a plan's units read: partitions whose inputs were all deleted upstream (they
become delete units, or nothing to do), and units that wait because an input they miss lies
outside the request. Pure: arrays in, arrays out; also the range counts the planner shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lakeflow.define.graph import Pipeline
from lakeflow.define.mappings import AllPartitions, PartitionMapping, expand_ranges
from lakeflow.errors import PartitionError
from lakeflow.plan.snapshots import AssetSnapshot

__all__ = [
    "MissingInput",
    "deleted_partitions",
    "derives",
    "range_count",
    "range_max",
    "vanished",
    "waiting_units",
]


@dataclass(frozen=True)
class MissingInput:
    """A unit that cannot run: an input partition is neither published nor planned."""

    asset: str
    index: int
    upstream: str
    upstream_index: int


def range_count(mask: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    prefix = np.concatenate(([0], np.cumsum(mask, dtype=np.int64)))
    return prefix[hi] - prefix[lo]


def range_max(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo:hi]) per range, -1 for empty ranges."""
    out = np.full(len(lo), -1, np.int64)
    nonempty = hi > lo
    if not nonempty.any() or len(values) == 0:
        return out
    if np.all(hi[nonempty] - lo[nonempty] == 1):
        out[nonempty] = values[lo[nonempty]]
        return out
    owners, ups = expand_ranges(lo[nonempty], hi[nonempty])
    best = np.full(int(nonempty.sum()), -1, np.int64)
    np.maximum.at(best, owners, values[ups])
    out[nonempty] = best
    return out


def derives(mapping: PartitionMapping, up_partitioned: bool) -> bool:
    """Does a partition come from this input (not just look things up in all of it)?"""
    return up_partitioned and not isinstance(mapping, AllPartitions)


def vanished(
    pipeline: Pipeline,
    name: str,
    candidates: np.ndarray,
    snapshots: Mapping[str, AssetSnapshot],
    planned: Mapping[str, np.ndarray],
    deleting: Mapping[str, np.ndarray],
) -> np.ndarray:
    """For each candidate partition: everything it is derived from was deleted upstream.

    Through every input it is derived from (a partitioned input under a key or time mapping;
    `all_partitions` lookups and its own earlier partitions do not count), no partition it reads
    holds data or is being built in this plan, and at least one of them was emptied by a commit
    or is being deleted in this plan (never-written partitions make a missing input instead)."""
    parts = pipeline[name].partitions
    edges = [
        e
        for e in pipeline.upstream(name)
        if e.up != name and derives(e.mapping, pipeline[e.up].partitions.is_partitioned)
    ]
    if not parts.is_partitioned or not edges:
        return np.zeros(len(candidates), bool)
    out = np.ones(len(candidates), bool)
    for edge in edges:
        snap = snapshots[edge.up]
        none = np.zeros(len(snap.present), bool)
        dropping = deleting.get(edge.up, none)
        building = planned.get(edge.up, none) & ~dropping
        live = (snap.present & ~dropping) | building
        gone = ((snap.touched >= 0) & ~snap.present & ~building) | dropping
        lo, hi = edge.mapping.ranges(parts, pipeline[edge.up].partitions, candidates)
        out &= (range_count(live, lo, hi) == 0) & (range_count(gone, lo, hi) > 0)
    return out


def deleted_partitions(
    pipeline: Pipeline, name: str, snapshots: Mapping[str, AssetSnapshot]
) -> np.ndarray:
    """Partitions that hold nothing and that no plan would build: a source's partitions a commit
    emptied, an asset's partitions whose inputs were all deleted upstream."""
    snap = snapshots[name]
    if pipeline[name].source:
        return ~snap.present & (snap.touched >= 0)
    everything = np.arange(len(snap.present))
    return ~snap.present & vanished(pipeline, name, everything, snapshots, {}, {})


def waiting_units(
    pipeline: Pipeline,
    selection: Any,
    name: str,
    run: np.ndarray,
    snapshots: Mapping[str, AssetSnapshot],
    planned: Mapping[str, np.ndarray],
    waiting: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, list[MissingInput]]:
    """The units of `name` in `run` that wait rather than fail: every input partition they miss
    lies outside the requested partitions (a monthly roll-up of a request for three of its days,
    a lookback reaching before the span) or is a unit that waits itself. Selecting more assets
    would not build those partitions; a later run whose request covers them will. Returns a mask
    over the asset's partitions and, per waiting unit, the first partition it waits for."""
    parts = pipeline[name].partitions
    units = np.flatnonzero(run)
    out = np.zeros(len(parts), bool)
    if len(units) == 0:
        return out, []
    inside_gap = np.zeros(len(units), bool)
    outside_gap = np.zeros(len(units), bool)
    first: dict[int, MissingInput] = {}
    for edge in pipeline.upstream(name):
        up = pipeline[edge.up].partitions
        if edge.up == name or (isinstance(edge.mapping, AllPartitions) and up.is_partitioned):
            continue  # its own earlier partitions, lookups in a whole table: never missing
        snap = snapshots[edge.up]
        none = np.zeros(len(up), bool)
        gap = ~(snap.present | planned.get(edge.up, none) | (snap.touched >= 0))
        outside = np.ones(len(up), bool)
        try:
            outside[up.select(selection)] = False
        except PartitionError:  # the request does not speak of these partitions: all inside
            outside[:] = False
        outside |= waiting.get(edge.up, none)
        lo, hi = edge.mapping.ranges(parts, up, units)
        inside_gap |= range_count(gap & ~outside, lo, hi) > 0
        beyond = gap & outside
        hits = range_count(beyond, lo, hi) > 0
        for pos in np.flatnonzero(hits & ~outside_gap)[:1000].tolist():
            at = int(lo[pos]) + int(np.flatnonzero(beyond[lo[pos] : hi[pos]])[0])
            first[pos] = MissingInput(name, int(units[pos]), edge.up, at)
        outside_gap |= hits
    waits = outside_gap & ~inside_gap
    out[units[waits]] = True
    return out, [first[p] for p in np.flatnonzero(waits).tolist() if p in first]
