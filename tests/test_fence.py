"""One controller commits to a lake at a time: a controller that another has superseded (its
driver was killed and a new one started while it lived on) publishes nothing more, and the new
one resumes its run with every partition published once."""

from __future__ import annotations

import asyncio
import json

import polars as pl
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.control.controller import Controller, ControllerOptions
from lakeflow.errors import Superseded
from lakeflow.execute.executors import LocalExecutor
from lakeflow.lake import Lake
from lakeflow.lake.fence import Fence
from lakeflow.plan.planner import Request
from lakeflow.plan.status import as_pipeline
from tests.pipelines import PIPELINE


async def _until(predicate, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.02)


def test_a_superseded_controller_commits_nothing_and_the_new_one_resumes(lake, control):
    pipeline = as_pipeline(PIPELINE, lake, None)
    request = Request(select=("events",), partitions="2024-01-01..2024-01-04")

    async def scenario() -> tuple[str, Controller, Controller]:
        old = Controller(Lake(lake), LocalExecutor(), ControllerOptions())
        (control / "hold-events").touch()
        run_id = (await old.submit(pipeline, request, "test"))["run_id"]
        await _until(lambda: any(control.glob("held-events-*")))
        new = Controller(Lake(lake), LocalExecutor(), ControllerOptions())
        await new.start()  # the old one's driver is gone; a new controller claims the lake
        (control / "hold-events").unlink()
        assert await old.wait(run_id, timeout=60)
        assert old.is_superseded and old.progress(run_id)["status"] == "superseded"
        assert not DeltaTable.is_deltatable(f"{lake}/events")  # it published nothing
        await new.resume(run_id)
        assert await new.wait(run_id, timeout=60)
        assert new.progress(run_id)["status"] == "succeeded"
        try:
            await old.submit(pipeline, request, "test")
            raise AssertionError("a superseded controller took a request")
        except Superseded:
            pass
        await old.close()
        await new.close()
        return run_id, old, new

    run_id, old, new = asyncio.run(scenario())
    history = [h["lakeflow"] for h in DeltaTable(f"{lake}/events").history() if "lakeflow" in h]
    keys = [k for h in history for g in h["groups"] for k in g["keys"]]
    assert sorted(keys) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    assert {h["epoch"] for h in history} == {new.fence.epoch} and new.fence.epoch > old.fence.epoch
    kinds = lf.read_events(Lake(lake))["kind"].to_list()
    assert "controller_superseded" in kinds
    published = lf.read_events(Lake(lake), run_id=run_id, kinds=["unit_published"])
    assert published.height == 4
    assert pl.read_delta(f"{lake}/events").height == 16


def test_the_in_process_client_takes_the_lake_back_when_asked_again(lake, control):
    """One controller per lake: the last one asked to run something. A local-executor call after
    another controller claimed the lake starts a fresh controller rather than failing."""
    first = lf.materialize(PIPELINE, select="events", partitions="2024-01-01", lake=lake,
                           executor="local")  # fmt: skip
    assert first.ok
    Fence(Lake(lake)).claim()  # someone else claims the lake
    second = lf.materialize(PIPELINE, select="events", partitions="2024-01-02", lake=lake,
                            executor="local")  # fmt: skip
    assert second.ok and second.counts() == {"published": 1}
    epochs = [
        json.loads(d)["epoch"]
        for d in lf.read_events(Lake(lake), kinds=["controller_started"])["detail"]
    ]
    assert len(epochs) == 2 and epochs[1] > epochs[0] + 1


def test_two_runs_asking_for_one_partition_build_it_once(lake, control):
    """A run resumed after a restart, a manual run beside `lakeflow up`, a trigger: two runs of
    one controller may plan the same partitions before either publishes. The second waits for
    the first and finds them fresh; each partition is published once."""
    pipeline = as_pipeline(PIPELINE, lake, None)
    days = "2024-01-01..2024-01-03"

    async def scenario() -> tuple[dict, dict]:
        controller = Controller(Lake(lake), LocalExecutor(), ControllerOptions())
        (control / "hold-events").touch()
        first = await controller.submit(pipeline, Request(select=("events",), partitions=days), "a")
        await _until(lambda: len(list(control.glob("held-events-*"))) >= 2)
        second = await controller.submit(
            pipeline, Request(select=("events", "spend"), partitions=days), "b"
        )
        assert second["total"] == 6  # planned before the first published anything
        (control / "hold-events").unlink()
        for summary in (first, second):
            assert await controller.wait(summary["run_id"], timeout=60)
        out = controller.progress(first["run_id"]), controller.progress(second["run_id"])
        await controller.close()
        return out

    first, second = asyncio.run(scenario())
    assert first["status"] == second["status"] == "succeeded"
    history = [h["lakeflow"] for h in DeltaTable(f"{lake}/events").history() if "lakeflow" in h]
    keys = [k for h in history for g in h["groups"] for k in g["keys"]]
    assert sorted(keys) == ["2024-01-01", "2024-01-02", "2024-01-03"]  # once each
    fresh = lf.read_events(Lake(lake), run_id=second["run_id"], kinds=["unit_fresh"])
    assert sorted(fresh["partition"].to_list()) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert pl.read_delta(f"{lake}/spend").height == 12  # and its consumer ran on them
