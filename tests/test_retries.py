"""Retries: a retried unit goes before the backlog, its `unit_retry` is in the lake before it runs
again, and a retry policy caps attempts across controller restarts."""

from __future__ import annotations

import time

import polars as pl

import lakeflow as lf
from tests.pipelines import PIPELINE


def _eventually(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


def test_a_retry_goes_before_the_backlog(lake, control):
    (control / "sleep-events").write_text("0.1")
    (control / "flaky-events-2024-01-02").touch()  # fails once, transiently
    result = lf.backfill(
        PIPELINE,
        select="events",
        lake=lake,
        executor="local",
        options=lf.ControllerOptions(max_in_flight=1, max_task_units=1),
    )
    assert result.ok
    started = (
        lf.read_events(lf.Lake(lake), run_id=result.run_id, kinds=["unit_started"])
        .sort("ts", maintain_order=True)["partition"]
        .to_list()
    )
    assert started.count("2024-01-02") == 2
    second = len(started) - 1 - started[::-1].index("2024-01-02")
    assert second <= 4, started  # right after the unit in flight, not after all ten


def test_a_retry_is_in_the_event_log_before_the_unit_runs_again(lake, control):
    (control / "flaky-events-2024-01-02").touch()
    (control / "hold-events").touch()  # the second attempt waits here, saying so
    handle = lf.backfill(
        PIPELINE, select="events", partitions="2024-01-02", lake=lake, executor="local", wait=False
    )
    _eventually(lambda: any(control.glob("held-events-2024-01-02-*")))
    retries = lf.read_events(lf.Lake(lake), run_id=handle.id, kinds=["unit_retry"])
    (control / "hold-events").unlink()
    assert retries.height == 1 and retries["partition"][0] == "2024-01-02"
    assert handle.wait().ok


def test_attempts_are_capped_across_a_controller_restart(lake, control):
    (control / "fail-events-2024-01-03").touch()
    first = lf.backfill(
        PIPELINE, select="events", partitions="2024-01-01..2024-01-04", lake=lake, executor="local"
    )
    assert not first.ok
    failed = first.units.filter(pl.col("partition") == "2024-01-03")
    assert failed["attempts"][0] == 3  # events' policy: attempts=3
    lf.stop(lake)  # a new controller takes the run over

    resumed = lf.resume(first.run_id, lake=lake, executor="local")
    assert not resumed.ok
    events = lf.read_events(lf.Lake(lake), run_id=first.run_id)
    starts = events.filter(
        (pl.col("kind") == "unit_started") & (pl.col("partition") == "2024-01-03")
    )
    assert starts.height == 3  # all before the restart; none after it
    last = events.filter(pl.col("kind") == "unit_failed").sort("ts")["message"][-1]
    assert "attempts were spent" in last


def test_an_error_of_user_code_is_not_retried_by_default(lake):
    calls = []

    @lf.asset  # no retry policy: a KeyError repeats with the same code and data
    def lookup() -> pl.DataFrame:
        calls.append(1)
        raise KeyError("carrier")

    result = lf.materialize([lookup], lake=lake, executor="local")
    row = result.units.row(0, named=True)
    assert row["outcome"] == "failed" and row["attempts"] == 1 and "KeyError" in row["error"]
    assert len(calls) == 1
    assert lf.read_events(lf.Lake(lake), run_id=result.run_id, kinds=["unit_retry"]).is_empty()


def test_a_policy_that_names_retries_retries_user_errors(lake):
    calls = []

    @lf.asset(retry=lf.RetryPolicy(attempts=3, backoff=0.01, retry_on=(KeyError,)))
    def lookup() -> pl.DataFrame:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("carrier")
        return pl.DataFrame({"a": [1]})

    result = lf.materialize([lookup], lake=lake, executor="local")
    row = result.units.row(0, named=True)
    assert row["outcome"] == "published" and row["attempts"] == 3


def test_a_lost_worker_is_retried_by_default(ray_session, lake, control):
    (control / "crash-spend_3d-2024-01-03").touch()  # spend_3d has no retry policy
    result = lf.materialize(
        PIPELINE, select="+spend_3d", partitions="2024-01-01..2024-01-03", lake=lake
    )
    assert result.ok, result.units
    row = result.units.filter(
        (pl.col("asset") == "spend_3d") & (pl.col("partition") == "2024-01-03")
    ).row(0, named=True)
    assert row["outcome"] == "published" and row["attempts"] == 2
