"""Every wait in lakeflow lets a cancel through. On Python 3.11 `asyncio.wait_for` swallows a
cancel that arrives in the turn its awaitable completes (CPython gh-86296): a loop waiting on an
event with it outlives its `cancel()`, and `lakeflow down` / a controller's shutdown, which await
that loop, hung (about one run in ten of a trigger test). The whole family is closed here: the
package never calls `wait_for` (an AST grep, itself tested), the helpers that replace it keep the
cancel where `wait_for` loses it, and the trigger engine stops in the very turn its events are set."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import pytest

import lakeflow
from lakeflow.aio import wait_event, within
from lakeflow.lake import Lake
from lakeflow.triggers.engine import TriggerOptions, Triggers
from tests.test_trigger_races import HeldController, _until
from tests.trigger_pipelines import trips_pipeline, write_trips

PACKAGE = Path(lakeflow.__file__).parent


def wait_for_calls(source: str) -> list[int]:
    """Lines that call `wait_for` of asyncio (as `asyncio.wait_for`, or imported by name)."""
    tree = ast.parse(source)
    names = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "asyncio"
        for alias in node.names
        if alias.name == "wait_for"
    }
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "wait_for":
            if isinstance(func.value, ast.Name) and func.value.id == "asyncio":
                lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id in names:
            lines.append(node.lineno)
    return lines


def test_the_grep_finds_wait_for_in_every_spelling():
    assert wait_for_calls(
        "import asyncio\nasync def f(e):\n    await asyncio.wait_for(e.wait(), 1)\n"
    ) == [3]
    assert wait_for_calls(
        "from asyncio import wait_for as w\nasync def f(e):\n    await w(e.wait(), 1)\n"
    ) == [3]
    assert wait_for_calls("async def f(driver):\n    await driver.wait_for(1)\n") == []


def test_the_package_never_calls_asyncio_wait_for():
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := wait_for_calls(path.read_text()))
    }
    assert found == {}, f"use lakeflow.aio.within / wait_event instead of asyncio.wait_for: {found}"


async def _cancelled_as_event_is_set(wait) -> tuple[bool, int]:
    """A loop that waits on an event with `wait`, cancelled in the turn the event is set:
    (whether the cancel ended it, how many times it went round after)."""
    event = asyncio.Event()
    rounds = 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            await wait(event)
            event.clear()
            rounds += 1

    task = asyncio.get_running_loop().create_task(loop())
    await _until(lambda: bool(event._waiters))  # parked in its wait
    event.set()
    task.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    ended = task.done()
    if not ended:  # it lost the cancel: end it for good
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return ended, rounds


def test_wait_event_keeps_a_cancel_that_wait_for_loses():
    async def with_helper(event):
        await wait_event(event, 30)

    async def with_wait_for(event):
        try:
            await asyncio.wait_for(event.wait(), 30)
        except TimeoutError:
            pass

    async def scenario():
        ours = [await _cancelled_as_event_is_set(with_helper) for _ in range(20)]
        theirs = [await _cancelled_as_event_is_set(with_wait_for) for _ in range(20)]
        return ours, theirs

    ours, theirs = asyncio.run(scenario())
    assert ours == [(True, 0)] * 20
    if sys.version_info < (3, 12):  # the defect itself, so this test keeps meaning something
        assert all(not ended for ended, _ in theirs), theirs


def test_the_helpers_time_out_return_and_cancel_as_wait_for_did():
    async def scenario():
        event = asyncio.Event()
        assert await wait_event(event, 0.01) is False
        assert await wait_event(event, 0) is False
        event.set()
        assert await wait_event(event, 0) is True
        assert await wait_event(event, None) is True
        assert await within(asyncio.sleep(0, result=7), 1) == 7
        assert await within(asyncio.sleep(0, result=8), None) == 8
        slow = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await within(slow, 0.01)
        assert slow.cancelled()  # a timed-out wait cancels what it waited on
        # a cancel from outside reaches the caller, not a TimeoutError
        waiter = asyncio.get_running_loop().create_task(wait_event(asyncio.Event(), 30))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())


def test_the_trigger_engine_stops_in_the_turn_its_events_are_set(tmp_path):
    """`stop` cancels the watch and fire loops; a commit or a fire request landing in the same
    turn must not keep them alive (they would wait out `poll`, then go round again forever)."""
    lake_url = str(tmp_path / "lake")
    write_trips(f"{lake_url}/trips", "2024-01-01", [1])
    pipeline = trips_pipeline(lake_url, on_start="none")

    async def scenario() -> None:
        controller = HeldController(Lake(lake_url))
        for _ in range(20):
            triggers = Triggers(controller, pipeline, TriggerOptions(poll=60.0))  # type: ignore[arg-type]
            await triggers.start()
            await _until(lambda t=triggers: bool(t.wake._waiters) and bool(t.fire._waiters))
            triggers.wake.set()
            triggers.fire.set()
            await within(triggers.stop(), 20)  # TimeoutError here: a loop lost its cancel
            assert triggers._tasks == []

    asyncio.run(scenario())
