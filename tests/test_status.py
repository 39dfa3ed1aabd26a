"""`lf.status`, `backfill --dry-run` and a run read the lake the same way: sources at their own
URL or at `<lake>/<name>`, partitions that a failed check blocked, consumers of a failed unit."""

from __future__ import annotations

import polars as pl

import lakeflow as lf
from tests.conftest import assert_status_agrees
from tests.pipelines import GATED, PIPELINE
from tests.trigger_pipelines import DAYS, write_trips


def rows(pipeline, lake=None) -> dict[str, dict]:
    return {r["asset"]: r for r in lf.status(pipeline, lake=lake).iter_rows(named=True)}


def sourced(lake: str, url: str | None) -> lf.Pipeline:
    """trips (a source, at `url` or in the lake) -> trips_daily."""
    trips = lf.source("trips", partitions=DAYS, url=url)

    @lf.asset(partitions=DAYS)
    def trips_daily(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(pl.len().alias("trips"))

    return lf.Pipeline([trips, trips_daily], lake=lake, name="sourced")


def _fresh_after_a_run(pipeline: lf.Pipeline, source_url: str) -> None:
    for day, ids in (("2024-01-01", [1, 2]), ("2024-01-02", [3]), ("2024-01-05", [4])):
        write_trips(source_url, day, ids)
    days = "2024-01-01,2024-01-02,2024-01-05"
    assert lf.materialize(pipeline, partitions=days).ok
    got = rows(pipeline)
    assert (got["trips"]["published"], got["trips"]["stale"], got["trips"]["missing"]) == (
        3, 0, len(DAYS) - 3,
    )  # fmt: skip
    assert (got["trips_daily"]["published"], got["trips_daily"]["stale"]) == (3, 0)
    preview = lf.backfill(pipeline, partitions=days, dry_run=True)
    assert (
        preview.total == 0 and preview.missing_inputs == 0 and preview.fresh == {"trips_daily": 3}
    )
    assert_status_agrees(pipeline)


def test_a_source_in_the_lake_is_fresh_after_a_run(ray_session, lake):
    pipeline = sourced(lake, None)
    _fresh_after_a_run(pipeline, f"{lake}/trips")


def test_a_source_at_its_own_url_is_read_where_it_lives(ray_session, lake, tmp_path):
    outside = str(tmp_path / "elsewhere" / "trips")
    pipeline = sourced(lake, outside)
    _fresh_after_a_run(pipeline, outside)
    # a new day in the source: status, dry run and the run agree on what it means
    write_trips(outside, "2024-01-09", [9])
    got = rows(pipeline)
    assert got["trips"]["published"] == 4 and got["trips_daily"]["to_run"] == len(DAYS) - 3
    preview = lf.backfill(pipeline, partitions="2024-01-09", dry_run=True)
    assert preview.units == {"trips_daily": 1} and preview.missing_inputs == 0
    assert lf.backfill(pipeline, partitions="2024-01-09").ok
    assert_status_agrees(pipeline)


def test_status_counts_the_consumers_a_failed_check_blocked(lake, control):
    assert lf.materialize(
        GATED, lake=lake, partitions="2024-01-01..2024-01-03", executor="local"
    ).ok
    (control / "bad-orders-2024-01-02").touch()
    result = lf.materialize(
        GATED, select="orders+", partitions="2024-01-02", force=True, lake=lake, executor="local"
    )
    assert not result.ok
    got = rows(GATED, lake)
    assert got["orders"]["check_failed"] == 1
    for asset in ("order_totals", "ledger", "journal", "ledger_daily", "journal_daily"):
        assert got[asset]["blocked"] == 1, (asset, got[asset])
    assert_status_agrees(GATED, lake=lake)


def test_status_counts_the_consumers_of_a_failed_unit(lake, control):
    (control / "fail-events-2024-01-03").touch()
    result = lf.materialize(PIPELINE, lake=lake, executor="local")
    assert not result.ok
    got = rows(PIPELINE, lake)
    assert got["events"]["failed"] == 1
    assert got["spend"]["upstream_failed"] == 1 and got["spend"]["missing"] == 0
    assert_status_agrees(PIPELINE, lake=lake)
