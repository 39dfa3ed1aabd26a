import time

import polars as pl

import lakeflow as lf
from lakeflow.errors import ErrorInfo
from lakeflow.plan.planner import AssetSnapshot, Request, build_plan
from lakeflow.plan.scheduler import RunState, UnitStatus

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-04")


@lf.asset(partitions=DAYS)
def a() -> pl.DataFrame:
    return pl.DataFrame()


@lf.asset(partitions=DAYS)
def b(a: pl.LazyFrame) -> pl.LazyFrame:
    return a


@lf.asset(partitions=DAYS)
def c(b: pl.LazyFrame) -> pl.LazyFrame:
    return b


PIPELINE = lf.Pipeline([a, b, c])
DEPTH = {"a": 0, "b": 1, "c": 2}


def new_state(order="oldest"):
    empty = {n: AssetSnapshot.empty(3) for n in PIPELINE.assets}
    plan = build_plan(PIPELINE, Request(select=("*",), order=order), empty)
    return plan, RunState(plan, depth=DEPTH)


def test_only_roots_are_ready_at_first():
    plan, state = new_state()
    assert state.counts()["ready"] == 3 and state.counts()["waiting"] == 6
    batch = state.take(10)
    assert [plan.locate(u) for u in batch] == [("a", 0), ("a", 1), ("a", 2)]


def test_a_partition_flows_downstream_as_soon_as_its_own_input_is_published():
    plan, state = new_state()
    first = state.take(1)[0]
    state.staged(first, rows=1, size=10, seconds=0.1)
    state.published([first], version=0)
    # b 2024-01-01 is ready now and served before the remaining a units: deepest first
    assert plan.locate(state.take(1)[0]) == ("b", 0)


def test_newest_first_order():
    plan, state = new_state(order="newest")
    assert [plan.locate(u)[1] for u in state.take(3)] == [2, 1, 0]


def test_failure_holds_everything_downstream():
    plan, state = new_state()
    unit = state.take(1)[0]
    held = state.failed(unit, ErrorInfo("user", "ValueError", "boom"))
    assert sorted(plan.locate(u) for u in held) == [("b", 0), ("c", 0)]
    assert state.counts()["upstream_failed"] == 2
    assert state.cause[plan.unit("c", 0)] == unit


def test_retry_waits_out_its_backoff():
    _, state = new_state()
    unit = state.take(1)[0]
    state.retry(unit, delay=0.05)
    assert state.status[unit] == UnitStatus.RETRYING
    state.release_backoffs()
    assert state.status[unit] == UnitStatus.RETRYING
    time.sleep(0.06)
    state.release_backoffs()
    assert state.status[unit] == UnitStatus.READY and state.attempts[unit] == 1


def test_run_is_done_when_every_unit_is_final():
    plan, state = new_state()
    while not state.done:
        batch = state.take(10)
        for unit in batch:
            state.staged(unit, rows=1, size=1, seconds=0.0)
        state.published(batch, version=1)
    assert state.succeeded and state.counts()["published"] == plan.size


def test_cancel_stops_what_has_not_started():
    _, state = new_state()
    running = state.take(1)
    cancelled = state.cancel()
    assert len(cancelled) == 8 and state.status[running[0]] == UnitStatus.RUNNING
    assert not state.done
