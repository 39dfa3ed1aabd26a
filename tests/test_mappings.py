import numpy as np
import pytest

import lakeflow as lf
from lakeflow.define.mappings import (
    AllPartitions,
    Identity,
    TimeOverlap,
    default_mapping,
    expand_ranges,
)
from lakeflow.errors import DefinitionError

DAYS = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")
LATER_DAYS = lf.DailyPartitions(start="2013-01-10", end="2014-01-01")
MONTHS = lf.MonthlyPartitions(start="2013-01", end="2014-01")
HOURS = lf.HourlyPartitions(start="2013-01-01T00", end="2013-01-03T00")


def ranges(mapping, down, up, indices):
    lo, hi = mapping.ranges(down, up, np.array(indices))
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


def test_identity_between_days_follows_the_date_not_the_index():
    assert ranges(TimeOverlap(), LATER_DAYS, DAYS, [0, 1]) == [(9, 10), (10, 11)]
    assert ranges(TimeOverlap(), DAYS, LATER_DAYS, [0, 9]) == [
        (0, 0),
        (0, 1),
    ]  # before its start: nothing


def test_rollup_month_reads_its_days():
    assert ranges(lf.rollup(), MONTHS, DAYS, [0, 1, 11]) == [(0, 31), (31, 59), (334, 365)]


def test_fan_out_hour_reads_its_day():
    assert ranges(TimeOverlap(), HOURS, DAYS, [0, 23, 24]) == [(0, 1), (0, 1), (1, 2)]


def test_lookback_reads_the_last_n_windows():
    assert ranges(lf.lookback(7), DAYS, DAYS, [0, 3, 10]) == [(0, 1), (0, 4), (4, 11)]
    assert ranges(lf.lookback(2), MONTHS, DAYS, [1]) == [(0, 59)]


def test_previous_reads_the_partition_before():
    assert ranges(lf.previous(), DAYS, DAYS, [0, 1, 5]) == [(0, 0), (0, 1), (4, 5)]


def test_all_and_static_identity():
    regions = lf.StaticPartitions(["us", "eu"])
    other = lf.StaticPartitions(["eu", "apac", "us"])
    assert ranges(AllPartitions(), lf.Unpartitioned(), DAYS, [0]) == [(0, 365)]
    assert ranges(Identity(), regions, other, [0, 1]) == [(2, 3), (0, 1)]


def test_defaults():
    assert isinstance(default_mapping(DAYS, DAYS), TimeOverlap)
    assert isinstance(default_mapping(lf.Unpartitioned(), DAYS), AllPartitions)
    assert isinstance(default_mapping(DAYS, lf.Unpartitioned()), AllPartitions)
    with pytest.raises(DefinitionError, match="no default mapping"):
        default_mapping(lf.StaticPartitions(["a"]), DAYS)


def test_mappings_refuse_definitions_they_cannot_join():
    with pytest.raises(DefinitionError):
        lf.rollup().check(lf.StaticPartitions(["a"]), DAYS)
    with pytest.raises(DefinitionError):
        lf.previous().check(DAYS, MONTHS)
    with pytest.raises(DefinitionError):
        lf.lookback(0)


def test_expand_ranges():
    owners, ups = expand_ranges(np.array([0, 5, 3]), np.array([2, 5, 6]))
    assert owners.tolist() == [0, 0, 2, 2, 2]
    assert ups.tolist() == [0, 1, 3, 4, 5]


FIVE = lf.TimeWindowPartitions(cron="*/5 * * * *", start="2013-01-01", end="2013-01-03")
WEEKS = lf.TimeWindowPartitions(cron="0 0 * * 2", start="2013-01-01", end="2013-02-05")


def test_cron_windows_map_like_the_calendar_ones():
    assert default_mapping(HOURS, FIVE) == TimeOverlap()
    assert ranges(TimeOverlap(), HOURS, FIVE, [0, 5]) == [(0, 12), (60, 72)]  # roll-up
    assert ranges(TimeOverlap(), DAYS, FIVE, [0, 1, 2]) == [(0, 288), (288, 576), (576, 576)]
    assert ranges(TimeOverlap(), FIVE, HOURS, [0, 11, 12]) == [(0, 1), (0, 1), (1, 2)]  # fan-out
    assert ranges(Identity(), FIVE, FIVE, [7]) == [(7, 8)]
    assert ranges(lf.lookback(3), FIVE, FIVE, [0, 10]) == [(0, 1), (8, 11)]
    assert ranges(lf.previous(), FIVE, FIVE, [0, 4]) == [(0, 0), (3, 4)]
    assert ranges(TimeOverlap(), WEEKS, DAYS, [0, 1]) == [(0, 7), (7, 14)]  # Tuesday weeks
    assert ranges(TimeOverlap(), MONTHS, WEEKS, [0]) == [(0, 5)]  # weeks touching January
