"""The example pipeline on the real 2013 New York flights: its results match a direct computation."""

import polars as pl
import pytest

import lakeflow as lf
from pipelines import flights
from tests.conftest import assert_status_agrees


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
    assert result.counts() == {"published": 1 + 4 * 31 + 1}  # airlines, four daily assets, January


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
    assert_status_agrees(flights.pipeline, lake=lake)


def test_the_gates_pass_on_the_real_data(january):
    lake, _ = january
    checks = lf.check_results(flights.pipeline, lake=lake)
    assert set(checks["status"].to_list()) == {"passed"}
    assert (
        "gx:flights_clean: expect_column_values_to_be_in_set(origin)" in checks["check"].to_list()
    )
    table = checks.filter(pl.col("scope") == "table")
    assert set(table["check"].to_list()) == {"unique(carrier, flight, time_hour)"}


def test_a_planted_bad_day_is_held_by_the_gate(january, monkeypatch):
    lake, _ = january
    before = pl.read_delta(f"{lake}/raw_flights").filter(pl.col("date") == "2013-01-15")
    monkeypatch.setenv("FLIGHTS_PLANT_BAD_DAY", "2013-01-15")
    result = lf.materialize(
        flights.pipeline,
        select="raw_flights+",
        partitions="2013-01-15",
        force=True,
        lake=lake,
        executor="local",
    )
    outcome = dict(
        ((a, p), o) for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()
    )
    assert outcome[("raw_flights", "2013-01-15")] == "check_failed"
    assert (
        outcome[("flights_clean", "2013-01-15")] == "blocked"
        and outcome[("monthly_delays", "2013-01")] == "blocked"
    )
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert "no negative air time failed: 9 of 894 rows" in error and "{air_time=-" in error
    after = pl.read_delta(f"{lake}/raw_flights").filter(pl.col("date") == "2013-01-15")
    assert after.sort("flight", "time_hour").equals(
        before.sort("flight", "time_hour")
    )  # readers never saw it
    monkeypatch.delenv("FLIGHTS_PLANT_BAD_DAY")
    rerun = lf.materialize(
        flights.pipeline,
        select="raw_flights+",
        partitions="2013-01-15",
        force=True,
        lake=lake,
        executor="local",
    )
    assert rerun.ok
    assert_status_agrees(flights.pipeline, lake=lake)
