"""Trigger declarations: what makes work start without a person asking — Delta commits on the tables an asset
reads (lakeflow's own or an outside producer's), cron schedules, and files arriving.

The declarations here are plain values a pipeline module holds; `lakeflow.triggers.engine.Triggers` runs
them inside the controller while `lakeflow up` is on. Everything it must not forget lives in the lake under
`_lakeflow/triggers/` (a cursor per watched table, the consumer partitions waiting to run, the last
tick of each schedule) and `_lakeflow/partitions/` (the files each sensor has seen), so a restarted
controller carries on where the last one stopped: a commit is handled once, a tick fires once, a
file becomes one partition. A consumer partition that is triggered twice across a crash is still
built once: the second request finds it fresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from lakeflow.define.partitions import FilePartitions
from lakeflow.define.time_windows import TimeWindowPartitions
from lakeflow.errors import DefinitionError

if TYPE_CHECKING:
    from lakeflow.define.graph import Pipeline

__all__ = [
    "FilePartitions",
    "OnPublish",
    "OnUpstreamCommit",
    "Publish",
    "Schedule",
    "ScheduleDue",
    "on_publish",
    "on_upstream_commit",
    "schedule",
]


# -- declarations ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnUpstreamCommit:
    """An asset's automation policy: re-materialize the partitions that upstream commits changed."""

    debounce: float = 0.0
    require: Literal["any", "all"] = "any"
    inputs: tuple[str, ...] | None = None  # the upstreams that trigger; None: all it reads
    on_start: Literal["missing_or_stale", "none"] = "missing_or_stale"

    def describe(self) -> str:
        bits = ["on upstream commit"]
        if self.on_start == "none":
            bits.append("commits only")
        if self.require == "all":
            bits.append("all inputs")
        if self.debounce:
            bits.append(f"debounce {self.debounce:g}s")
        return ", ".join(bits)


def on_upstream_commit(
    *,
    debounce: float = 0.0,
    require: Literal["any", "all"] = "any",
    inputs: Iterable[str] | None = None,
    on_start: Literal["missing_or_stale", "none"] = "missing_or_stale",
) -> OnUpstreamCommit:
    """Run an asset for exactly the partitions its upstream tables' new commits touched.

    >>> @lf.asset(partitions=daily, automation=lf.on_upstream_commit(debounce=2))
    ... def trips_clean(trips: pl.LazyFrame) -> pl.LazyFrame: ...

    - debounce: wait until the upstreams have been quiet this many seconds, gathering the
      partitions of a burst of commits into one run.
    - require: "any" runs a partition when any upstream changed it; "all" only once every one of
      `inputs` has changed it since it last ran.
    - inputs: the upstream names that trigger (default: every table the asset reads).
    - on_start: what `lakeflow up` does first. "missing_or_stale" (the default) requests once
      the partitions that are missing or stale and whose inputs are there, so what the upstreams
      held before `up` (or gained while it was down) is built; fresh partitions are left alone,
      so starting again builds nothing twice. "none": only commits made after the first `up`
      count, history is not news.
    """
    if require not in ("any", "all"):
        raise DefinitionError(f"require must be 'any' or 'all', not {require!r}")
    if on_start not in ("missing_or_stale", "none"):
        raise DefinitionError(f"on_start must be 'missing_or_stale' or 'none', not {on_start!r}")
    if debounce < 0:
        raise DefinitionError("debounce must be >= 0 seconds")
    return OnUpstreamCommit(
        float(debounce), require, tuple(inputs) if inputs is not None else None, on_start
    )


@dataclass(frozen=True)
class Publish:
    """A new version of a table, as a subscriber receives it."""

    table: str
    version: int
    partitions: tuple[str, ...]  # partition keys the commit added or removed ("" unpartitioned)
    operation: str
    timestamp: float  # seconds since the epoch, from the commit
    by_lakeflow: bool
    run_id: str | None


@dataclass(frozen=True)
class OnPublish:
    """Call `callback(Publish)` for every new version of `asset` (run by `lakeflow up`)."""

    asset: str
    callback: Callable[[Publish], Any]

    def validate(self, pipeline: Pipeline) -> None:
        pipeline[self.asset]


def on_publish(asset: str, callback: Callable[[Publish], Any]) -> OnPublish:
    """Subscribe a callable to an asset's (or a source's) publishes while `lakeflow up` runs.
    Delivery is at least once, in version order; `Publish.version` tells repeats apart."""
    if not callable(callback):
        raise DefinitionError(f"on_publish({asset!r}, ...) needs a callable")
    return OnPublish(asset, callback)


CATCH_UP_CEILING = 10_000
"""The most missed ticks one catch-up fires, whatever the bound (the older ones are skipped)."""


@dataclass(frozen=True)
class ScheduleDue:
    """What a schedule fires now: `ticks` (oldest first), and the missed ticks its catch-up policy
    skips: how many, and the newest of them (the cursor moves there before anything fires, so a
    skip is decided once)."""

    ticks: tuple[float, ...]
    skipped: int = 0
    skipped_until: float | None = None


@dataclass(frozen=True)
class Schedule:
    """Materialize a selection on a cron schedule; see `lf.schedule`."""

    cron: str
    select: str = "*"
    tz: str = "UTC"
    catch_up: Literal["all", "latest", "none"] = "all"
    partitions: str | Callable[[datetime], Any] | None = None
    name: str = ""
    max_catch_up: int | timedelta | None = None

    def validate(self, pipeline: Pipeline) -> None:
        pipeline.select(self.select)

    def ticks(self, after: float, until: float, limit: int = CATCH_UP_CEILING) -> list[float]:
        """The schedule's ticks in (after, until], oldest first, at most `limit` (the newest)."""
        return list(self._scan(after, until, limit)[0])

    def due(self, after: float, until: float) -> ScheduleDue:
        """The ticks in (after, until] to fire now, after `catch_up` ("latest": the newest only)
        and `max_catch_up` (a count: the newest that many; a window: those within it of
        `until`, and always the newest) have skipped the rest."""
        keep = 1 if self.catch_up == "latest" else CATCH_UP_CEILING
        if isinstance(self.max_catch_up, int):
            keep = min(keep, self.max_catch_up)
        newest, total = self._scan(after, until, keep + 1)  # one more: the newest skipped
        fire = list(newest)[-keep:]
        if isinstance(self.max_catch_up, timedelta) and fire:
            since = until - self.max_catch_up.total_seconds()
            fire = [t for t in fire[:-1] if t > since] + fire[-1:]
        skipped = total - len(fire)
        if not skipped:
            return ScheduleDue(tuple(fire))
        before = [t for t in newest if t < fire[0]]
        return ScheduleDue(tuple(fire), skipped, before[-1])

    def _scan(self, after: float, until: float, keep: int) -> tuple[deque[float], int]:
        """The newest `keep` ticks in (after, until] and how many there are in all."""
        from zoneinfo import ZoneInfo

        from croniter import croniter

        it = croniter(self.cron, datetime.fromtimestamp(after, ZoneInfo(self.tz)))
        newest: deque[float] = deque(maxlen=keep)
        total = 0
        while (tick := it.get_next(float)) <= until:
            newest.append(tick)
            total += 1
        return newest, total

    def describe_catch_up(self) -> str:
        """`catch_up` with its bound, as status and the UI show it."""
        bound = self.max_catch_up
        if bound is None:
            return self.catch_up
        shown = f"{bound} ticks" if isinstance(bound, int) else f"{bound} window"
        return f"{self.catch_up} (at most {shown})"

    def spec(self, pipeline: Pipeline, tick: float) -> Any:
        """The partitions a tick names: `partitions` (a spec, or a function of the tick time),
        else the partition of the window that just closed."""
        when = datetime.fromtimestamp(tick, UTC)
        if callable(self.partitions):
            return self.partitions(when)
        if self.partitions is not None:
            return self.partitions
        for name in pipeline.select(self.select):
            parts = pipeline[name].partitions
            if isinstance(parts, TimeWindowPartitions):
                return closed_window(parts, when)
        return None


def schedule(
    cron: str,
    *,
    select: str = "*",
    tz: str = "UTC",
    catch_up: Literal["all", "latest", "none"] = "all",
    partitions: str | Callable[[datetime], Any] | None = None,
    name: str | None = None,
    max_catch_up: int | timedelta | None = None,
) -> Schedule:
    """A cron schedule (croniter syntax, 5 fields or 6 with seconds) in a timezone.

    >>> lf.schedule("0 2 * * *", select="daily_revenue+", tz="Europe/Paris")

    Each tick materializes `select` for `partitions` (default: the time partition whose window
    just closed, e.g. yesterday for a daily asset at midnight). Ticks missed while the controller
    was down are caught up: "all" of them in order, only the "latest", or "none".

    - max_catch_up: a bound on "all" after a long outage, as a count of runs (`10`: the newest
      10 missed ticks) or a window (`timedelta(hours=1)`: the ticks of the last hour, and always
      the newest). The older missed ticks are skipped, and a `schedule_ticks_skipped` event
      says how many. Unbounded by default, up to 10,000 ticks (skipped beyond that, with the
      same event).
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter

    if not croniter.is_valid(cron):
        raise DefinitionError(f"malformed cron expression {cron!r}", hint="e.g. '0 * * * *'")
    if catch_up not in ("all", "latest", "none"):
        raise DefinitionError(f"catch_up must be all, latest or none, not {catch_up!r}")
    try:
        ZoneInfo(tz)
    except Exception:
        raise DefinitionError(f"unknown timezone {tz!r}") from None
    _check_bound(max_catch_up, catch_up)
    return Schedule(
        cron, select, tz, catch_up, partitions, name or f"{select} @ {cron}", max_catch_up
    )


def _check_bound(bound: object, catch_up: str) -> None:
    if bound is None:
        return
    if catch_up != "all":
        raise DefinitionError(
            f"max_catch_up bounds catch_up='all', not {catch_up!r}",
            hint="drop max_catch_up, or use catch_up='all'",
        )
    if isinstance(bound, timedelta):
        if bound <= timedelta(0):
            raise DefinitionError(f"max_catch_up window must be positive, not {bound}")
        return
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
        raise DefinitionError(
            f"max_catch_up must be a count of runs (>= 1) or a timedelta, not {bound!r}",
            hint="e.g. max_catch_up=10 or max_catch_up=timedelta(hours=1)",
        )


def closed_window(parts: TimeWindowPartitions, when: datetime) -> str:
    """The key of the window that holds the instant just before `when`."""
    return parts.key_at(when - timedelta(microseconds=1))
