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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

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


@dataclass(frozen=True)
class Schedule:
    """Materialize a selection on a cron schedule; see `lf.schedule`."""

    cron: str
    select: str = "*"
    tz: str = "UTC"
    catch_up: Literal["all", "latest", "none"] = "all"
    partitions: str | Callable[[datetime], Any] | None = None
    name: str = ""

    def validate(self, pipeline: Pipeline) -> None:
        pipeline.select(self.select)

    def ticks(self, after: float, until: float, limit: int = 10_000) -> list[float]:
        """The schedule's ticks in (after, until], oldest first, at most `limit` (the newest)."""
        from zoneinfo import ZoneInfo

        from croniter import croniter

        zone = ZoneInfo(self.tz)
        it = croniter(self.cron, datetime.fromtimestamp(after, zone))
        out: list[float] = []
        while True:
            tick = it.get_next(float)
            if tick > until:
                return out[-limit:]
            out.append(tick)
            if len(out) > 2 * limit:
                out = out[-limit:]

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
) -> Schedule:
    """A cron schedule (croniter syntax, 5 fields or 6 with seconds) in a timezone.

    >>> lf.schedule("0 2 * * *", select="daily_revenue+", tz="Europe/Paris")

    Each tick materializes `select` for `partitions` (default: the time partition whose window
    just closed, e.g. yesterday for a daily asset at midnight). Ticks missed while the controller
    was down are caught up: "all" of them in order, only the "latest", or "none".
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
    return Schedule(cron, select, tz, catch_up, partitions, name or f"{select} @ {cron}")


def closed_window(parts: TimeWindowPartitions, when: datetime) -> str:
    """The key of the window that holds the instant just before `when`."""
    instant = np.datetime64((when - timedelta(microseconds=1)).replace(tzinfo=None), "us")
    return str(np.datetime_as_string(instant.astype(f"datetime64[{parts.unit}]"), unit=parts.unit))
