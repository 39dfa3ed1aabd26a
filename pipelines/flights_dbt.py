"""The flights lake with a dbt project on top: the models of `pipelines/flights_dbt/` are lakeflow
assets, partitioned by day, gated by their dbt tests before publish, in one graph with the Python
assets that write their sources and one that reads their mart.

    airlines ─────────────────────────────────────────────┐
    raw_flights ─► stg_flights ─┬─► daily_carrier_delays ─┴─► carrier_summary
    raw_weather ─► stg_weather ─┘          └─► monthly_carrier_delays (Python)

beside the flights pipeline's own Python marts (flights_clean, daily_delays, monthly_delays),
which compute the same delays: the two stay comparable in one lake.

Run it: `lakeflow materialize pipelines/flights_dbt.py --partitions 2013-01-01..2013-01-31`

`raw_flights`, `raw_weather` and `airlines` are the flights pipeline's assets (Python, with their
gates); the dbt project reads them as its source `flights`. With FLIGHTS_PLANT_BAD_DAY=2013-01-15
the weather of that day arrives twice: dbt's `unique` test on `stg_weather.obs_id` holds that one
day of `stg_weather`, and the mart's day waits; every other day publishes. (The same day's
flights are held by raw_flights' own gate.)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

import lakeflow as lf
from pipelines import flights

PROJECT = Path(__file__).resolve().parent / "flights_dbt"

models = lf.dbt_project(PROJECT, declare_sources=False)  # the sources are the assets below


@lf.asset(partitions=flights.MONTHS, inputs={"daily_carrier_delays": lf.rollup()})
def monthly_carrier_delays(daily_carrier_delays: pl.LazyFrame) -> pl.LazyFrame:
    """The dbt mart rolled up to months in Python: flights and flight-weighted mean delays."""
    weight = pl.col("flights")
    return (
        daily_carrier_delays.group_by("carrier", "origin")
        .agg(
            weight.sum().alias("flights"),
            ((pl.col("mean_dep_delay_minutes") * weight).sum() / weight.sum()).alias(
                "mean_dep_delay_minutes"
            ),
            pl.col("date").n_unique().cast(pl.Int64).alias("days"),
        )
        .sort("carrier", "origin")
    )


pipeline = lf.Pipeline(
    [*flights.pipeline.assets.values(), *models, monthly_carrier_delays],
    lake="./lake",
    name="flights_dbt",
)
