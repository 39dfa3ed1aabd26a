"""Partitions: which keys an asset has, and how a key spec from a user becomes a set of them.

Every definition numbers its partitions 0..n-1, so the planner works on integer arrays instead of
Python objects per unit. Time windows (hourly, daily, monthly; UTC) are numpy datetime64 ranges:
a key is the window's start written at its own granularity (`2013-01-01T05`, `2013-01-01`,
`2013-01`), and the end given to a definition is exclusive (`end="2014-01-01"` ends on 2013-12-31).

A user's spec (`"2013-01-01..2013-01-31"`, `"2013-01"`, `"a,b"`, `"*"`) is read as a time span for
time windows, so one spec selects the matching partitions of a daily, hourly and monthly asset
alike: a monthly asset given a day range gets the months that range touches.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import numpy as np

from .errors import DefinitionError, PartitionError

__all__ = [
    "DailyPartitions",
    "FilePartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "Partition",
    "Partitions",
    "StaticPartitions",
    "TimeWindowPartitions",
    "Unpartitioned",
    "validate_key",
]

_KEY_CHARS = re.compile(r"^[A-Za-z0-9_.\-]+$")
UNPARTITIONED_KEY = ""


def validate_key(key: str, *, what: str = "partition key") -> str:
    """Keys become directory names and Delta partition values: allow [A-Za-z0-9_.-], no '..'."""
    if not isinstance(key, str) or not key:
        raise PartitionError(f"empty {what}", hint="give a key such as 2013-01-01 or us-east")
    if not _KEY_CHARS.match(key) or ".." in key or key.startswith("."):
        raise PartitionError(
            f"malformed {what} {key!r}",
            hint="keys may use letters, digits, '_', '-' and '.', and may not contain '..'",
        )
    return key


@dataclass(frozen=True, slots=True)
class Partition:
    """What an asset function sees of its partition: the key and, for time windows, the window."""

    key: str
    start: datetime | None = None
    end: datetime | None = None
    url: str | None = None  # the file a `FilePartitions` key stands for

    def __str__(self) -> str:
        return self.key or "(unpartitioned)"


class Partitions(ABC):
    """A partitions definition: n keys numbered 0..n-1 and a Delta partition column."""

    column: str | None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        """The keys at `indices` (all keys when None), in that order."""

    @abstractmethod
    def index(self, key: str) -> int:
        """The number of `key`; `PartitionError` if it is malformed or not one of ours."""

    @abstractmethod
    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        """Sorted unique indices named by a user's spec; None or '*' means all."""

    @abstractmethod
    def describe(self) -> str: ...

    def key(self, index: int) -> str:
        return self.keys(np.array([index]))[0]

    def partition(self, index: int) -> Partition:
        return Partition(self.key(index))

    def indices(self, keys: Iterable[str]) -> np.ndarray:
        """Indices of `keys`, -1 for keys that are not partitions of this definition."""
        out = []
        for key in keys:
            try:
                out.append(self.index(key))
            except PartitionError:
                out.append(-1)
        return np.array(out, dtype=np.int64)

    @property
    def is_partitioned(self) -> bool:
        return self.column is not None


def _split_spec(spec: str | Sequence[str]) -> list[str]:
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    items = [p.strip() for p in parts]
    if not items or any(not p for p in items):
        raise PartitionError(
            f"empty partition key in {spec!r}", hint="write keys like 2013-01-01,2013-01-02"
        )
    return items


def _all(spec: str | Sequence[str] | None) -> bool:
    return (
        spec is None or spec in ("*", "all") or (not isinstance(spec, str) and list(spec) == ["*"])
    )


@dataclass(frozen=True)
class Unpartitioned(Partitions):
    """One partition: the whole table is rewritten by every materialization."""

    column: str | None = field(default=None, init=False)

    def __len__(self) -> int:
        return 1

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return [UNPARTITIONED_KEY] * (1 if indices is None else len(indices))

    def index(self, key: str) -> int:
        if key != UNPARTITIONED_KEY:
            raise PartitionError(f"partition key {key!r} given for an unpartitioned asset")
        return 0

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)  # a spec meant for partitioned assets does not apply

    def describe(self) -> str:
        return "unpartitioned"


@dataclass(frozen=True)
class StaticPartitions(Partitions):
    """A fixed list of keys, e.g. regions: `StaticPartitions(["us", "eu"])`."""

    values: tuple[str, ...]
    column: str | None = "partition"

    def __init__(self, values: Iterable[str], *, column: str = "partition") -> None:
        values = tuple(values)
        for value in values:
            validate_key(value)
        if not values:
            raise DefinitionError("StaticPartitions needs at least one key")
        if len(set(values)) != len(values):
            raise DefinitionError("StaticPartitions keys must be unique")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "column", validate_key(column, what="partition column"))
        object.__setattr__(self, "_positions", {v: i for i, v in enumerate(values)})

    def __len__(self) -> int:
        return len(self.values)

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return list(self.values) if indices is None else [self.values[i] for i in indices]

    def index(self, key: str) -> int:
        validate_key(key)
        position = self._positions.get(key)  # type: ignore[attr-defined]
        if position is None:
            raise PartitionError(f"{key!r} is not one of the keys {', '.join(self.values)}")
        return position

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        if _all(spec):
            return np.arange(len(self), dtype=np.int64)
        assert spec is not None
        chosen: list[int] = []
        for item in _split_spec(spec):
            if ".." in item:
                first, _, last = item.partition("..")
                if not (first and last):
                    raise PartitionError(
                        f"malformed partition range {item!r}", hint="write it like a..c"
                    )
                lo, hi = self.index(first), self.index(last)
                if hi < lo:
                    raise PartitionError(f"range {item!r} runs backwards")
                chosen.extend(range(lo, hi + 1))
            else:
                chosen.append(self.index(item))
        return np.unique(np.array(chosen, dtype=np.int64))

    def describe(self) -> str:
        shown = ", ".join(self.values[:5]) + (", …" if len(self.values) > 5 else "")
        return f"static [{shown}] ({len(self)})"


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
        if _all(spec):
            return np.arange(count, dtype=np.int64)
        assert spec is not None
        first = self.starts(np.array([0]))[0]
        last = self.starts(np.array([count]))[0]
        chosen = []
        for item in _split_spec(spec):
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
        name = {"h": "hourly", "D": "daily", "M": "monthly"}[self.unit]
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


_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class FilePartitions(Partitions):
    """One partition per file that arrives under an fsspec URL glob (local or `s3://`).

    `lakeflow up` senses new files and materializes each once; the key is the file's path below
    the glob's fixed prefix ('/' written '__'), `ctx.partition.url` its full URL. Keys only ever
    grow (the list lives in the lake), so a key's number never changes.

    >>> @lf.asset(partitions=lf.FilePartitions("s3://landing/orders/*.csv"))
    ... def raw_orders(ctx): return pl.read_csv(ctx.partition.url, storage_options=...)
    """

    def __init__(
        self,
        url: str,
        *,
        column: str = "file",
        storage_options: dict[str, str] | None = None,
        poll: float = 1.0,
    ) -> None:
        if not _GLOB_CHARS.search(url):
            raise DefinitionError(f"FilePartitions needs a glob such as {url.rstrip('/')}/*.csv")
        self.url = url
        self.column = validate_key(column, what="partition column")
        self.storage_options = dict(storage_options or {})
        self.poll = poll
        self._keys: list[str] = []
        self._urls: list[str] = []
        self._positions: dict[str, int] = {}

    @property
    def base(self) -> str:
        """The fixed part of the glob, up to its last '/' before the first wildcard."""
        head = _GLOB_CHARS.split(self.url, maxsplit=1)[0]
        return head[: head.rfind("/") + 1]

    def key_for(self, url: str) -> str:
        relative = url[len(self.base) :] if url.startswith(self.base) else url.rsplit("/", 1)[-1]
        key = _UNSAFE.sub("_", relative.replace("/", "__")).lstrip(".")
        return key.replace("..", "_.") or "_"

    def load(self, entries: Iterable[tuple[str, str]]) -> None:
        """Set the known (key, url) pairs, in arrival order (the registry in the lake)."""
        for key, url in entries:
            if key not in self._positions:
                self._positions[key] = len(self._keys)
                self._keys.append(key)
                self._urls.append(url)

    def entries(self) -> list[tuple[str, str]]:
        return list(zip(self._keys, self._urls, strict=True))

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self, indices: np.ndarray | None = None) -> list[str]:
        return list(self._keys) if indices is None else [self._keys[i] for i in indices]

    def index(self, key: str) -> int:
        validate_key(key)
        position = self._positions.get(key)
        if position is None:
            raise PartitionError(f"no file with key {key!r} has arrived under {self.url}")
        return position

    def select(self, spec: str | Sequence[str] | None) -> np.ndarray:
        if _all(spec):
            return np.arange(len(self), dtype=np.int64)
        assert spec is not None
        return np.unique(np.array([self.index(k) for k in _split_spec(spec)], dtype=np.int64))

    def partition(self, index: int) -> Partition:
        return Partition(self._keys[index], url=self._urls[index])

    def describe(self) -> str:
        return f"files {self.url} ({len(self)} so far)"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
