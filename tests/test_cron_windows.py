"""`lf.TimeWindowPartitions(cron=...)` end to end: 5-minute windows materialized into real Delta
tables and rolled up into hourly and daily consumers; a schedule naming the window that just
closed; bad definitions through the CLI (exit 2, the lake untouched)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import lake_fingerprint

FIVE = lf.TimeWindowPartitions(cron="*/5 * * * *", start="2024-01-01T22", end="2024-01-02T02")


def pipeline(lake: str) -> lf.Pipeline:
    """readings: one row a minute, value = the minute of the day; hourly and daily roll them up."""

    @lf.asset(partitions=FIVE)
    def readings(ctx: lf.Context) -> pl.DataFrame:
        start = ctx.partition.start
        first = start.hour * 60 + start.minute
        return pl.DataFrame({"minute": list(range(first, first + 5))})

    @lf.asset(partitions=lf.HourlyPartitions(start="2024-01-01T22", end="2024-01-02T02"))
    def hourly(readings: pl.LazyFrame) -> pl.LazyFrame:
        return readings.select(pl.len().alias("rows"), pl.col("minute").sum().alias("total"))

    @lf.asset(partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-03"))
    def daily(readings: pl.LazyFrame) -> pl.LazyFrame:
        return readings.select(pl.len().alias("rows"), pl.col("minute").sum().alias("total"))

    return lf.Pipeline([readings, hourly, daily], lake=lake, name="five")


def test_five_minute_windows_roll_up_into_hours_and_days(tmp_path):
    lake = str(tmp_path / "lake")
    result = lf.materialize(pipeline(lake), executor="local")
    assert result.ok
    readings = pl.read_delta(f"{lake}/readings")
    assert readings["window"].n_unique() == 48  # four hours of 5-minute windows
    assert sorted(readings["window"].unique())[:2] == ["2024-01-01T22-00", "2024-01-01T22-05"]
    frame = pl.read_delta(f"{lake}/hourly").select("hour", "rows", "total")
    hourly = {h: (r, t) for h, r, t in frame.iter_rows()}
    expected = {
        f"2024-01-{d:02d}T{h:02d}": (60, sum(range(h * 60, h * 60 + 60)))
        for d, h in [(1, 22), (1, 23), (2, 0), (2, 1)]
    }
    assert {k: hourly[k] for k in expected} == expected
    daily = pl.read_delta(f"{lake}/daily").select("date", "rows", "total").sort("date").rows()
    assert daily == [
        ("2024-01-01", 120, sum(range(22 * 60, 24 * 60))),
        ("2024-01-02", 120, sum(range(0, 120))),
    ]
    # a spec is a span: one hour of a 5-minute asset is its 12 windows
    again = lf.materialize(
        pipeline(lake), select="readings", partitions="2024-01-01T23", executor="local", force=True
    )
    assert again.ok and again.counts()["published"] == 12


def test_a_schedule_names_the_five_minute_window_that_just_closed():
    five = pipeline("./nowhere")
    tick = datetime(2024, 1, 1, 23, 15, tzinfo=UTC).timestamp()
    every_five = lf.schedule("*/5 * * * *", select="readings")
    assert every_five.spec(five, tick) == "2024-01-01T23-10"


BAD = {
    "cron": ('cron="*/5 * * *", start="2024-01-01"', "malformed cron expression"),
    "start": ('cron="*/5 * * * *", start="2024-01-01T00-03"', "is not a tick of"),
    "timezone": ('cron="*/5 * * * *", start="2024-01-01", timezone="Europe/Paris"', "in UTC"),
}


@pytest.mark.parametrize("what", sorted(BAD))
def test_a_bad_time_window_definition_exits_2_through_the_cli(tmp_path, capsys, what):
    arguments, message = BAD[what]
    path = tmp_path / "bad.py"
    path.write_text(
        "import polars as pl\nimport lakeflow as lf\n"
        f"@lf.asset(partitions=lf.TimeWindowPartitions({arguments}))\n"
        "def readings(ctx): return pl.DataFrame({'x': [1]})\n"
        "pipeline = lf.Pipeline([readings])\n"
    )
    lake = tmp_path / "lake"
    code = main(["materialize", str(path), "--lake", str(lake), "--executor", "local"])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert lake_fingerprint(str(lake)) == {}
