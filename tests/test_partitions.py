import pickle
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

import lakeflow as lf
from lakeflow.errors import DefinitionError, PartitionError

DAYS = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")


def test_daily_keys_and_indices():
    assert len(DAYS) == 365
    assert DAYS.key(0) == "2013-01-01"
    assert DAYS.key(364) == "2013-12-31"
    assert DAYS.index("2013-02-01") == 31
    assert DAYS.keys(np.array([0, 59])) == ["2013-01-01", "2013-03-01"]
    assert DAYS.column == "date"


def test_time_window_of_a_partition_is_utc_and_end_exclusive():
    partition = DAYS.partition(1)
    assert partition.key == "2013-01-02"
    assert partition.start == datetime(2013, 1, 2, tzinfo=UTC)
    assert partition.end == datetime(2013, 1, 3, tzinfo=UTC)


def test_hourly_and_monthly_keys():
    hours = lf.HourlyPartitions(start="2013-01-01T00", end="2013-01-02T00")
    assert len(hours) == 24
    assert hours.key(5) == "2013-01-01T05"
    assert hours.column == "hour"
    months = lf.MonthlyPartitions(start="2013-01", end="2014-01")
    assert len(months) == 12
    assert months.keys()[-1] == "2013-12"
    assert months.partition(1).start == datetime(2013, 2, 1, tzinfo=UTC)


def test_open_ended_partitions_run_to_the_last_complete_window():
    days = lf.DailyPartitions(start="2024-01-01")
    today = datetime.now(UTC).date()
    assert days.key(len(days) - 1) == str(today.fromordinal(today.toordinal() - 1))


def test_range_spec_is_inclusive():
    assert DAYS.select("2013-01-01..2013-01-31").tolist() == list(range(31))
    assert DAYS.select("2013-01-05").tolist() == [4]
    assert DAYS.select("2013-01-05,2013-01-03").tolist() == [2, 4]
    assert DAYS.select(["2013-01-05", "2013-01-06"]).tolist() == [4, 5]
    assert len(DAYS.select(None)) == 365
    assert len(DAYS.select("*")) == 365


def test_a_spec_is_a_time_span_across_granularities():
    months = lf.MonthlyPartitions(start="2013-01", end="2014-01")
    hours = lf.HourlyPartitions(start="2013-01-01T00", end="2013-02-01T00")
    assert months.select("2013-01-05..2013-02-03").tolist() == [0, 1]  # the months the days touch
    assert DAYS.select("2013-02").tolist() == list(range(31, 59))  # a month names its days
    assert hours.select("2013-01-02").tolist() == list(range(24, 48))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("2012-12-31", "before the first partition 2013-01-01"),
        ("2014-01-01", "after the last partition 2013-12-31"),
        ("2013-12-30..2014-01-02", "after the last partition"),
        ("2013-02-30", "is not a real date"),
        ("2013-1-5", "malformed"),
        ("../x", "malformed"),
        ("2013-01-01..", "malformed partition range"),
        ("", "empty"),
        ("2013-01-05..2013-01-01", "runs backwards"),
        ("2013-01-01,,2013-01-02", "empty"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(spec, message):
    with pytest.raises(PartitionError, match=message.replace("..", r"\.\.")):
        DAYS.select(spec)


def test_index_refuses_keys_outside_the_range_or_malformed():
    with pytest.raises(PartitionError, match="before the first"):
        DAYS.index("2012-01-01")
    with pytest.raises(PartitionError, match="malformed"):
        DAYS.index("2013-01-01T05")
    assert DAYS.indices(["2013-01-02", "nope", "2015-01-01"]).tolist() == [1, -1, -1]


def test_static_partitions():
    regions = lf.StaticPartitions(["us", "eu", "apac"])
    assert len(regions) == 3
    assert regions.select("eu,us").tolist() == [0, 1]
    assert regions.select("us..eu").tolist() == [0, 1]
    with pytest.raises(PartitionError, match="not one of the keys"):
        regions.select("mars")
    with pytest.raises(PartitionError, match="malformed"):
        lf.StaticPartitions(["ok", "a/b"])
    with pytest.raises(DefinitionError, match="unique"):
        lf.StaticPartitions(["a", "a"])


def test_unpartitioned_has_one_partition():
    single = lf.Unpartitioned()
    assert len(single) == 1
    assert single.column is None
    assert single.select("2013-01-01").tolist() == [0]


def test_bad_definitions():
    with pytest.raises(DefinitionError, match="not after start"):
        lf.DailyPartitions(start="2013-01-05", end="2013-01-01")
    with pytest.raises(PartitionError, match="malformed start"):
        lf.MonthlyPartitions(start="2013-01-01")


def test_definitions_pickle_and_compare():
    import pickle

    copy = pickle.loads(pickle.dumps(DAYS))
    assert copy == DAYS
    assert copy.key(3) == "2013-01-04"
    assert lf.StaticPartitions(["a"]) == pickle.loads(pickle.dumps(lf.StaticPartitions(["a"])))


FIVE = lf.TimeWindowPartitions(cron="*/5 * * * *", start="2024-01-01", end="2024-01-02")


def test_cron_windows_keys_windows_and_spans():
    assert len(FIVE) == 288
    assert FIVE.keys(np.arange(3)) == ["2024-01-01T00-00", "2024-01-01T00-05", "2024-01-01T00-10"]
    assert FIVE.index("2024-01-01T23-55") == 287
    window = FIVE.partition(1)
    assert (window.start, window.end) == (
        datetime(2024, 1, 1, 0, 5, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 10, tzinfo=UTC),
    )
    assert FIVE.select("2024-01-01T05").tolist() == list(range(60, 72))  # an hour: 12 windows
    assert FIVE.select("2024-01-01T05-10..2024-01-01T05-20").tolist() == [62, 63, 64]
    assert len(FIVE.select("2024-01-01")) == 288
    with pytest.raises(PartitionError, match="no window start"):
        FIVE.index("2024-01-01T00-03")
    with pytest.raises(PartitionError, match="malformed"):
        FIVE.index("2024-01-01T00")
    with pytest.raises(PartitionError, match="after the last"):
        FIVE.index("2024-01-02T00-00")
    # weekly windows in a timezone: keys are local dates, windows start at local midnight
    weeks = lf.TimeWindowPartitions(
        cron="0 0 * * 1", start="2024-03-18", end="2024-04-08", timezone="Europe/Paris"
    )
    assert weeks.keys() == ["2024-03-18", "2024-03-25", "2024-04-01"]
    assert weeks.partition(1).start == datetime(2024, 3, 24, 23, tzinfo=UTC)
    assert weeks.partition(1).end == datetime(2024, 3, 31, 22, tzinfo=UTC)  # summer time
    open_ended = lf.TimeWindowPartitions(cron="*/15 * * * *", start="2020-01-01")
    assert len(open_ended) > 4 * 24 * 365 * 4
    assert open_ended == pickle.loads(pickle.dumps(open_ended))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "*/5 * * *"}, "malformed cron expression"),
        ({"cron": "nonsense"}, "malformed cron expression"),
        ({"cron": "*/5 * * * * *"}, "5-field cron"),
        ({"start": "2024-01-01T00-03"}, "not a tick of '\\*/5 \\* \\* \\* \\*'"),
        ({"start": "yesterday"}, "malformed start"),
        ({"start": "2024-02-30"}, "malformed start"),
        ({"end": "2023-12-31"}, "not after start"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"timezone": "Europe/Paris"}, "shorter than a day are in UTC"),
        ({"column": "a/b"}, "malformed partition column"),
    ],
)
def test_bad_cron_windows_are_definition_errors(options, message):
    given = {"cron": "*/5 * * * *", "start": "2024-01-01", **options}
    with pytest.raises(DefinitionError, match=message):
        lf.TimeWindowPartitions(**given)


def test_file_partitions_refuse_bad_sensing_options():
    with pytest.raises(DefinitionError, match="on_change must be"):
        lf.FilePartitions("landing/*.csv", on_change="ignore")
    with pytest.raises(DefinitionError, match="settle must be"):
        lf.FilePartitions("landing/*.csv", settle=-1)
    with pytest.raises(DefinitionError, match="list of patterns"):
        lf.FilePartitions("landing/*.csv", ignore="*.tmp")
    assert lf.FilePartitions("landing/*.csv", poll=0.5).settle == 1.0  # two polls


def test_file_partitions_ignore_names_writers_use_while_writing():
    parts = lf.FilePartitions("s3://landing/*")
    for name in ("a.csv.tmp", "a.csv._COPYING_", ".a.csv", "_SUCCESS", "_temporary"):
        assert parts.ignored(f"s3://landing/{name}"), name
    for name in ("a.csv", "a_b.csv", "tmp.csv"):
        assert not parts.ignored(f"s3://landing/{name}"), name
    assert lf.FilePartitions("landing/*", ignore=["*.part"]).ignored("landing/x.part")
    assert not lf.FilePartitions("landing/*", ignore=()).ignored("landing/.x")


def test_a_file_stamp_is_size_and_mtime_or_etag_and_the_registry_keeps_it():
    from lakeflow.define.partitions import describe_stamp, file_stamp

    local = file_stamp({"size": 2000, "mtime": 1_700_000_000.25, "type": "file"})
    assert local == {"@size": 2000, "@mtime": 1_700_000_000_250_000}
    s3 = file_stamp({"size": 10, "ETag": '"5d41402abc4b2a76b9719d911017c592"'})
    assert s3.keys() == {"@size", "@etag"} and s3["@size"] == 10 and 0 <= s3["@etag"] < 2**60
    assert describe_stamp(local).startswith("2,000 bytes, mtime 2023-11-14T22:13:20.250")
    parts = lf.FilePartitions("landing/*.csv")
    parts.load([("a.csv", "landing/a.csv"), ("b.csv", "landing/b.csv", s3)])  # an older entry too
    assert parts.stamp("a.csv") is None and parts.stamp("b.csv") == s3
    parts.load([("a.csv", "landing/a.csv", local)])
    assert parts.keys() == ["a.csv", "b.csv"] and parts.stamp("a.csv") == local
    assert parts.stamps()["@size"].tolist() == [2000, 10]


def test_file_stamps_tell_any_two_etags_apart():
    from lakeflow.define.partitions import file_stamp

    gcs = [file_stamp({"size": 5, "ETag": tag})["@etag"] for tag in ('"CJk="', '"CKk="')]
    azure = [file_stamp({"size": 5, "ETag": f"0x8DC{n}AB12CD34EF56"})["@etag"] for n in (1, 2)]
    assert gcs[0] != gcs[1] and azure[0] != azure[1]
    assert all(0 <= v < 2**60 for v in gcs + azure)


def test_in_progress_folders_below_the_glob_are_ignored():
    parts = lf.FilePartitions("x/**/*.csv")
    assert parts.ignored("x/_temporary/0/a.csv")
    assert parts.ignored("x/day=1/.hive-staging_1/a.csv")
    assert not parts.ignored("x/day=1/a.csv")
    assert not lf.FilePartitions("_landing/*.csv").ignored("_landing/a.csv")  # the fixed part


@pytest.mark.parametrize(
    "options, message",
    [
        ({"settle": "3"}, "settle must be"),
        ({"poll": "1"}, "poll must be"),
        ({"poll": 0}, "poll must be"),
        ({"ignore": None}, "ignore takes"),
        ({"ignore": [3]}, "ignore takes patterns"),
    ],
)
def test_bad_file_sensing_options_are_definition_errors(options, message):
    with pytest.raises(DefinitionError, match=message):
        lf.FilePartitions("landing/*.csv", **options)


@pytest.mark.parametrize("zone", ["America/Havana", "America/Santiago", "Asia/Beirut"])
def test_daily_windows_where_dst_turns_the_clock_at_midnight(zone):
    """A date whose midnight happens twice is one window; one whose midnight never happens
    still has its key: every key is unique and found again."""
    days = lf.TimeWindowPartitions(cron="0 0 * * *", start="2020-01-01", end="2025-01-01",
                                   timezone=zone)  # fmt: skip
    keys = days.keys()
    assert len(keys) == len(set(keys)) == 1827  # every date, once
    assert (days.indices(keys) == np.arange(len(keys))).all()
    assert [days.index(k) for k in keys[:400]] == list(range(400))


def test_cron_windows_find_many_keys_at_once():
    windows = lf.TimeWindowPartitions(cron="*/5 * * * *", start="2024-01-01", end="2024-03-01")
    keys = windows.keys()
    assert (windows.indices(keys) == np.arange(len(keys))).all()
    odd = ["2024-01-01T00-07", "2024-01-01T00:05", "nope", "2030-01-01T00-00", "2023-12-31T23-55"]
    assert windows.indices([keys[3], *odd]).tolist() == [3, -1, -1, -1, -1, -1]


def test_the_definition_hash_does_not_move_as_windows_pass(monkeypatch):
    """Open-ended windows gain a partition every tick: that is no new definition (a run
    resumed after a crash must not be refused as changed)."""
    from lakeflow.define import time_windows
    from lakeflow.define.definition import definition_hash

    def pipeline():
        @lf.asset(partitions=lf.TimeWindowPartitions(cron="*/5 * * * *", start="2024-01-01"))
        def ticks() -> pl.DataFrame:
            return pl.DataFrame({"n": [1]})

        return lf.Pipeline([ticks], lake="./lake", name="windows")

    before = definition_hash(pipeline())
    real = time_windows.time.time
    monkeypatch.setattr(time_windows.time, "time", lambda: real() + 3600)
    assert definition_hash(pipeline()) == before
