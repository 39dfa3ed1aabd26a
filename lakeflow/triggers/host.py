"""What the trigger engine needs of the controller that hosts it (`TriggerHost`, a protocol:
the triggers sit below the controller), and the engine's options."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from lakeflow.define.graph import Pipeline
from lakeflow.errors import Superseded
from lakeflow.lake import Lake
from lakeflow.lake.events import EventLog
from lakeflow.lake.fence import Fence
from lakeflow.plan.planner import Plan, Request

__all__ = ["HostedRun", "TriggerHost", "TriggerOptions"]


class HostedRun(Protocol):
    """What the triggers read of a run in their controller."""

    finished: asyncio.Event
    plan: Plan


class TriggerHost(Protocol):
    """What the triggers need of the controller that hosts them (`control.controller.Controller`
    is one; the trigger race tests hold a smaller one). The triggers sit below the controller:
    it builds them, they see it only through this."""

    lake: Lake
    fence: Fence
    events: EventLog
    runs: Mapping[str, HostedRun]

    async def plan(self, pipeline: Pipeline, request: Request) -> Plan: ...

    async def submit(
        self,
        pipeline: Pipeline,
        request: Request,
        origin: str,
        trigger: dict[str, Any] | None = None,
        *,
        skip_empty: bool = False,
    ) -> dict[str, Any]: ...

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task: ...

    async def down(self) -> Any: ...

    def superseded(self, error: Superseded) -> None: ...


@dataclass(frozen=True)
class TriggerOptions:
    """- poll: seconds between looks for outside commits (our own publishes wake the watcher)
    - clock: the time source of schedules (tests pass a fake one)
    - invoked: when `up` was asked (on `clock`), before Ray and the controller started: a new
      schedule's ticks from then on fire; None (a controller bringing its triggers back): now"""

    poll: float = 0.1
    clock: Callable[[], float] = time.time
    invoked: float | None = None
