"""Time-window partitions: consecutive UTC hours, days or months as numpy datetime64 ranges.

A key is the window's start written at its own granularity (`2013-01-01T05`, `2013-01-01`,
`2013-01`), and the end given to a definition is exclusive (`end="2014-01-01"` ends on 2013-12-31).
A user's spec (`"2013-01-01..2013-01-31"`, `"2013-01"`, `"*"`) is read as a time span, so one spec
selects the matching partitions of a daily, hourly and monthly asset alike: a monthly asset given
a day range gets the months that range touches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import numpy as np

from lakeflow.define.partitions import Partition, Partitions, selects_all, split_spec, validate_key
from lakeflow.errors import DefinitionError, PartitionError

__all__ = [
    "WINDOWS",
    "DailyPartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "TimeWindowPartitions",
]


@dataclass(frozen=True)
class TimeWindowPartitions(Partitions):
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
        """A key of any granularity as a span [start, end) in seconds."""
        validate_key(text, what=what)
        for unit in ("h", "D", "M"):
            if self._FORMATS[unit].match(text):
                value = self._parse(text, unit, what=what)
                return value.astype("datetime64[s]"), (value + 1).astype("datetime64[s]")
        raise PartitionError(
            f"malformed {what} {text!r}", hint=f"write it like {self._EXAMPLES[self.unit]}"
        )

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
            return super().indices(keys)  # some key is malformed: sort them out one by one
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
class DailyPartitions(TimeWindowPartitions):
    """One partition a UTC day: `DailyPartitions(start="2013-01-01", end="2014-01-01")`."""

    unit: ClassVar[str] = "D"
    column: str | None = "date"


@dataclass(frozen=True)
class HourlyPartitions(TimeWindowPartitions):
    """One partition a UTC hour, keys like `2013-01-01T05`."""

    unit: ClassVar[str] = "h"
    column: str | None = "hour"


@dataclass(frozen=True)
class MonthlyPartitions(TimeWindowPartitions):
    """One partition a calendar month, keys like `2013-01`."""

    unit: ClassVar[str] = "M"
    column: str | None = "month"


WINDOWS: dict[str, type[TimeWindowPartitions]] = {
    "daily": DailyPartitions,
    "hourly": HourlyPartitions,
    "monthly": MonthlyPartitions,
}
"""The windows by name, as `describe` shows them and a dbt model's `meta.lakeflow` names them."""
