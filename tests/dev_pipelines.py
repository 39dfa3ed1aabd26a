"""The pipeline `lakeflow dev` serves in tests/test_dev.py: `events` (steered by the test's control
directory: `fail-events-<key>` makes a unit raise) and `trips_daily`, run by a commit trigger
whenever an outside producer writes the `trips` source."""

from __future__ import annotations

import polars as pl

import lakeflow as lf
from tests.pipelines import steer

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")


@lf.asset(partitions=DAYS)
def events(ctx: lf.Context) -> pl.DataFrame:
    steer("events", ctx.partition.key)
    return pl.DataFrame({"user": ["a", "b"], "amount": [ctx.partition.start.day, 1]})


trips = lf.source(
    "trips", partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-11", column="day")
)


@lf.asset(
    partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-11", column="day"),
    automation=lf.on_upstream_commit(on_start="none"),
)
def trips_daily(trips: pl.LazyFrame) -> pl.LazyFrame:
    return trips.select(pl.len().alias("trips"))


PIPELINE = lf.Pipeline([events, trips, trips_daily], lake="./lake", name="dev")
