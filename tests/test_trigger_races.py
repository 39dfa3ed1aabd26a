"""The trigger engine's shared state across awaits, made deterministic: a stand-in controller
(ours, so a test double is fair) holds each request open while outside commits land, and the test
checks that nothing recorded meanwhile is dropped. The randomized end-to-end form of the same
property is tests/test_stress.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from deltalake import DeltaTable

from lakeflow.lake import Lake
from lakeflow.lake.fence import Fence
from lakeflow.triggers.engine import TriggerOptions, Triggers
from lakeflow.triggers.follow import TriggerState
from tests.trigger_pipelines import trips_pipeline, write_trips


class _Events:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def emit(self, event: Any) -> None:
        self.kinds.append(event.kind)


class HeldController:
    """Answers `submit` only when the test releases it; records every request."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.fence = Fence(lake)
        self.events = _Events()
        self.runs: dict[str, Any] = {}
        self.requests: list[tuple[str, ...]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def submit(self, pipeline, request, origin, trigger=None, *, skip_empty=False):
        if not isinstance(request.partitions, tuple):  # a start-up sweep, not a commit's keys
            return {"run_id": None}
        self.requests.append(tuple(request.partitions))
        self.entered.set()
        await self.release.wait()
        return {"run_id": f"run-{len(self.requests)}"}

    def spawn(self, coroutine):
        return asyncio.get_running_loop().create_task(coroutine)

    async def down(self) -> None:
        pass

    def superseded(self, error) -> None:
        raise AssertionError(f"nothing supersedes this controller: {error}")


async def _until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.01)


def test_a_key_touched_again_while_its_request_is_in_flight_is_requested_again(tmp_path):
    lake_url = str(tmp_path / "lake")
    source = f"{lake_url}/trips"
    pipeline = trips_pipeline(lake_url)

    async def scenario() -> HeldController:
        controller = HeldController(Lake(lake_url))
        triggers = Triggers(controller, pipeline, TriggerOptions(poll=0.01))  # type: ignore[arg-type]
        await triggers.start()
        try:
            write_trips(source, "2024-01-05", [10])
            await asyncio.wait_for(controller.entered.wait(), 30)
            assert controller.requests == [("2024-01-05",)]
            # the same day changes again while the first request is being planned
            write_trips(source, "2024-01-05", [11])
            version = DeltaTable(source).version()
            await _until(lambda: triggers.state.cursors["trips"] == version)
            controller.release.set()
            await _until(lambda: len(controller.requests) >= 2)
            state = await asyncio.to_thread(TriggerState.load, Lake(lake_url))
            assert state.cursors["trips"] == version
        finally:
            await triggers.stop()
        return controller

    controller = asyncio.run(scenario())
    assert controller.requests[1] == ("2024-01-05",)


def test_a_failed_request_puts_its_keys_back(tmp_path):
    """A request the controller refuses (the lake away) keeps its keys pending, saved."""
    from lakeflow.errors import LakeError

    lake_url = str(tmp_path / "lake")
    source = f"{lake_url}/trips"
    pipeline = trips_pipeline(lake_url)

    class Refusing(HeldController):
        async def submit(self, pipeline, request, origin, trigger=None, *, skip_empty=False):
            if not isinstance(request.partitions, tuple):
                return {"run_id": None}
            self.requests.append(tuple(request.partitions))
            raise LakeError("the lake is away")

    async def scenario() -> TriggerState:
        controller = Refusing(Lake(lake_url))
        triggers = Triggers(controller, pipeline, TriggerOptions(poll=0.01))  # type: ignore[arg-type]
        await triggers.start()
        try:
            write_trips(source, "2024-01-07", [3])
            await _until(lambda: len(controller.requests) >= 2)  # tried, and tried again
        finally:
            await triggers.stop()
        return await asyncio.to_thread(TriggerState.load, Lake(lake_url))

    state = asyncio.run(scenario())
    assert state.pending == {"trips_daily": {"2024-01-07": ["trips"]}}


@pytest.mark.parametrize("rounds", [3])
def test_pending_keys_survive_a_save_taken_during_the_request(tmp_path, rounds):
    """While a request is in flight, a save by the watcher must still hold its keys: a crash
    right then would otherwise forget them. (The source does not exist before `up`, so no
    start-up sweep runs.)"""
    lake_url = str(tmp_path / "lake")
    source = f"{lake_url}/trips"
    pipeline = trips_pipeline(lake_url)

    async def scenario() -> list[dict]:
        controller = HeldController(Lake(lake_url))
        triggers = Triggers(controller, pipeline, TriggerOptions(poll=0.01))  # type: ignore[arg-type]
        await triggers.start()
        seen = []
        try:
            write_trips(source, "2024-01-09", [5])
            await asyncio.wait_for(controller.entered.wait(), 30)
            for i in range(rounds):  # other days arrive; each makes the watcher save
                write_trips(source, f"2024-01-1{i}", [7])
                version = DeltaTable(source).version()
                await _until(lambda v=version: triggers.state.cursors["trips"] == v)
                await triggers._save()
                state = await asyncio.to_thread(TriggerState.load, Lake(lake_url))
                seen.append(state.pending.get("trips_daily", {}))
            controller.release.set()
        finally:
            await triggers.stop()
        return seen

    for pending in asyncio.run(scenario()):
        assert "2024-01-09" in pending


def test_commits_cleaned_up_while_lakeflow_was_down_still_trigger(tmp_path):
    """The source's log retention passed while the trigger engine was down: the commits after
    its saved cursor are gone. On restart it reads the table afresh and requests its
    consumers' partitions (every one: nothing says which changed) instead of waiting for a
    commit that will never appear."""
    from deltalake.transaction import PostCommitHookProperties

    lake_url = str(tmp_path / "lake")
    source = f"{lake_url}/trips"
    pipeline = trips_pipeline(lake_url, on_start="none")

    async def run(until) -> HeldController:
        controller = HeldController(Lake(lake_url))
        controller.release.set()
        triggers = Triggers(controller, pipeline, TriggerOptions(poll=0.01))  # type: ignore[arg-type]
        await triggers.start()
        try:
            await _until(lambda: until(controller))
        finally:
            await triggers.stop()
        return controller

    write_trips(source, "2024-01-01", [1])
    DeltaTable(source).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds", "delta.checkpointInterval": "2"},
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    asyncio.run(run(lambda c: True))  # cursor saved at version 1
    for n, day in enumerate(["2024-01-02", "2024-01-03", "2024-01-02", "2024-01-04"]):
        write_trips(source, day, [10 + n])  # while down; checkpoints clean the log up
    assert not (tmp_path / "lake" / "trips" / "_delta_log" / f"{2:020d}.json").exists()
    controller = asyncio.run(run(lambda c: c.requests))
    requested = set().union(*controller.requests)
    assert {"2024-01-02", "2024-01-03", "2024-01-04"} <= requested
    state = TriggerState.load(Lake(lake_url))
    assert state.cursors["trips"] == DeltaTable(source).version()


def test_a_gap_keeps_holding_what_a_failed_table_check_published(tmp_path):
    """Commits cleaned up before they were read included a lakeflow commit whose table check
    failed: the partitions still holding that commit's data stay held (consumers do not run on
    them), the others go to the consumers."""
    from lakeflow.lake.events import Event, EventLog
    from lakeflow.lake.log import GAP_OPERATION, Commit
    from lakeflow.triggers.follow import TableFollower
    from tests.trigger_pipelines import held_pipeline

    lake = Lake(str(tmp_path / "lake"))
    log = EventLog(lake)
    log.emit(Event("run-1", "unit_check_failed", asset="trips_checked", version=7))
    log.flush()
    follower = TableFollower(lake, lake.table_url("trips_checked"), "day", cursor=3)
    follower.gaps[9] = {"2024-01-01": 7, "2024-01-02": 8}  # 01 still holds version 7's data
    gap = Commit(9, 0, GAP_OPERATION, None, {}, {"2024-01-01": (), "2024-01-02": (),
                 "2024-01-03": ()}, {}, ("day",))  # fmt: skip
    controller = HeldController(lake)
    triggers = Triggers(controller, held_pipeline(lake.url), TriggerOptions(poll=0.01))  # type: ignore[arg-type]

    kept = asyncio.run(triggers._without_held("trips_checked", gap, follower))
    assert kept.touched == {"2024-01-02", "2024-01-03"}
    assert "trigger_held" in controller.events.kinds
