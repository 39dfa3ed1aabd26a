"""Time-window partitions: the windows between consecutive ticks of a cron (`TimeWindowPartitions`,
any cadence: 5-minute, weekly, in a timezone), and the calendar ones (UTC hours, days, months)
as numpy datetime64 ranges, which are cron windows too but counted by arithmetic.

A key is the window's start written at its own granularity (`2013-01-01T05-10`, `2013-01-01T05`,
`2013-01-01`, `2013-01`), and the end given to a definition is exclusive (`end="2014-01-01"`
ends on 2013-12-31). A user's spec (`"2013-01-01..2013-01-31"`, `"2013-01"`, `"*"`) is read as
a time span, so one spec selects the matching partitions of any cadence alike: a monthly asset
given a day range gets the months that range touches.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from lakeflow.define.cron_ticks import (
    KEY_FORMATS,
    as_seconds,
    check_cron,
    cron_granularity,
    format_walls,
    parse_instant,
    parse_span,
    tick_at_or_before,
    ticks_between,
    walls,
)
from lakeflow.define.partitions import Partition, Partitions, selects_all, split_spec, validate_key
from lakeflow.errors import DefinitionError, PartitionError

__all__ = [
    "WINDOWS",
    "DailyPartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "TimeWindowPartitions",
]


_KEY_SECONDS = {"D": 86_400, "h": 3_600, "m": 60}  # what a key of each granularity shows


class TimeWindowPartitions(Partitions):
    """One partition per window between consecutive ticks of a cron, from `start` (a tick) to
    `end` (exclusive; None: up to the last window that has ended by now).

    >>> five = lf.TimeWindowPartitions(cron="*/5 * * * *", start="2024-01-01")
    >>> five.key(0), five.key(1)
    ('2024-01-01T00-00', '2024-01-01T00-05')
    >>> weeks = lf.TimeWindowPartitions(cron="0 0 * * 1", start="2024-01-01", timezone="Europe/Paris")

    Keys are the window's start in `timezone`, at the granularity the cron needs (a day, an hour
    or a minute). Windows shorter than a day are in UTC (daylight saving time would repeat or skip
    their keys). The mappings and spec spans of the calendar partitions apply alike.
    """

    unit: ClassVar[str | None] = None  # the calendar windows' numpy unit

    def __init__(
        self,
        *,
        cron: str,
        start: str | datetime,
        end: str | datetime | None = None,
        timezone: str = "UTC",
        column: str = "window",
    ) -> None:
        self.cron, self._zone = check_cron(cron, timezone)
        self.timezone = self._zone.key
        self.start, self.end = start, end
        try:
            self.column = validate_key(column, what="partition column")
        except PartitionError as error:
            raise DefinitionError(error.message, hint=error.hint) from None
        self.granularity = cron_granularity(cron)
        first = as_seconds(parse_instant(start, what="start"), self._zone)
        if tick_at_or_before(self.cron, self._zone, first) != first:
            raise DefinitionError(
                f"start {start!r} is not a tick of {cron!r} ({self.timezone})",
                hint=f"the ticks around it: {self._around(first)}",
            )
        self._first = first
        self._end_s: int | None = None
        if end is not None:
            self._end_s = as_seconds(parse_instant(end, what="end"), self._zone)
            if self._end_s <= first:
                raise DefinitionError(f"partitions end {end} is not after start {start}")
        self._reset()

    def _around(self, instant: int) -> str:
        before = tick_at_or_before(self.cron, self._zone, instant)
        after = ticks_between(self.cron, self._zone, instant, instant + 400 * 86_400)[:1]
        shown = [self._wall_key(t) for t in [before, *after.tolist()] if t is not None]
        return " and ".join(shown) or "none: the cron never fires"

    def _wall_key(self, tick: int) -> str:
        return format_walls(walls(np.array([tick]), self._zone), self.granularity)[0]

    # -- the tick cache: ticks[zero] is the first window's start ---------------------------------
    def _reset(self) -> None:
        self._ticks = np.array([self._first], np.int64)
        self._walls = walls(self._ticks, self._zone)
        self._keyed = self._truncated(self._walls)
        self._zero = 0
        self._ended: int | None = None  # len() with an end

    def _truncated(self, walls_s: np.ndarray) -> np.ndarray:
        """Wall-clock seconds cut to what a key shows (the day, hour or minute)."""
        unit = _KEY_SECONDS[self.granularity]
        return walls_s - walls_s % unit

    def _extend(self, ticks: np.ndarray, *, front: bool = False) -> None:
        """Add ticks after (or before) the cached ones. A tick whose key its neighbour already
        has is dropped: where daylight saving time turns the clock back at midnight, a daily
        cron fires twice on one date, and one date is one window (of 25 hours)."""
        if not len(ticks):
            return
        more = walls(ticks, self._zone)
        keyed = self._truncated(more)
        if front:
            keep = keyed != np.append(keyed[1:], self._keyed[0])
        else:
            keep = keyed != np.insert(keyed[:-1], 0, self._keyed[-1])
        ticks, more, keyed = ticks[keep], more[keep], keyed[keep]
        if not len(ticks):
            return
        pairs = ((ticks, self._ticks), (more, self._walls), (keyed, self._keyed))
        if not front:
            pairs = tuple((old, new) for new, old in pairs)
        self._ticks, self._walls, self._keyed = (np.concatenate(p) for p in pairs)
        self._zero += len(ticks) if front else 0

    def _cover(self, instant: int) -> None:
        """Ticks up to past `instant`: its window and the next start are known."""
        span = 86_400
        while self._ticks[-1] <= instant:
            last = int(self._ticks[-1])
            found = ticks_between(self.cron, self._zone, last + 1, max(instant + 1, last + span))
            self._extend(found)
            span *= 2

    def _reach(self, lo: int, hi: int) -> None:
        """Ticks for indices lo..hi (relative to the first window)."""
        span = 86_400
        while self._zero + hi >= len(self._ticks):
            last = int(self._ticks[-1])
            self._extend(ticks_between(self.cron, self._zone, last + 1, last + span))
            span *= 2
        while self._zero + lo < 0:
            oldest = int(self._ticks[0])
            tick = tick_at_or_before(self.cron, self._zone, oldest - 1)
            if tick is None:
                raise PartitionError(f"{self.cron!r} has no tick before {self._wall_key(oldest)}")
            self._extend(np.array([tick], np.int64), front=True)

    def __getstate__(self) -> dict[str, Any]:
        """The definition without its cache (rebuilt where it is used)."""
        state = dict(self.__dict__)
        for name in ("_ticks", "_walls", "_keyed", "_zero", "_ended"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _identity(self) -> tuple[Any, ...]:
        return (type(self), self.cron, self.timezone, self._first, self._end_s, self.column)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TimeWindowPartitions) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return (
            f"TimeWindowPartitions(cron={self.cron!r}, start={self.start!r}, end={self.end!r}, "
            f"timezone={self.timezone!r}, column={self.column!r})"
        )

    # -- the definition ------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._end_s is not None:
            if self._ended is None:
                self._cover(self._end_s)
                self._ended = int(np.searchsorted(self._ticks, self._end_s)) - self._zero
            return self._ended
        now = int(time.time())
        self._cover(now)
        return max(0, int(np.searchsorted(self._ticks, now, side="right")) - self._zero - 1)

    def starts(self, indices: np.ndarray) -> np.ndarray:
        """Window starts (datetime64 in seconds) of `indices`; indices may lie outside 0..n-1."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices):
            self._reach(int(indices.min()), int(indices.max()))
        return self._ticks[self._zero + indices].astype("datetime64[s]")

    def locate(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For instants (datetime64[s]): the index of the window holding each (-1 before the
        first), and whether it is the window's start."""
        seconds = np.asarray(times).astype("datetime64[s]").astype(np.int64)
        if len(seconds):
            self._cover(int(seconds.max()))
        position = np.searchsorted(self._ticks, seconds, side="right") - 1
        exact = (position >= 0) & (self._ticks[np.maximum(position, 0)] == seconds)
        return np.where(position >= 0, position - self._zero, -1), exact

    def key_at(self, when: datetime) -> str:
        """The key of the window holding `when` (which need not be one of the partitions)."""
        tick = tick_at_or_before(self.cron, self._zone, when.timestamp())
        if tick is None:
            raise PartitionError(f"{self.cron!r} has no tick at or before {when.isoformat()}")
        return self._wall_key(tick)

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        indices = np.arange(len(self)) if indices is None else np.asarray(indices, np.int64)
        if len(indices):
            self._reach(int(indices.min()), int(indices.max()))
        return format_walls(self._walls[self._zero + indices], self.granularity)

    def index(self, key: str) -> int:
        pattern, example = KEY_FORMATS[self.granularity]
        validate_key(key)
        if not pattern.match(key):
            raise PartitionError(
                f"malformed partition key {key!r}", hint=f"write it like {example}"
            )
        wall = parse_span(key)[0]
        count = len(self)
        position = int(np.searchsorted(self._keyed, wall)) - self._zero
        if position < 0:
            raise PartitionError(f"{key} is before the first partition {self.key(0)}")
        if position >= count:
            last = self.key(count - 1) if count else "(none yet)"
            raise PartitionError(f"{key} is after the last partition {last}")
        if self._keyed[self._zero + position] != wall:
            raise PartitionError(f"{key} is no window start of {self.cron!r} ({self.timezone})")
        return position

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        """Indices of `keys` (-1 for keys that are no partition), parsed and looked up as arrays:
        a million keys in well under a second."""
        keys = list(keys)
        if not keys:
            return np.zeros(0, np.int64)
        unit = self.granularity
        text = [k[:13] + ":" + k[14:] if len(k) == 16 else k for k in keys] if unit == "m" else keys
        try:
            instants = np.array(text, dtype=f"datetime64[{unit}]")
        except ValueError:  # a malformed key among them: one at a time, as the base does
            return Partitions.indices(self, keys)
        wall = instants.astype("datetime64[s]").astype(np.int64)
        count = len(self)
        found = np.searchsorted(self._keyed, wall)
        hit = (found < len(self._keyed)) & (
            self._keyed[np.minimum(found, len(self._keyed) - 1)] == wall
        )
        position = found - self._zero
        hit &= (position >= 0) & (position < count)
        hit &= np.array(format_walls(wall, unit), dtype=object) == np.array(keys, dtype=object)
        return np.where(hit, position, -1).astype(np.int64)

    def partition(self, index: int) -> Partition:
        start, end = self.starts(np.array([index, index + 1])).astype(datetime)
        return Partition(self.key(index), start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        count = len(self)
        if selects_all(spec):
            return np.arange(count, dtype=np.int64)
        assert spec is not None
        chosen = []
        for item in split_spec(spec):
            lo_text, sep, hi_text = item.partition("..")
            if sep and not (lo_text and hi_text):
                raise PartitionError(
                    f"malformed partition range {item!r}",
                    hint="write it like 2024-01-01..2024-01-31",
                )
            lo = parse_span(lo_text)[0]
            hi = parse_span(hi_text if sep else lo_text)[1]
            if hi <= lo:
                raise PartitionError(f"range {item!r} runs backwards")
            self._reach(0, count)
            first, last = self._walls[self._zero], self._walls[self._zero + count]
            if lo < first:
                raise PartitionError(f"{lo_text} is before the first partition {self.key(0)}")
            if hi > last:
                raise PartitionError(
                    f"{hi_text if sep else lo_text} is after the last partition "
                    f"{self.key(count - 1) if count else '(none yet)'}"
                )
            lo_i = int(np.searchsorted(self._walls, lo, side="right")) - 1 - self._zero
            hi_i = int(np.searchsorted(self._walls, hi)) - self._zero
            chosen.append(np.arange(lo_i, hi_i, dtype=np.int64))
        return np.unique(np.concatenate(chosen))

    def describe(self) -> str:
        count = len(self)
        span = f"{self.key(0)}..{self.key(count - 1)}" if count else f"from {self.start} (none yet)"
        zone = "" if self.timezone == "UTC" else f" {self.timezone}"
        return f"windows {self.cron!r}{zone} {span} ({count})"

    def definition(self) -> str:
        return repr(self)  # cron, start, end, zone, column: not how many windows have passed


@dataclass(frozen=True)
class _CalendarWindows(TimeWindowPartitions):
    """Consecutive UTC windows of one numpy unit ('h', 'D' or 'M') from `start` to `end` (exclusive).

    With no `end`, the partitions run up to the last window that has ended by now.
    """

    unit: ClassVar[str] = "D"
    start: str
    end: str | None = None
    column: str | None = "date"

    _FORMATS: ClassVar[dict[str, re.Pattern[str]]] = {
        "h": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$"),
        "D": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
        "M": re.compile(r"^\d{4}-\d{2}$"),
    }
    _EXAMPLES: ClassVar[dict[str, str]] = {"h": "2013-01-01T05", "D": "2013-01-01", "M": "2013-01"}

    def __post_init__(self) -> None:
        start = self._parse(self.start, self.unit, what="start")
        object.__setattr__(self, "_start", start)
        object.__setattr__(self, "_first", start.astype("datetime64[s]").item())
        end = None
        if self.end is not None:
            end = self._parse_bound(self.end, what="end")[0]
            if end <= start.astype("datetime64[s]"):
                raise DefinitionError(f"partitions end {self.end} is not after start {self.start}")
        object.__setattr__(self, "_end", end)
        if self.column is not None:
            validate_key(self.column, what="partition column")

    # -- parsing -------------------------------------------------------------------------------
    def _parse(self, text: str, unit: str, *, what: str = "partition key") -> np.datetime64:
        if not isinstance(text, str) or not self._FORMATS[unit].match(text):
            raise PartitionError(
                f"malformed {what} {text!r}", hint=f"write it like {self._EXAMPLES[unit]}"
            )
        try:
            return np.datetime64(text, unit)  # type: ignore[call-overload]
        except ValueError:
            raise PartitionError(f"{what} {text!r} is not a real date") from None

    def _parse_bound(self, text: str, *, what: str) -> tuple[np.datetime64, np.datetime64]:
        """A key of any granularity (minutes to months) as a span [start, end) in seconds."""
        validate_key(text, what=what)
        try:
            lo, hi = parse_span(text, what=what)
        except PartitionError as error:
            if "malformed" not in str(error):
                raise
            raise PartitionError(
                f"malformed {what} {text!r}", hint=f"write it like {self._EXAMPLES[self.unit]}"
            ) from None
        return np.datetime64(lo, "s"), np.datetime64(hi, "s")

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- the definition ------------------------------------------------------------------------
    @property
    def _unit_type(self) -> str:
        return f"datetime64[{self.unit}]"

    def _count_until(self, end_s: np.datetime64) -> int:
        last = end_s.astype(self._unit_type)  # floors: only windows that have ended count
        return max(0, int((last - self._start).astype(np.int64)))  # type: ignore[attr-defined]

    def __len__(self) -> int:
        if self._end is not None:  # type: ignore[attr-defined]
            end = self._end  # type: ignore[attr-defined]
            count = self._count_until(end)
            aligned = (self._start + count).astype("datetime64[s]") == end  # type: ignore[attr-defined]
            return count if aligned else count + 1
        return self._count_until(np.datetime64(datetime.now(UTC).replace(tzinfo=None), "s"))

    def starts(self, indices: np.ndarray) -> np.ndarray:
        """Window starts (datetime64 in seconds) of `indices`; indices may lie outside 0..n-1."""
        return (self._start + np.asarray(indices)).astype("datetime64[s]")  # type: ignore[attr-defined]

    def locate(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For instants (datetime64[s]): the index of the window holding each, and whether it is
        the window's start."""
        floor = np.asarray(times).astype(self._unit_type)
        index = (floor - self._start).astype(np.int64)  # type: ignore[attr-defined]
        return index, floor.astype("datetime64[s]") == times

    def key_at(self, when: datetime) -> str:
        """The key of the window holding `when` (which need not be one of the partitions)."""
        instant = np.datetime64(when.astimezone(UTC).replace(tzinfo=None), "us")
        return str(np.datetime_as_string(instant.astype(self._unit_type), unit=self.unit))

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        if indices is None:
            indices = np.arange(len(self))
        values = self._start + np.asarray(indices)  # type: ignore[attr-defined]
        return np.datetime_as_string(values, unit=self.unit).tolist()  # type: ignore[call-overload]

    def index(self, key: str) -> int:
        value = self._parse(key, self.unit)
        position = int((value - self._start).astype(np.int64))  # type: ignore[attr-defined]
        count = len(self)
        if position < 0:
            raise PartitionError(f"{key} is before the first partition {self.key(0)}")
        if position >= count:
            last = self.key(count - 1) if count else "(none yet)"
            raise PartitionError(f"{key} is after the last partition {last}")
        return position

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        """Indices of `keys` (-1 for keys that are not ours), parsed in one numpy pass."""
        keys = list(keys)
        if not keys:
            return np.zeros(0, np.int64)
        text = np.array(keys, dtype=str)
        width = {"h": 13, "D": 10, "M": 7}[self.unit]
        try:
            if not (np.char.str_len(text) == width).all():
                raise ValueError("not all keys are of this granularity")
            values = text.astype(self._unit_type)
        except ValueError:
            return Partitions.indices(self, keys)  # a malformed key: sort them out one by one
        index = (values - self._start).astype(np.int64)  # type: ignore[attr-defined]
        return np.where((index >= 0) & (index < len(self)), index, -1)

    def _window(self, index: int) -> tuple[datetime, datetime]:
        """The window of one partition, in plain Python (per-unit calls are hot in the controller)."""
        first: datetime = self._first  # type: ignore[attr-defined]
        if self.unit == "M":
            months = first.year * 12 + first.month - 1 + index
            start = datetime(months // 12, months % 12 + 1, 1)
            months += 1
            return start, datetime(months // 12, months % 12 + 1, 1)
        step = timedelta(hours=1) if self.unit == "h" else timedelta(days=1)
        start = first + step * index
        return start, start + step

    def key(self, index: int) -> str:
        start, _ = self._window(index)
        if self.unit == "D":
            return f"{start.year:04d}-{start.month:02d}-{start.day:02d}"
        if self.unit == "h":
            return f"{start.year:04d}-{start.month:02d}-{start.day:02d}T{start.hour:02d}"
        return f"{start.year:04d}-{start.month:02d}"

    def partition(self, index: int) -> Partition:
        start, end = self._window(index)
        return Partition(self.key(index), start.replace(tzinfo=UTC), end.replace(tzinfo=UTC))

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        count = len(self)
        if selects_all(spec):
            return np.arange(count, dtype=np.int64)
        assert spec is not None
        first = self.starts(np.array([0]))[0]
        last = self.starts(np.array([count]))[0]
        chosen = []
        for item in split_spec(spec):
            lo_text, sep, hi_text = item.partition("..")
            if sep and not (lo_text and hi_text):
                raise PartitionError(
                    f"malformed partition range {item!r}",
                    hint="write it like 2013-01-01..2013-01-31",
                )
            lo = self._parse_bound(lo_text, what="partition key")[0]
            hi = self._parse_bound(hi_text if sep else lo_text, what="partition key")[1]
            if hi <= lo:
                raise PartitionError(f"range {item!r} runs backwards")
            if lo < first:
                raise PartitionError(f"{lo_text} is before the first partition {self.key(0)}")
            if hi > last:
                raise PartitionError(
                    f"{hi_text if sep else lo_text} is after the last partition "
                    f"{self.key(count - 1) if count else '(none yet)'}"
                )
            lo_i = int((lo.astype(self._unit_type) - self._start).astype(np.int64))  # type: ignore[attr-defined]
            hi_floor = hi.astype(self._unit_type)
            hi_i = int((hi_floor - self._start).astype(np.int64))  # type: ignore[attr-defined]
            hi_i += int(hi_floor.astype("datetime64[s]") != hi)
            chosen.append(np.arange(lo_i, hi_i, dtype=np.int64))
        return np.unique(np.concatenate(chosen))

    def describe(self) -> str:
        count = len(self)
        span = f"{self.key(0)}..{self.key(count - 1)}" if count else f"from {self.start} (none yet)"
        name = {kind.unit: name for name, kind in WINDOWS.items()}[self.unit]
        return f"{name} {span} ({count})"


@dataclass(frozen=True)
class DailyPartitions(_CalendarWindows):
    """One partition a UTC day: `DailyPartitions(start="2013-01-01", end="2014-01-01")`."""

    unit: ClassVar[str] = "D"
    column: str | None = "date"


@dataclass(frozen=True)
class HourlyPartitions(_CalendarWindows):
    """One partition a UTC hour, keys like `2013-01-01T05`."""

    unit: ClassVar[str] = "h"
    column: str | None = "hour"


@dataclass(frozen=True)
class MonthlyPartitions(_CalendarWindows):
    """One partition a calendar month, keys like `2013-01`."""

    unit: ClassVar[str] = "M"
    column: str | None = "month"


WINDOWS: dict[str, type[_CalendarWindows]] = {
    "daily": DailyPartitions,
    "hourly": HourlyPartitions,
    "monthly": MonthlyPartitions,
}
"""The windows by name, as `describe` shows them and a dbt model's `meta.lakeflow` names them."""
