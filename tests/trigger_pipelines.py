"""Pipelines for the trigger tests: an outside `trips` table with consumers, a schedule, a file
sensor. Built by functions so each test gets its own lake and knobs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

import lakeflow as lf

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-04-01", column="day")


def trips_pipeline(
    lake: str,
    *,
    debounce: float = 0.0,
    on_start: str = "missing_or_stale",
    storage_options=None,
    **extra,
) -> lf.Pipeline:
    """trips (a source someone else writes) -> trips_daily (on upstream commit)."""
    trips = lf.source("trips", partitions=DAYS)
    policy = lf.on_upstream_commit(debounce=debounce, on_start=on_start)

    @lf.asset(partitions=DAYS, automation=policy)
    def trips_daily(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(pl.len().alias("trips"), pl.col("fare").sum().alias("fares"))

    return lf.Pipeline(
        [trips, trips_daily], lake=lake, storage_options=storage_options, name="trips", **extra
    )


def trips_total_pipeline(lake: str) -> lf.Pipeline:
    """trips (a source someone else writes) -> trips_total (unpartitioned: every day's trips,
    on upstream commit)."""
    trips = lf.source("trips", partitions=DAYS)

    @lf.asset(automation=lf.on_upstream_commit())
    def trips_total(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(pl.len().alias("trips"), pl.col("fare").sum().alias("fares"))

    return lf.Pipeline([trips, trips_total], lake=lake, name="trips_total")


TRIPS = trips_pipeline("./lake", on_start="none")  # for the CLI (--lake); commits only
# builds what is there on start; module-level, so a restarted controller can import it again
TRIPS_ON_START = trips_pipeline("./lake")


def held_pipeline(lake: str) -> lf.Pipeline:
    """trips -> trips_checked (a table check: ids unique across the table) -> trips_report.
    Both consumers run on upstream commits; a failed table check must hold the report."""
    trips = lf.source("trips", partitions=DAYS)

    @lf.asset(
        partitions=DAYS,
        automation=lf.on_upstream_commit(),
        checks=[lf.unique("id", scope="table")],
    )
    def trips_checked(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("id", "fare")

    @lf.asset(partitions=DAYS, automation=lf.on_upstream_commit())
    def trips_report(trips_checked: pl.LazyFrame) -> pl.LazyFrame:
        return trips_checked.select(pl.len().alias("trips"))

    return lf.Pipeline([trips, trips_checked, trips_report], lake=lake, name="held")


def write_trips(url: str, day: str, ids: list[int], *, storage_options=None, mode="append") -> None:
    """What an outside producer does: a plain deltalake write, partitioned by day."""
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "fare": pa.array([float(i % 7) + 2.5 for i in ids]),
            "day": pa.array([day] * len(ids)),
        }
    )
    write_deltalake(url, table, mode=mode, partition_by=["day"], storage_options=storage_options)


SECONDS = lf.StaticPartitions(
    [f"{h:02d}{m:02d}{s:02d}" for h in range(24) for m in range(60) for s in range(60)],
    column="second",
)


def _second(tick: datetime) -> str:
    return tick.strftime("%H%M%S")


def ticking_pipeline(lake: str, *, catch_up: str = "all") -> lf.Pipeline:
    """An asset with one partition per second of the day, built by a schedule that ticks every
    second and names the tick's own second."""

    @lf.asset(partitions=SECONDS)
    def ticks(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"second": [ctx.partition.key]}).rename({"second": "tick"})

    every_second = lf.schedule(
        "* * * * * *", select="ticks", partitions=_second, catch_up=catch_up, name="every-second"
    )
    return lf.Pipeline([ticks], lake=lake, name="ticking", triggers=[every_second])


MINUTES = lf.StaticPartitions(
    [f"{h:02d}{m:02d}" for h in range(24) for m in range(60)], column="minute"
)


def minute_key(tick: datetime | float) -> str:
    when = tick if isinstance(tick, datetime) else datetime.fromtimestamp(tick, UTC)
    return when.strftime("%H%M")


def minutes_pipeline(lake: str, *, max_catch_up=None) -> lf.Pipeline:
    """One partition per minute of the day, built by a per-minute schedule naming its minute."""

    @lf.asset(partitions=MINUTES)
    def minutes(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"tick": [ctx.partition.key]})

    every_minute = lf.schedule(
        "* * * * *", select="minutes", partitions=minute_key, max_catch_up=max_catch_up,
        name="every-minute",
    )  # fmt: skip
    return lf.Pipeline([minutes], lake=lake, name="minutes", triggers=[every_minute])


def files_pipeline(
    lake: str,
    incoming: str,
    *,
    storage_options=None,
    pattern: str = "*.csv",
    poll: float = 0.2,
    **sensing,
) -> lf.Pipeline:
    """Each file matching `pattern` arriving under `incoming` becomes one partition of
    raw_orders; `sensing` goes to `lf.FilePartitions` (settle, ignore, on_change)."""
    options = dict(storage_options or {})
    fs_options = (
        {
            "endpoint_url": options["AWS_ENDPOINT_URL"],
            "key": options["AWS_ACCESS_KEY_ID"],
            "secret": options["AWS_SECRET_ACCESS_KEY"],
        }
        if options
        else {}
    )

    @lf.asset(partitions=lf.FilePartitions(f"{incoming}/{pattern}", poll=poll, **sensing))
    def raw_orders(ctx: lf.Context) -> pl.DataFrame:
        import fsspec

        with fsspec.open(ctx.partition.url, "rb", **fs_options) as handle:
            frame = pl.read_csv(handle.read())
        return frame.with_columns(pl.lit(ctx.partition.url).alias("source_file"))

    return lf.Pipeline([raw_orders], lake=lake, storage_options=storage_options, name="files")


def write_csv(directory: Path, name: str, rows: int) -> None:
    scratch = directory / f".{name}.part"
    pl.DataFrame({"order": list(range(rows)), "amount": [1.5] * rows}).write_csv(scratch)
    scratch.rename(directory / name)  # arrives whole, as producers should deliver files


def both_pipeline(lake: str) -> lf.Pipeline:
    """fares and trips (two sources) -> matched, which runs only once both changed a day."""
    trips = lf.source("trips", partitions=DAYS)
    fares = lf.source("fares", partitions=DAYS)

    @lf.asset(partitions=DAYS, automation=lf.on_upstream_commit(require="all"))
    def matched(trips: pl.LazyFrame, fares: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select("id").join(fares.select("id", "fare"), on="id")

    return lf.Pipeline([trips, fares, matched], lake=lake, name="both")


FEBRUARY = lf.DailyPartitions(start="2024-02-01", end="2024-03-01", column="day")
MONTHS = lf.MonthlyPartitions(start="2024-02", end="2024-03", column="month")


def deletes_pipeline(lake: str) -> lf.Pipeline:
    """trips (a source) -> daily (identity) -> daily_copy (identity); daily -> monthly (a roll-up)
    and daily -> last3 (a 3-day lookback). Every consumer runs on upstream commits."""
    trips = lf.source("trips", partitions=FEBRUARY)
    auto = lf.on_upstream_commit()

    @lf.asset(partitions=FEBRUARY, automation=auto)
    def daily(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(pl.len().alias("trips"), pl.col("fare").sum().alias("fares"))

    @lf.asset(partitions=FEBRUARY, automation=auto)
    def daily_copy(daily: pl.LazyFrame) -> pl.LazyFrame:
        return daily.select("trips", "fares")

    @lf.asset(partitions=MONTHS, inputs={"daily": lf.rollup()}, automation=auto)
    def monthly(daily: pl.LazyFrame) -> pl.LazyFrame:
        return daily.select(
            pl.len().alias("days"), pl.col("trips").sum().alias("trips"), pl.col("fares").sum()
        )

    @lf.asset(partitions=FEBRUARY, inputs={"daily": lf.lookback(3)}, automation=auto)
    def last3(daily: pl.LazyFrame) -> pl.LazyFrame:
        return daily.select(pl.len().alias("days"), pl.col("trips").sum().alias("trips"))

    return lf.Pipeline([trips, daily, daily_copy, monthly, last3], lake=lake, name="deletes")


def february_trips(url: str) -> None:
    """Every day of February 2024, day i with i % 3 + 1 trips, in one outside commit."""
    ids, days = [], []
    for i in range(1, 30):
        for k in range(i % 3 + 1):
            ids.append(i * 10 + k)
            days.append(f"2024-02-{i:02d}")
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "fare": pa.array([float(i % 7) + 2.5 for i in ids]),
            "day": pa.array(days),
        }
    )
    write_deltalake(url, table, mode="append", partition_by=["day"])
