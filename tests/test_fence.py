"""One controller commits to a lake at a time: a controller that another has superseded (its
driver was killed and a new one started while it lived on) publishes nothing more, and the new
one resumes its run with every partition published once."""

from __future__ import annotations

import asyncio
import json

import polars as pl
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.controller import Controller, ControllerOptions
from lakeflow.errors import Superseded
from lakeflow.executors import LocalExecutor
from lakeflow.lake import Lake
from lakeflow.lake.fence import Fence
from lakeflow.planner import Request
from lakeflow.status import as_pipeline
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
