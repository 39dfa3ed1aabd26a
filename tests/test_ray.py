"""The controller as a Ray actor, its tasks as Ray remote tasks, on a real local Ray."""

import os
import signal
import threading
import time

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.control.client import NAMESPACE, controller_name
from tests.conftest import lake_fingerprint
from tests.pipelines import PIPELINE


def publishes_per_partition(lake: str, asset: str, run_id: str) -> dict[str, int]:
    """How many lakeflow commits of `run_id` published each partition of `asset`."""
    counts: dict[str, int] = {}
    for entry in DeltaTable(f"{lake}/{asset}").history():
        meta = entry.get("lakeflow")
        if meta and meta["run"] == run_id:
            for group in meta["groups"]:
                for key in group["keys"]:
                    counts[key] = counts.get(key, 0) + 1
    return counts


def test_materialize_runs_on_the_controller_actor(ray_session, lake, control):
    result = lf.materialize(PIPELINE, lake=lake)
    assert result.ok, result
    actor = ray_session.get_actor(controller_name(lf.Lake(lake)), namespace=NAMESPACE)
    info = ray_session.get(actor.ping.remote())
    assert info["lake"] == lake and result.run_id in info["runs"] and info["pid"] != os.getpid()
    assert pl.read_delta(f"{lake}/spend_monthly")["days"].to_list() == [10] * 4
    assert lf.materialize(PIPELINE, lake=lake).counts() == {"fresh": 32}


def test_errors_from_the_actor_reach_the_caller_as_ours(ray_session, lake, control):
    with pytest.raises(
        lf.PartitionError, match="asset events: 2023-01-01 is before the first partition"
    ):
        lf.materialize(PIPELINE, select="events", partitions="2023-01-01", lake=lake)


def test_a_downstream_partition_starts_before_its_upstream_asset_is_done(
    ray_session, lake, control
):
    (control / "sleep-events").write_text("0.3")
    result = lf.materialize(PIPELINE, select="events,spend", lake=lake)
    assert result.ok
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id)
    started = events.filter((pl.col("kind") == "unit_started") & (pl.col("asset") == "spend"))[
        "ts"
    ].min()
    last_upstream = events.filter(
        (pl.col("kind") == "unit_published") & (pl.col("asset") == "events")
    )["ts"].max()
    assert started < last_upstream  # no barrier between assets


def test_a_worker_that_dies_mid_task_is_retried_and_published_once(ray_session, lake, control):
    (control / "crash-spend-2024-01-03").touch()
    result = lf.materialize(PIPELINE, select="events,spend", lake=lake)
    assert result.ok, result
    assert publishes_per_partition(lake, "spend", result.run_id) == {
        f"2024-01-{d:02d}": 1 for d in range(1, 11)
    }
    assert pl.read_delta(f"{lake}/spend").filter(pl.col("date") == "2024-01-03").height == 4
    unit = lf.read_events(lf.Lake(lake), run_id=result.run_id).filter(
        (pl.col("asset") == "spend") & (pl.col("partition") == "2024-01-03")
    )
    kinds = unit["kind"].to_list()
    assert kinds.count("unit_started") == 2 and kinds.count("unit_published") == 1
    assert "WorkerLost" in unit.filter(pl.col("kind") == "unit_retry")["message"][0]


@pytest.mark.parametrize("kind", ["materialize", "backfill"])
def test_a_killed_controller_restarts_and_finishes_the_run_exactly_once(
    ray_session, lake, control, kind
):
    (control / "hold-spend_3d").touch()  # the run cannot end before its controller is killed
    outcome: dict = {}

    def materialize() -> None:
        outcome["result"] = getattr(lf, kind)(PIPELINE, lake=lake)

    caller = threading.Thread(target=materialize)
    caller.start()
    name = controller_name(lf.Lake(lake))
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until the run is under way, with some units published
        try:
            published = lf.read_events(lf.Lake(lake))["kind"].to_list().count("unit_published")
        except Exception:
            published = 0
        if published >= 3:
            break
        time.sleep(0.1)
    actor = ray_session.get_actor(name, namespace=NAMESPACE)
    pid = ray_session.get(actor.ping.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 120
    while time.time() < deadline:  # the restarted controller takes the run over
        if "run_resumed" in lf.read_events(lf.Lake(lake))["kind"].to_list():
            break
        time.sleep(0.1)
    (control / "hold-spend_3d").unlink()
    caller.join(timeout=180)
    result = outcome["result"]
    assert result.ok, result
    assert ray_session.get(actor.ping.remote())["pid"] != pid  # a new controller finished it
    kinds = lf.read_events(lf.Lake(lake), run_id=result.run_id)["kind"].to_list()
    assert "run_resumed" in kinds
    for asset in ("events", "spend", "spend_3d"):
        assert publishes_per_partition(lake, asset, result.run_id) == {
            f"2024-01-{d:02d}": 1 for d in range(1, 11)
        }
    assert publishes_per_partition(lake, "spend_monthly", result.run_id) == {"2024-01": 1}
    assert pl.read_delta(f"{lake}/spend").height == 40


def test_assets_get_the_ray_resources_they_ask_for(ray_session, lake):
    @lf.asset(resources=lf.Resources(num_cpus=2, memory=64 * 2**20))
    def heavy() -> pl.DataFrame:
        import ray

        assigned = ray.get_runtime_context().get_assigned_resources()
        return pl.DataFrame({"cpus": [assigned.get("CPU", 0.0)]})

    assert lf.materialize([heavy], lake=lake).ok
    assert pl.read_delta(f"{lake}/heavy")["cpus"].to_list() == [2.0]


def test_resources_no_node_has_fail_fast_and_change_nothing(ray_session, lake):
    @lf.asset(resources=lf.Resources(custom={"gpu_big": 1}))
    def needs_gpu() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    result = lf.materialize([needs_gpu], lake=lake)
    assert result.counts() == {"failed": 1}
    assert "needs gpu_big=1 but no node of the cluster has that much" in result.units["error"][0]
    assert lake_fingerprint(lake) == {}
