"""Timeouts: a unit that runs past its asset's `timeout` (or the pipeline's default) is cancelled,
counts as a failed attempt (a TimeoutError, retried only when the policy names it), and nothing it
staged is ever committed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl

import lakeflow as lf
from tests.pipelines import HANGS, steer


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _eventually(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout}s")


def test_a_hanging_unit_is_cancelled_on_ray_and_fails(ray_session, lake, control):
    (control / "hold-hangs").touch()  # every unit of `hangs` waits until the file goes
    result = lf.materialize(HANGS, partitions="2024-01-01..2024-01-02", lake=lake)
    assert not result.ok
    rows = {
        (a, p): (o, n, e)
        for a, p, o, n, e in result.units.select(
            "asset", "partition", "outcome", "attempts", "error"
        ).iter_rows()
    }
    outcome, attempts, error = rows[("hangs", "2024-01-01")]
    assert (outcome, attempts) == ("failed", 1)  # the default policy does not retry user time-outs
    assert "TimeoutError" in error and "8s" in error
    assert rows[("after_hangs", "2024-01-01")][0] == "upstream_failed"
    held = list(control.glob("held-hangs-2024-01-01-*"))
    assert held, "the unit never started"
    pid = int(held[0].name.rsplit("-", 1)[1])
    _eventually(lambda: not _alive(pid))  # its worker process was killed, not left hanging
    assert not (os.path.exists(f"{lake}/hangs/_delta_log"))  # nothing was committed
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id, kinds=["unit_failed"])
    assert set(events["partition"].to_list()) == {"2024-01-01", "2024-01-02"}


def test_a_pipeline_default_timeout_on_the_local_executor(lake, control):
    """Threads cannot be killed: the unit is failed and its thread abandoned; whatever it stages
    later is never committed."""
    calls = []

    @lf.asset(partitions=lf.StaticPartitions(["slow", "quick"]),
              retry=lf.RetryPolicy(attempts=2, backoff=0.01, retry_on=(TimeoutError,)))  # fmt: skip
    def sometimes(ctx: lf.Context) -> pl.DataFrame:
        calls.append(ctx.partition.key)
        if ctx.partition.key == "slow":
            steer("sometimes", "slow")
        return pl.DataFrame({"n": [1]})

    (control / "hold-sometimes").touch()
    pipeline = lf.Pipeline([sometimes], lake=lake, timeout=1.0)
    started = time.monotonic()
    result = lf.materialize(pipeline, executor="local")
    assert time.monotonic() - started < 30
    rows = {p: (o, n, e) for p, o, n, e in result.units.select(
        "partition", "outcome", "attempts", "error").iter_rows()}  # fmt: skip
    assert rows["quick"][:2] == ("published", 1)
    assert rows["slow"][:2] == ("failed", 2)  # the policy retries time-outs: two attempts
    assert "TimeoutError" in rows["slow"][2]
    (control / "hold-sometimes").unlink()  # the abandoned threads finish and stage their files
    assert calls.count("slow") == 2
    table = Path(lake) / "sometimes"
    _eventually(
        lambda: len([p for p in table.rglob("*.parquet") if "slow" in str(p)]) == 2
    )  # the abandoned attempts wrote their files...
    assert pl.read_delta(f"{lake}/sometimes")["partition"].to_list() == ["quick"]  # ...uncommitted


def test_timeouts_must_be_positive():
    import pytest

    with pytest.raises(lf.DefinitionError, match="timeout"):
        lf.asset(name="stuck", timeout=0)(lambda: None)
    with pytest.raises(lf.DefinitionError, match="timeout"):
        lf.Pipeline(HANGS.assets.values(), timeout=-1)
