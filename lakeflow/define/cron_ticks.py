"""The tick maths of cron-defined time windows: a cron's ticks between two instants (as numpy
seconds, vectorized for the common crons, croniter for the rest), their wall-clock times in a
timezone, and the text of keys and spec bounds at a granularity (day, hour or minute).

Pure functions: `time_windows.TimeWindowPartitions` caches what they return.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
from croniter import croniter

from lakeflow.errors import DefinitionError, PartitionError

__all__ = [
    "KEY_FORMATS",
    "as_seconds",
    "check_cron",
    "cron_granularity",
    "format_walls",
    "parse_instant",
    "parse_span",
    "tick_at_or_before",
    "ticks_between",
    "walls",
]

DAY = 86_400

# granularity (a numpy unit) -> (the pattern of its keys, an example)
KEY_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "m": (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}$"), "2024-01-01T05-10"),
    "h": (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$"), "2024-01-01T05"),
    "D": (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "2024-01-01"),
    "M": (re.compile(r"^\d{4}-\d{2}$"), "2024-01"),
}


def check_cron(cron: object, timezone: object) -> tuple[str, ZoneInfo]:
    """A cron for time windows: valid, 5 fields, firing at all; and its timezone."""
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        raise DefinitionError(
            f"malformed cron expression {cron!r}", hint="e.g. '*/5 * * * *' or '0 0 * * 1'"
        )
    if len(cron.split()) != 5:
        raise DefinitionError(
            f"time windows take a 5-field cron (minutes at the finest), not {cron!r}",
            hint="e.g. '*/5 * * * *'",
        )
    try:
        zone = ZoneInfo(str(timezone))
    except Exception:
        raise DefinitionError(f"unknown timezone {timezone!r}") from None
    if zone.key != "UTC" and cron_granularity(cron) != "D":
        raise DefinitionError(
            f"windows shorter than a day are in UTC, not {zone.key}: daylight saving time "
            f"would repeat or skip their keys ({cron!r})",
            hint="drop timezone=, or use a daily or coarser cron",
        )
    return cron, zone


def cron_granularity(cron: str) -> str:
    """What a key must show: 'D' when every tick is at midnight, 'h' on the hour, else 'm'."""
    minutes, hours = croniter(cron).expanded[:2]
    if minutes == [0]:
        return "D" if hours == [0] else "h"
    return "m"


def ticks_between(cron: str, zone: ZoneInfo, lo: int, hi: int) -> np.ndarray:
    """The cron's ticks in [lo, hi) (seconds since the epoch, int64, sorted)."""
    if hi <= lo:
        return np.zeros(0, np.int64)
    fast = _calendar_ticks(cron, lo, hi) if zone.key == "UTC" else None
    if fast is not None:
        return fast
    it = croniter(cron, datetime.fromtimestamp(lo - 1, zone))
    out: list[int] = []
    while (tick := int(it.get_next(float))) < hi:
        out.append(tick)
    return np.array(out, np.int64)


def _calendar_ticks(cron: str, lo: int, hi: int) -> np.ndarray | None:
    """Vectorized UTC ticks for crons of plain numbers and '*' (days by times of day); None for
    the rest (L, #, W, or both day-of-month and day-of-week restricted), which croniter walks."""
    minutes, hours, doms, months, dows = croniter(cron).expanded
    fields = [minutes, hours, doms, months, dows]
    if any(not isinstance(v, int) for f in fields for v in f if v != "*"):
        return None
    if doms != ["*"] and dows != ["*"]:
        return None
    days = np.arange(lo // DAY, (hi - 1) // DAY + 1, dtype=np.int64)
    keep = np.ones(len(days), bool)
    stamps = days.astype("datetime64[D]")
    if months != ["*"]:
        keep &= np.isin(stamps.astype("datetime64[M]").astype(np.int64) % 12 + 1, months)
    if doms != ["*"]:
        first = stamps.astype("datetime64[M]").astype("datetime64[D]")
        keep &= np.isin((stamps - first).astype(np.int64) + 1, doms)
    if dows != ["*"]:
        keep &= np.isin((days + 4) % 7, [d % 7 for d in dows])  # 1970-01-01 was a Thursday
    hours_of = range(24) if hours == ["*"] else hours
    minutes_of = range(60) if minutes == ["*"] else minutes
    offsets = np.array(sorted(h * 3600 + m * 60 for h in hours_of for m in minutes_of), np.int64)
    ticks = (days[keep][:, None] * DAY + offsets[None, :]).ravel()
    return ticks[(ticks >= lo) & (ticks < hi)]


def tick_at_or_before(cron: str, zone: ZoneInfo, instant: float) -> int | None:
    """The newest tick at or before `instant` (None if the cron never fired before it)."""
    it = croniter(cron, datetime.fromtimestamp(int(instant) + 1, zone))
    try:
        return int(it.get_prev(float))
    except Exception:  # croniter's "no such date" (a cron that never fires)
        return None


def walls(ticks: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Wall-clock seconds in `zone` of UTC `ticks` (the same array for UTC)."""
    if zone.key == "UTC" or not len(ticks):
        return ticks
    offsets = [
        int(datetime.fromtimestamp(int(t), UTC).astimezone(zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        for t in ticks
    ]
    return ticks + np.array(offsets, np.int64)


def format_walls(walls_s: np.ndarray, granularity: str) -> list[str]:
    """Keys of windows starting at these wall-clock seconds: `2024-01-01`, `2024-01-01T05`,
    `2024-01-01T05-10` (a ':' is no character for a directory or a Delta partition value)."""
    if not len(walls_s):
        return []
    text = np.datetime_as_string(walls_s.astype("datetime64[s]"), unit=granularity)
    if granularity == "m":
        text = np.char.replace(text, ":", "-")
    return text.tolist()


def parse_instant(text: object, *, what: str) -> datetime:
    """A start or end: a key at any granularity, or ISO with ':' (`2024-01-01T05:10`), as a
    naive wall-clock time."""
    if isinstance(text, datetime):
        return text.replace(tzinfo=None)
    if isinstance(text, str):
        try:
            return datetime.fromtimestamp(int(parse_span(text, what=what)[0]), UTC).replace(
                tzinfo=None
            )
        except PartitionError:
            try:
                return datetime.fromisoformat(text).replace(tzinfo=None)
            except ValueError:
                pass
    raise DefinitionError(
        f"malformed {what} {text!r}", hint="write it like 2024-01-01 or 2024-01-01T05-10"
    )


def parse_span(text: str, *, what: str = "partition key") -> tuple[int, int]:
    """A key or spec bound at any granularity as the wall-clock span [lo, hi) in seconds."""
    for granularity, (pattern, _) in KEY_FORMATS.items():
        if isinstance(text, str) and pattern.match(text):
            iso = text if granularity != "m" else text[:13] + ":" + text[14:]
            unit = "m" if granularity == "m" else granularity
            try:
                value = np.datetime64(iso, unit)
            except ValueError:
                raise PartitionError(f"{what} {text!r} is not a real date") from None
            lo = int(value.astype("datetime64[s]").astype(np.int64))
            return lo, int((value + 1).astype("datetime64[s]").astype(np.int64))
    raise PartitionError(f"malformed {what} {text!r}", hint="write it like 2024-01-01T05-10")


def as_seconds(wall: datetime, zone: ZoneInfo) -> int:
    """A naive wall-clock time in `zone` as seconds since the epoch."""
    return int(wall.replace(tzinfo=zone).timestamp())
