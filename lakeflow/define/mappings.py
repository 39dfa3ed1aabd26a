"""Partition mappings: which upstream partitions a downstream partition reads.

A mapping answers one vectorized question: for downstream partitions `d` (an index array), the
contiguous upstream index ranges `[lo, hi)` they read. Every mapping lakeflow offers is contiguous
(identity, roll-up, fan-out, lookback, previous, all), which keeps plans as arrays and makes the
reverse direction (which downstream partitions an upstream change touches) a sort, not a search.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from lakeflow.define.partitions import Partitions, StaticPartitions, Unpartitioned
from lakeflow.define.time_windows import TimeWindowPartitions
from lakeflow.errors import DefinitionError

__all__ = [
    "AllPartitions",
    "Identity",
    "Lookback",
    "PartitionMapping",
    "Previous",
    "TimeOverlap",
    "all_partitions",
    "default_mapping",
    "expand_ranges",
    "identity",
    "lookback",
    "previous",
    "rollup",
]


class PartitionMapping(ABC):
    """Maps downstream partition indices to contiguous upstream index ranges."""

    @abstractmethod
    def ranges(
        self, down: Partitions, up: Partitions, indices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) arrays, clipped to the upstream's partitions; empty ranges have hi == lo."""

    def check(self, down: Partitions, up: Partitions) -> None:
        """Raise `DefinitionError` when the mapping cannot join these two definitions."""

    def describe(self) -> str:
        return type(self).__name__.lower()


def _clip(lo: np.ndarray, hi: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    lo = np.clip(lo, 0, count)
    hi = np.clip(hi, 0, count)
    return lo, np.maximum(hi, lo)


@dataclass(frozen=True)
class AllPartitions(PartitionMapping):
    """Every upstream partition: the default for an unpartitioned consumer."""

    def ranges(self, down, up, indices):
        size = len(np.asarray(indices))
        return np.zeros(size, dtype=np.int64), np.full(size, len(up), dtype=np.int64)

    def describe(self) -> str:
        return "all"


@dataclass(frozen=True)
class Identity(PartitionMapping):
    """The partition with the same key (static keys), or the same window (time windows)."""

    def check(self, down, up):
        if isinstance(down, TimeWindowPartitions) and isinstance(up, TimeWindowPartitions):
            return
        if isinstance(down, StaticPartitions) and isinstance(up, StaticPartitions):
            if not set(down.values) & set(up.values):
                raise DefinitionError(
                    "identity mapping between static partitions with no key in common"
                )
            return
        if isinstance(down, Unpartitioned) and isinstance(up, Unpartitioned):
            return
        raise DefinitionError(
            f"identity mapping cannot join {down.describe()} to {up.describe()}",
            hint="use lf.all_partitions() or partitions of the same kind",
        )

    def ranges(self, down, up, indices):
        indices = np.asarray(indices, dtype=np.int64)
        if isinstance(down, TimeWindowPartitions):
            return TimeOverlap().ranges(down, up, indices)
        if isinstance(down, Unpartitioned):
            return np.zeros(len(indices), np.int64), np.ones(len(indices), np.int64)
        lo = up.indices(down.keys(indices))
        hi = np.where(lo >= 0, lo + 1, 0)
        return np.maximum(lo, 0), hi

    def describe(self) -> str:
        return "identity"


def _window_ranges(
    up: TimeWindowPartitions, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Upstream windows overlapping each [start, end) span (datetime64[s]), whatever the two
    cadences: the window holding the start up to the one holding the end, unless it starts there."""
    lo, _ = up.locate(starts)
    last, exact = up.locate(ends)
    return _clip(lo, last + ~exact, len(up))


def _time_pair(down: Partitions, up: Partitions, what: str) -> None:
    if not (isinstance(down, TimeWindowPartitions) and isinstance(up, TimeWindowPartitions)):
        raise DefinitionError(
            f"{what} joins time-window partitions only, not {down.describe()} to {up.describe()}"
        )


@dataclass(frozen=True)
class TimeOverlap(PartitionMapping):
    """Upstream windows that overlap the downstream window: identity for the same cadence, a
    roll-up from finer to coarser (day → month), a fan-out from coarser to finer (day → hour)."""

    def check(self, down, up):
        _time_pair(down, up, "a time mapping")

    def ranges(self, down, up, indices):
        indices = np.asarray(indices, dtype=np.int64)
        return _window_ranges(up, down.starts(indices), down.starts(indices + 1))

    def describe(self) -> str:
        return "overlap"


@dataclass(frozen=True)
class Lookback(PartitionMapping):
    """The windows of the last `periods` downstream partitions, this one included:
    `lookback(7)` on a daily asset reads the last 7 days of its upstream."""

    periods: int

    def __post_init__(self) -> None:
        if self.periods < 1:
            raise DefinitionError(f"lookback needs at least 1 period, got {self.periods}")

    def check(self, down, up):
        _time_pair(down, up, "lookback")

    def ranges(self, down, up, indices):
        indices = np.asarray(indices, dtype=np.int64)
        return _window_ranges(
            up, down.starts(indices - (self.periods - 1)), down.starts(indices + 1)
        )

    def describe(self) -> str:
        return f"lookback({self.periods})"


@dataclass(frozen=True)
class Previous(PartitionMapping):
    """The partition `periods` before this one in the same definition (a cumulative table)."""

    periods: int = 1

    def __post_init__(self) -> None:
        if self.periods < 1:
            raise DefinitionError(f"previous needs at least 1 period, got {self.periods}")

    def check(self, down, up):
        if down != up or isinstance(down, Unpartitioned):
            raise DefinitionError("previous() maps between partitions of the same definition only")

    def ranges(self, down, up, indices):
        indices = np.asarray(indices, dtype=np.int64)
        return _clip(indices - self.periods, indices - self.periods + 1, len(up))

    def describe(self) -> str:
        return f"previous({self.periods})"


def identity() -> PartitionMapping:
    """The same partition upstream (the default between alike partitions)."""
    return Identity()


def all_partitions() -> PartitionMapping:
    """Every upstream partition."""
    return AllPartitions()


def rollup() -> PartitionMapping:
    """Calendar roll-up: a monthly partition reads every day (or hour) of its month."""
    return TimeOverlap()


def lookback(periods: int) -> PartitionMapping:
    """The last `periods` downstream windows' worth of upstream partitions."""
    return Lookback(periods)


def previous(periods: int = 1) -> PartitionMapping:
    """The asset's own partition `periods` earlier, for tables that build on yesterday."""
    return Previous(periods)


def default_mapping(down: Partitions, up: Partitions) -> PartitionMapping:
    """The mapping used when an asset names none for an input."""
    if isinstance(down, Unpartitioned) or isinstance(up, Unpartitioned):
        return AllPartitions()
    if isinstance(down, TimeWindowPartitions) and isinstance(up, TimeWindowPartitions):
        return TimeOverlap()
    if isinstance(down, StaticPartitions) and isinstance(up, StaticPartitions):
        return Identity()
    raise DefinitionError(
        f"no default mapping from {up.describe()} to {down.describe()}",
        hint="name one in inputs=, e.g. inputs={'x': lf.all_partitions()}",
    )


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of ranges: (owner position, upstream index) for every index in every [lo, hi)."""
    lengths = hi - lo
    owners = np.repeat(np.arange(len(lo), dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owners, np.repeat(lo, lengths) + (np.arange(int(lengths.sum()), dtype=np.int64) - starts)
