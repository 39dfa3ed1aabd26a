"""The planner is pure: these tests build table snapshots by hand and check the plans."""

import numpy as np
import polars as pl
import pytest

import lakeflow as lf
from lakeflow.errors import PartitionError
from lakeflow.plan.planner import (
    FRESH,
    MISSING,
    STALE,
    AssetSnapshot,
    Request,
    build_plan,
    partition_status,
)

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")  # 10 days
MONTHS = lf.MonthlyPartitions(start="2024-01", end="2024-02")


@lf.asset(partitions=DAYS, code_version="r1")
def raw() -> pl.DataFrame:
    return pl.DataFrame()


@lf.asset(partitions=DAYS, code_version="c1")
def clean(raw: pl.LazyFrame) -> pl.LazyFrame:
    return raw


@lf.asset(partitions=DAYS, code_version="w1", inputs={"clean": lf.lookback(3)})
def weekly(clean: pl.LazyFrame) -> pl.LazyFrame:
    return clean


@lf.asset(partitions=MONTHS, code_version="m1")
def monthly(clean: pl.LazyFrame) -> pl.LazyFrame:
    return clean


PIPELINE = lf.Pipeline([raw, clean, weekly, monthly])


def published(count, *, code, version=1, inputs=None, missing=()):
    """A snapshot where every partition was published by lakeflow at `version`."""
    present = np.ones(count, bool)
    touched = np.full(count, version, np.int64)
    for i in missing:
        present[i], touched[i] = False, -1
    return AssetSnapshot(
        version,
        present,
        touched,
        np.where(present, code, "").astype(object),
        np.full(count, "r", object),
        {k: np.full(count, v, np.int64) for k, v in (inputs or {}).items()},
    )


def fresh_lake():
    return {
        "raw": published(10, code="r1", version=3),
        "clean": published(10, code="c1", version=2, inputs={"raw": 3}),
        "weekly": published(10, code="w1", version=2, inputs={"clean": 2}),
        "monthly": published(1, code="m1", version=2, inputs={"clean": 2}),
    }


def planned(plan):
    return {a: [int(i) for i in idx] for a, idx in zip(plan.assets, plan.indices, strict=True)}


def test_an_empty_lake_plans_everything_with_dependencies():
    empty = {n: AssetSnapshot.empty(len(PIPELINE[n].partitions)) for n in PIPELINE.assets}
    plan = build_plan(PIPELINE, Request(select=("*",)), empty)
    assert plan.counts() == {"raw": 10, "clean": 10, "weekly": 10, "monthly": 1}
    # clean 2024-01-05 waits for raw 2024-01-05 only
    unit = plan.unit("clean", 4)
    assert plan.waits[unit] == 1
    # weekly 2024-01-05 waits for clean 01-03..01-05, monthly for all ten days
    assert plan.waits[plan.unit("weekly", 4)] == 3
    assert plan.waits[plan.unit("monthly", 0)] == 10
    downstream = {plan.locate(int(u)) for u in plan.downstream(plan.unit("clean", 4))}
    assert downstream == {("weekly", 4), ("weekly", 5), ("weekly", 6), ("monthly", 0)}


def test_fresh_units_are_skipped():
    plan = build_plan(PIPELINE, Request(select=("*",)), fresh_lake())
    assert plan.size == 0
    assert {a: len(v) for a, v in plan.fresh.items()} == {
        "raw": 10,
        "clean": 10,
        "weekly": 10,
        "monthly": 1,
    }


def test_force_reruns_fresh_units():
    plan = build_plan(
        PIPELINE, Request(select=("clean",), partitions="2024-01-02", force=True), fresh_lake()
    )
    assert planned(plan) == {"clean": [1]}


def test_one_changed_upstream_partition_makes_only_its_mapped_partitions_stale():
    lake = fresh_lake()
    lake["raw"].touched[4] = 7  # an outside commit rewrote raw 2024-01-05 at version 7
    plan = build_plan(PIPELINE, Request(select=("*",)), lake)
    assert planned(plan) == {"clean": [4], "weekly": [4, 5, 6], "monthly": [0]}


def test_new_code_version_makes_the_asset_stale_and_its_consumers_rerun():
    lake = fresh_lake()
    lake["weekly"].code[:] = "w0"
    plan = build_plan(PIPELINE, Request(select=("clean+",)), lake)
    assert planned(plan) == {"weekly": list(range(10))}


def test_partition_spec_applies_to_each_asset_as_a_time_span():
    empty = {n: AssetSnapshot.empty(len(PIPELINE[n].partitions)) for n in PIPELINE.assets}
    plan = build_plan(PIPELINE, Request(select=("*",), partitions="2024-01-02..2024-01-03"), empty)
    assert planned(plan)["clean"] == [1, 2]
    # the month overlaps the span, but its other days lie outside it and are not there: it
    # waits; so do the 3-day lookbacks that reach back to 2024-01-01
    assert "monthly" not in planned(plan) and not plan.missing
    assert [(w.asset, w.index, w.upstream, w.upstream_index) for w in plan.waiting] == [
        ("weekly", 1, "clean", 0),
        ("weekly", 2, "clean", 0),
        ("monthly", 0, "clean", 0),
    ]


def test_a_window_inside_the_request_is_planned_and_a_gap_inside_it_is_missing():
    empty = {n: AssetSnapshot.empty(len(PIPELINE[n].partitions)) for n in PIPELINE.assets}
    span = "2024-01-01..2024-01-10"  # every day of the month the partitions have
    whole = build_plan(PIPELINE, Request(select=("*",), partitions=span), empty)
    assert "monthly" in planned(whole) and not whole.waiting
    only = build_plan(PIPELINE, Request(select=("monthly",), partitions=span), empty)
    assert not only.waiting and {m.asset for m in only.missing} == {"monthly"}


def test_missing_inputs_that_are_not_planned_are_reported():
    lake = fresh_lake()
    lake["clean"] = published(10, code="c1", version=2, inputs={"raw": 3}, missing=(6,))
    lake["weekly"] = published(10, code="w0", version=2, inputs={"clean": 2})
    plan = build_plan(PIPELINE, Request(select=("weekly",)), lake)
    gaps = {(m.asset, m.index, m.upstream, m.upstream_index) for m in plan.missing}
    assert gaps == {("weekly", 6, "clean", 6), ("weekly", 7, "clean", 6), ("weekly", 8, "clean", 6)}


def test_bad_partition_spec_names_the_asset():
    with pytest.raises(PartitionError, match="asset raw: 2023-12-31 is before the first partition"):
        build_plan(PIPELINE, Request(select=("raw",), partitions="2023-12-31"), fresh_lake())


def test_done_units_are_left_out():
    empty = {n: AssetSnapshot.empty(len(PIPELINE[n].partitions)) for n in PIPELINE.assets}
    plan = build_plan(PIPELINE, Request(select=("raw",)), empty, done={"raw": np.array([0, 1, 2])})
    assert planned(plan) == {"raw": list(range(3, 10))}


def test_a_cumulative_asset_chains_its_partitions():
    @lf.asset(partitions=DAYS, code_version="t1", inputs={"total": lf.previous()})
    def total(total: pl.LazyFrame, raw: pl.LazyFrame) -> pl.LazyFrame:
        return raw

    pipeline = lf.Pipeline([raw, total])
    lake = {
        "raw": published(10, code="r1", version=3),
        "total": published(10, code="t1", version=9, inputs={"raw": 3, "total": 9}),
    }
    lake["raw"].touched[5] = 10  # raw day 6 changed: total day 6 and every later day rerun
    plan = build_plan(pipeline, Request(select=("total",)), lake)
    assert planned(plan) == {"total": [5, 6, 7, 8, 9]}
    assert plan.waits[plan.unit("total", 6)] == 1 and plan.waits[plan.unit("total", 5)] == 0


def test_partition_status_marks_fresh_stale_and_missing():
    lake = fresh_lake()
    lake["raw"].touched[0] = 8
    lake["monthly"] = published(1, code="m1", version=2, inputs={"clean": 2}, missing=(0,))
    flags = partition_status(PIPELINE, lake)
    assert flags["raw"].tolist() == [FRESH] * 10
    assert flags["clean"].tolist() == [STALE] + [FRESH] * 9
    assert flags["weekly"].tolist() == [STALE] * 3 + [FRESH] * 7
    assert flags["monthly"].tolist() == [MISSING]


def test_a_million_unit_plan_is_arrays_not_objects():
    hours = lf.HourlyPartitions(start="2000-01-01T00", end="2028-07-11T16")  # 250k hours

    @lf.asset(partitions=hours, name="a")
    def a_() -> pl.DataFrame:
        return pl.DataFrame()

    @lf.asset(partitions=hours, name="b")
    def b_(a: pl.LazyFrame) -> pl.LazyFrame:
        return a

    pipeline = lf.Pipeline([a_, b_])
    empty = {n: AssetSnapshot.empty(len(hours)) for n in pipeline.assets}
    plan = build_plan(pipeline, Request(select=("*",)), empty)
    assert plan.size == 2 * len(hours) > 500_000
    assert plan.waits.dtype == np.int32 and int(plan.waits.sum()) == len(hours)


def test_every_unit_that_lacks_an_input_is_known_beyond_the_first_thousand():
    """The plan details the first 1,000 missing inputs, but names every unit that lacks one: a
    start-up request of `lakeflow up` leaves them all out, however many."""
    years = lf.DailyPartitions(start="2000-01-01", end="2010-01-01", column="day")
    src = lf.source("src", partitions=years)

    @lf.asset(partitions=years, code_version="d1")
    def daily(src: pl.LazyFrame) -> pl.LazyFrame:
        return src

    pipeline = lf.Pipeline([src, daily])
    have = np.zeros(len(years), bool)
    have[-10:] = True  # the source holds its last ten days only
    source = AssetSnapshot(
        3, have, np.where(have, 3, -1).astype(np.int64), np.full(len(years), "", object),
        np.full(len(years), "", object), {},
    )  # fmt: skip
    plan = build_plan(
        pipeline,
        Request(select=("daily",)),
        {"src": source, "daily": AssetSnapshot.empty(len(years))},
    )
    assert plan.size == len(years) and len(plan.missing) == 1000
    assert plan.unready is not None and len(plan.unready) == len(years) - 10
    ready = np.setdiff1d(np.arange(plan.size), plan.unready)
    assert years.keys(plan.indices[0][ready]) == years.keys(np.arange(len(years) - 10, len(years)))
