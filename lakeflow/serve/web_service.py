"""The /service routes of a `lakeflow dev` service: what an attached command or notebook sends to
the lake's controller instead of starting a Ray of its own (`control/services.ServiceClient`).
Every route needs the Bearer token (the service's marker holds it); bodies are JSON read under
the endpoint's byte cap; answers are {"value": ...}, errors {"error", "hint", "type"} with the
`LakeflowError` class name, so the caller raises the same error and exits with the same code.

    POST /service/submit  {"pipeline": PipelineRef, "request": Request, "origin", "trigger"}
    POST /service/up      {"pipeline": PipelineRef, "poll": 0.1}
    POST /service/call    {"method": "wait" | "progress" | "result" | "cancel" | "resume" |
                           "trigger_status" | "down", "args": [...]}
    GET  /service         the service: pid, lake, pipeline, Ray address

A pipeline arrives as where it is defined; the service imports it (a module it already imported
is not imported again) and refuses, changing nothing, when its definition differs from the one
the caller has: the service would run older code than the caller sees.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from lakeflow.control.services import (
    ServiceInfo,
    encode_result,
    error_kind,
    request_from_json,
)
from lakeflow.define.definition import PipelineRef, ResumeError, import_pipeline
from lakeflow.define.graph import Pipeline
from lakeflow.errors import DefinitionError, LakeError, LakeflowError, RequestError
from lakeflow.lake import Lake
from lakeflow.serve.web import Bearer, HttpLimits
from lakeflow.serve.web_runs import read_body
from lakeflow.triggers.host import TriggerOptions

__all__ = ["service_routes"]

MAX_WAIT = 30.0  # seconds one `wait` call may block a connection


def service_routes(
    *,
    info: Callable[[], ServiceInfo],
    client: Any,
    lake: Lake,
    bearer: Bearer,
    limits: HttpLimits,
    announce: Callable[[str], None] = lambda line: None,
) -> list[BaseRoute]:
    """The routes, bound to the service's controller client and lake; `announce` is told of
    each run they start. Call it where the service's Ray started: the directories its workers
    import modules from are taken here."""
    importable = {os.path.abspath(p or os.getcwd()) for p in sys.path} | {
        os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    }

    def pipeline_of(data: Any) -> Pipeline:
        if not isinstance(data, dict):
            raise RequestError("pipeline must be a pipeline reference")
        ref = PipelineRef.from_json(data)
        service = info()
        if ref.root is not None and os.path.abspath(ref.root) not in importable:
            raise DefinitionError(
                f"the lakeflow dev service (pid {service.pid}) cannot run {ref.describe()}: its "
                f"workers cannot import it from {ref.root}",
                hint="start the service with this pipeline (or with its directory on "
                "PYTHONPATH), or set LAKEFLOW_NO_SERVICE=1 to run without it",
            )
        try:
            found = import_pipeline(ref, what=f"pipeline {ref.describe()}")
        except ResumeError as error:
            raise DefinitionError(
                f"the lakeflow dev service (pid {service.pid}) cannot run {ref.describe()} as "
                f"you have it: {error.message}",
                hint="restart the service (`lakeflow dev --stop`, then `lakeflow dev`) to load "
                "changed code, or set LAKEFLOW_NO_SERVICE=1 to run without it",
            ) from None
        return found if found.lake == lake.url else found.with_lake(lake.url)

    def submit(body: dict[str, Any]) -> Any:
        pipeline = pipeline_of(body.get("pipeline"))
        request = request_from_json(body.get("request") or {})
        origin = str(body.get("origin") or "api")
        summary = client.call("submit", pipeline, request, origin, body.get("trigger"))
        announce(f"  run {summary.get('run_id')} <- {origin} ({request.kind} of "
                 f"{', '.join(request.select)}: {summary.get('total', 0)} units)")  # fmt: skip
        return summary

    def up(body: dict[str, Any]) -> Any:
        poll = body.get("poll", 0.1)
        if not isinstance(poll, int | float) or poll <= 0:
            raise RequestError("poll must be a positive number of seconds")
        options = TriggerOptions(poll=poll, invoked=time.time())
        return client.call("up", pipeline_of(body.get("pipeline")), options)

    def call(body: dict[str, Any]) -> Any:
        method, args = body.get("method"), body.get("args") or []
        if not isinstance(args, list):
            raise RequestError("args must be a list")
        if method == "wait":
            run_id, timeout = (*args, None)[:2]
            limit = MAX_WAIT if timeout is None else min(float(timeout), MAX_WAIT)
            return client.call("wait", str(run_id), limit)
        if method in ("progress", "cancel") and len(args) == 1:
            return client.call(method, str(args[0]))
        if method == "result" and len(args) == 1:
            data = client.call("result", str(args[0]))
            return encode_result(data) if data is not None else None
        if method == "resume" and len(args) in (1, 2):
            return client.call("resume", str(args[0]), bool(args[1] if len(args) > 1 else False))
        if method in ("trigger_status", "down") and not args:
            return client.call(method)
        raise RequestError(f"the service does not answer {method!r} with {len(args)} arguments")

    def route(work: Callable[[dict[str, Any]], Any]) -> Callable[[HttpRequest], Any]:
        async def handle(request: HttpRequest) -> Response:
            bearer.require(request)
            raw = await read_body(request, limits)
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as error:
                return _error(400, RequestError(f"the body is not a JSON object: {error}"))
            try:
                value = await run_in_threadpool(work, body)
            except LakeError as error:
                return _error(503, error)
            except LakeflowError as error:
                return _error(400, error)
            except Exception as error:  # Ray's own failures, and our bugs: said, not hidden
                return _error(500, error)
            return _json({"value": value})

        return handle

    async def about(request: HttpRequest) -> Response:
        bearer.require(request)
        service = info()
        return _json({"value": {"pid": service.pid, "lake": service.lake,
                                "pipeline": service.pipeline, "ray_address": service.ray_address,
                                "started": service.started}})  # fmt: skip

    return [
        Route("/service", about, methods=["GET"]),
        Route("/service/submit", route(submit), methods=["POST"]),
        Route("/service/up", route(up), methods=["POST"]),
        Route("/service/call", route(call), methods=["POST"]),
    ]


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, default=str), status, media_type="application/json")


def _error(status: int, error: BaseException) -> Response:
    if isinstance(error, LakeflowError):
        body = {"error": error.message, "hint": error.hint, "type": type(error).__name__,
                "kind": error_kind(error)}  # fmt: skip
    elif type(error).__module__.startswith("ray.") or isinstance(error, OSError):
        body = {"error": f"{type(error).__name__}: {error}", "type": "InfrastructureError"}
    else:
        body = {"error": f"{type(error).__name__}: {error}", "type": "internal"}
    return _json(body, status)
