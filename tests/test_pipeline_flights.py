"""The example pipeline on the real 2013 New York flights: its results match a direct computation."""

import polars as pl
import pytest

import lakeflow as lf
from pipelines import flights


@pytest.fixture(scope="module")
def january(tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("flights") / "lake")
    result = lf.materialize(
        flights.pipeline, partitions="2013-01-01..2013-01-31", lake=lake, executor="local"
    )
    assert result.ok, result
    yield lake, result
    lf.stop(lake)


def test_january_is_published_for_every_asset(january):
    _, result = january
    assert result.counts() == {"published": 4 * 31 + 1}


def test_daily_delays_match_a_direct_computation(january):
    lake, _ = january
    source = flights._all_flights().filter((pl.col("month") == 1) & (pl.col("day") == 15))
    expected = (
        source.filter(pl.col("dep_time").is_not_null() & pl.col("air_time").is_not_null())
        .group_by("carrier", "origin")
        .agg(pl.len().alias("flights"), pl.col("dep_delay").mean().alias("mean_dep_delay"))
        .sort("carrier", "origin")
    )
    got = (
        pl.read_delta(f"{lake}/daily_delays")
        .filter(pl.col("date") == "2013-01-15")
        .sort("carrier", "origin")
    )
    assert got["flights"].to_list() == expected["flights"].to_list()
    assert got["mean_dep_delay"].round(6).to_list() == expected["mean_dep_delay"].round(6).to_list()
    assert got["mean_wind_mph"].null_count() == 0


def test_the_monthly_rollup_counts_every_departed_flight(january):
    lake, _ = january
    departed = flights._all_flights().filter(
        (pl.col("month") == 1) & pl.col("dep_time").is_not_null() & pl.col("air_time").is_not_null()
    )
    monthly = pl.read_delta(f"{lake}/monthly_delays")
    assert monthly["flights"].sum() == departed.height
    assert set(monthly["days"].to_list()) <= set(range(1, 32)) and monthly["days"].max() == 31


def test_status_after_january(january):
    lake, _ = january
    rows = {r["asset"]: r for r in lf.status(flights.pipeline, lake=lake).iter_rows(named=True)}
    assert rows["raw_flights"]["published"] == 31 and rows["raw_flights"]["missing"] == 334
    assert rows["monthly_delays"]["published"] == 1 and rows["monthly_delays"]["stale"] == 0
