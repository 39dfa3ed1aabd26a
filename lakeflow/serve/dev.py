"""The resident local service of one lake (`lakeflow dev`): a local Ray head, the lake's controller,
a pipeline's triggers and the HTTP endpoint in one process, announced by a marker in the user's
runtime directory (`control/services.py`) so that every command and notebook on the same lake
sends its work here instead of starting a Ray of its own. Imports: control, define, lake, serve.

    service = DevService.start(pipeline, reference="pipelines/flights.py", options=DevOptions())
    service.serve_until(stop_event, say=print)    # prints the runs it starts; closes at the end
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lakeflow.control.client import connect, controller_client, stop
from lakeflow.control.services import (
    ServiceInfo,
    claim_marker,
    marker_path,
    remove_marker,
    write_marker,
)
from lakeflow.define.definition import reference as pipeline_reference
from lakeflow.define.graph import Pipeline
from lakeflow.lake import Lake
from lakeflow.serve.ui.routes import ui_routes
from lakeflow.serve.web import Bearer, HttpLimits, TriggerServer, bind, build_app, check_token
from lakeflow.serve.web_runs import run_routes
from lakeflow.serve.web_service import service_routes
from lakeflow.triggers.host import TriggerOptions

__all__ = ["DevOptions", "DevService"]


@dataclass(frozen=True, slots=True)
class DevOptions:
    """Where the service listens, its token (None: a new random one), how often the triggers look
    for outside commits, and the log file a detached service writes (for the marker to name)."""

    host: str = "127.0.0.1"
    port: int = 3000
    token: str | None = None
    poll: float = 0.1
    log: str | None = None


class DevService:
    """A started service; `serve_until` runs it and closes it, `close` alone stops it."""

    def __init__(
        self, *, pipeline: Pipeline, lake: Lake, info: ServiceInfo, client: Any, server: Any
    ) -> None:
        self.pipeline = pipeline
        self.lake = lake
        self.info = info
        self.client = client
        self.server = server
        self.marker = marker_path(lake.url)

    @classmethod
    def start(
        cls, pipeline: Pipeline, *, reference: str, options: DevOptions
    ) -> DevService | ServiceInfo:
        """Start the service, or return the `ServiceInfo` of the one already serving the lake.
        A bad address or taken port is a `RequestError` before Ray starts; whatever fails later
        is undone (Ray shut down, the marker removed) before it is raised."""
        lake = Lake(pipeline.lake, pipeline.storage_options)
        token = check_token(
            options.token if options.token is not None else secrets.token_urlsafe(24)
        )
        info = ServiceInfo(pid=os.getpid(), lake=lake.url, pipeline=reference,
                           started=time.time(), token=token, log=options.log)  # fmt: skip
        held = claim_marker(info)
        if held is not None:
            return held
        sock = None
        try:
            sock = bind(options.host, options.port)
            pipeline_reference(pipeline)  # where it is defined, for a restarted controller
            connect(None, log_to_driver=True)  # a local Ray head for as long as this process
            import ray  # deferred: importing lakeflow needs no Ray; connect() started it

            client = controller_client(lake, "ray", None, None)  # the marker is ours: no attach
            client.call("up", pipeline, TriggerOptions(poll=options.poll, invoked=info.started))
            info = replace(
                info,
                ray_address=ray.get_runtime_context().gcs_address,
                ray_auth=os.environ.get("RAY_AUTH_MODE", ""),  # Ray sets it when it starts
                ray_token_path=os.environ.get("RAY_AUTH_TOKEN_PATH")
                or os.path.expanduser("~/.ray/auth_token"),
            )
            limits = HttpLimits()
            server = TriggerServer(
                app=build_app(_routes(pipeline, client, lake, info, limits)),
                sock=sock,
                limits=limits,
            )
            sock = None  # the server owns it now
            info = replace(info, http=server.address.replace("0.0.0.0", "127.0.0.1"))
            write_marker(info)
        except BaseException:
            if sock is not None:
                sock.close()
            _shutdown_ray(lake)
            remove_marker(lake.url, pid=os.getpid())
            raise
        return cls(pipeline=pipeline, lake=lake, info=info, client=client, server=server)

    def serve_until(self, stopped: threading.Event, *, say: Callable[[str], None]) -> None:
        """Run until `stopped` is set (or Ctrl-C), printing each run the triggers start; then
        close."""
        seen: set[str] = set()
        try:
            while not stopped.wait(1.0):
                try:
                    status = self.client.call("trigger_status") or {}
                except Exception as error:  # the controller restarts: say so, keep serving
                    say(f"lakeflow dev: the controller did not answer: {error}")
                    continue
                for run_id, origin in status.get("recent", []):
                    if run_id not in seen:
                        seen.add(run_id)
                        say(f"  run {run_id} <- {origin}")
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop it: the marker first (no new command attaches), then the HTTP endpoint, the
        triggers, the controller and Ray."""
        remove_marker(self.lake.url, pid=self.info.pid)
        self.server.close()
        try:
            self.client.call("down")
        except Exception:  # stopping anyway; the lake's up record is then stale
            pass
        _shutdown_ray(self.lake)


def _routes(
    pipeline: Pipeline, client: Any, lake: Lake, info: ServiceInfo, limits: HttpLimits
) -> list[Any]:
    bearer = Bearer(info.token)
    routes = [
        *service_routes(
            info=lambda: info,
            client=client,
            lake=lake,
            bearer=bearer,
            limits=limits,
            announce=_announce,
        ),
        *run_routes(pipeline=pipeline, client=client, lake=lake, bearer=bearer, limits=limits),
    ]
    # the web UI: pages read the lake; its writes (materialize, cancel, resume) take the token
    return routes + ui_routes(pipeline=pipeline, lake=lake, client=client, bearer=bearer)


def _announce(line: str) -> None:
    """A run an attached command started, in the service's output (its log when detached)."""
    print(line, flush=True)


def _shutdown_ray(lake: Lake) -> None:
    """Kill the lake's controller actor and shut down the Ray this process started."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    try:
        stop(lake)
    finally:
        ray.shutdown()
