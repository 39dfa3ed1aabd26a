"""The Ray actor that hosts a lake's `Controller`: named, detached, restarted forever, pinned by
the options' custom resources where the cluster offers them (see `client`). Built lazily, so that
importing lakeflow needs no Ray.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from typing import Any

from lakeflow.control.controller import Controller, ControllerOptions
from lakeflow.define.graph import Pipeline
from lakeflow.errors import Superseded
from lakeflow.execute.executors import RayExecutor
from lakeflow.lake import Lake
from lakeflow.plan.planner import Request

__all__ = ["actor_class"]


def _was_restarted(ray: Any) -> bool:
    """This actor was restarted by Ray. Ray 2.60's own property reads its deprecated
    `actor_id` and warns (RayDeprecationWarning, printed into the driver's output, a notebook
    cell's too): that one warning, from that one call, is not shown."""
    from ray.util.annotations import RayDeprecationWarning  # Ray: only inside the actor

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RayDeprecationWarning, module="ray")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def actor_class() -> Any:
    """The Ray actor class hosting a `Controller` (built lazily so importing lakeflow needs no Ray)."""
    global _ACTOR
    if _ACTOR is not None:
        return _ACTOR
    import ray  # deferred: importing lakeflow needs no Ray

    @ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
    class ControllerActor:
        """One per lake: named, detached, restarted forever. After a restart it resumes the runs
        its predecessor left unfinished; each method first waits for that, so no caller ever
        sees a half-recovered controller."""

        def __init__(
            self, lake_url: str, storage_options: dict[str, str], options: ControllerOptions
        ) -> None:
            lake = Lake(lake_url, storage_options)
            self.controller = Controller(lake, RayExecutor(options.max_in_flight), options)
            restarted = _was_restarted(ray)
            start = self.controller.start(resume=True if restarted else None, restarted=restarted)
            self._ready = asyncio.get_running_loop().create_task(start)

        async def _take_over(self, method: str, *args: Any, **kwargs: Any) -> Any:
            """Call a method that runs something; a controller that another has superseded is
            replaced by a fresh one first, which claims the lake back (the last one asked
            runs the lake)."""
            await self._ready
            for _ in range(2):
                if self.controller.is_superseded:
                    old = self.controller
                    self.controller = Controller(old.lake, old.executor, old.options)
                try:
                    return await getattr(self.controller, method)(*args, **kwargs)
                except Superseded:
                    continue
            raise Superseded("another controller keeps claiming this lake")

        async def submit(
            self, pipeline: Pipeline, request: Request, origin: str, trigger: Any = None
        ) -> dict[str, Any]:
            return await self._take_over("submit", pipeline, request, origin, trigger=trigger)

        async def resume(self, run_id: str, accept_changed_code: bool = False) -> dict[str, Any]:
            return await self._take_over("resume", run_id, accept_changed_code)

        async def progress(self, run_id: str) -> dict[str, Any]:
            await self._ready
            return self.controller.progress(run_id)

        async def wait(self, run_id: str, timeout: float | None) -> bool:
            await self._ready
            return await self.controller.wait(run_id, timeout)

        async def result(self, run_id: str) -> dict[str, Any] | None:
            await self._ready
            return self.controller.result(run_id)

        async def cancel(self, run_id: str) -> bool:
            await self._ready
            return self.controller.cancel(run_id)

        async def up(self, pipeline: Pipeline, options: Any = None) -> dict[str, Any]:
            return await self._take_over("up", pipeline, options)

        async def down(self) -> bool:
            await self._ready
            return await self.controller.down()

        async def trigger_status(self) -> dict[str, Any] | None:
            await self._ready
            return self.controller.trigger_status()

        async def ping(self) -> dict[str, Any]:
            await self._ready
            return {
                "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "cpu_seconds": time.process_time(),
                "runs": list(self.controller.runs),
                "lake": self.controller.lake.url,
            }

    _ACTOR = ControllerActor
    return _ACTOR


_ACTOR: Any = None
