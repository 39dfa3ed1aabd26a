"""What a run may ask of the controller that hosts it: `RunHost`, a protocol.

A `Run` (control/runner.py) shares the lake, the executor, the event log, the open tables, the
commit locks and the pool of task slots with the other runs of its controller. It reaches them
through this interface alone, so the runner does not import the controller (which imports the
runner) and a test may host a run in anything that has these members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from lakeflow.control.options import ControllerOptions
from lakeflow.errors import Superseded
from lakeflow.execute.executors import Executor
from lakeflow.lake import Lake
from lakeflow.lake.events import EventLog
from lakeflow.lake.fence import Fence
from lakeflow.lake.log import Commit, TableState

__all__ = ["RunHost"]


class RunHost(Protocol):
    """The controller's side of a run: shared state and the few things a run asks it to do."""

    lake: Lake
    executor: Executor
    options: ControllerOptions
    events: EventLog
    fence: Fence
    tables: dict[str, TableState]
    runs: dict[str, Any]  # run id -> Run (every run of this controller, this one included)
    in_flight: int  # tasks in flight, all runs together
    is_superseded: bool

    def capacity(self) -> int:
        """Task slots of the cluster this controller may fill, all runs together."""
        ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        """Run a coroutine as a task the controller tracks (and cancels when it stops)."""
        ...

    def wake_all(self) -> None:
        """Tell every run to look at its queue again (slots or partitions were freed)."""
        ...

    def flush_soon(self) -> None:
        """Write buffered events to the lake shortly, without waiting for the next interval."""
        ...

    def table_lock(self, asset: str) -> asyncio.Lock:
        """The lock that orders this controller's commits to one table."""
        ...

    def committed(self, asset: str, commit: Commit) -> None:
        """A commit of ours landed (listeners: subscriptions, triggers)."""
        ...

    def released(self, asset: str, version: int, passed: bool) -> None:
        """A commit of ours is final: its table checks passed or failed."""
        ...

    def superseded(self, error: Superseded) -> None:
        """Another controller took the lake: stop and commit nothing more."""
        ...
