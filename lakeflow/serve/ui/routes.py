"""The web UI's routes, mountable in any starlette app (`lakeflow ui`, `lakeflow dev`):

    GET  /ui/                         the asset graph          GET /ui/assets/NAME     its heatmap
    GET  /ui/assets/NAME/partitions/KEY                         versions, run, checks, error, logs
    GET  /ui/lineage/NAME/KEY         what it read, recursively (?downstream=1: what it fed)
    GET  /ui/runs, /ui/runs/ID        runs; /ui/runs/ID/stream  its progress (server-sent events)
    GET  /ui/triggers                 cursors, pending partitions, schedules
    GET  /ui/api/assets/NAME/buckets  the heatmap's data as JSON (?lo=&hi=&state=)
    POST /ui/api/materialize, /ui/api/runs/ID/cancel|resume    Bearer token; none: read-only

Reads go through `LakeView` (cached per table version) on a thread; writes go to the lake's
controller through `client` (anything with `.call(method, *args)`, e.g. a lazy one that
starts Ray on first use). No page or error shows the lake's absolute location.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from lakeflow.control.runs import UnknownRun, cancel_marker, run_status
from lakeflow.errors import LakeError, LakeflowError
from lakeflow.lake import Lake
from lakeflow.plan.lineage import trace
from lakeflow.serve.ui import pages
from lakeflow.serve.ui.bodies import lineage_body, partition_body, run_body, runs_body
from lakeflow.serve.ui.model import STATES, LakeView, asset_health
from lakeflow.serve.ui.pages import PREFIX, badge, e, table
from lakeflow.serve.ui.triggers import triggers_body
from lakeflow.serve.web import Bearer, HttpLimits, error_response
from lakeflow.serve.web_runs import parse_run_request, read_body

__all__ = ["ui_routes"]

_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}


def ui_routes(
    *, pipeline: Any, lake: Lake, client: Any = None, bearer: Bearer | None = None
) -> list[BaseRoute]:
    """The UI's routes. Without `bearer` (or without `client`) the UI is read-only: the write
    routes answer 403."""
    view = LakeView(pipeline=pipeline, lake=lake)
    view.warm()
    writable = bearer is not None and client is not None
    limits = HttpLimits()

    def public(text: str) -> str:  # what reaches a browser never names where the lake is
        return text.replace(lake.url, "<lake>")

    def html(title: str, body: str, status: int = 200) -> HTMLResponse:
        shown = body.replace(e(lake.url), "&lt;lake&gt;")
        return HTMLResponse(pages.page(title, shown, writable=writable), status)

    def guard(handler: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
        async def wrapped(request: HttpRequest) -> Response:
            try:
                return await handler(request)
            except HTTPException:
                raise
            except LakeflowError as error:  # the lake unreachable: 503; a bad request: 400
                status = 503 if isinstance(error, LakeError) else 400
                return html("error", f'<p class="error">{e(str(error))}</p>', status)

        return wrapped

    def asset_or_404(name: str) -> None:
        if name not in pipeline.assets:
            raise HTTPException(404, f"no asset {name}")

    def upstream() -> dict[str, list[str]]:
        return {n: [edge.up for edge in pipeline.upstream(n)] for n in pipeline.assets}

    # -- pages ---------------------------------------------------------------------------------
    async def home(request: HttpRequest) -> Response:
        return RedirectResponse(f"{PREFIX}/")

    async def graph(request: HttpRequest) -> Response:
        counts = await run_in_threadpool(view.counts)
        names = list(pipeline.assets)
        rows = [
            (f'<a href="{PREFIX}/assets/{e(n)}">{e(n)}</a>', badge(asset_health(counts[n])),
             *(f"{counts[n].get(s, 0):,}" for s in STATES))
            for n in names
        ]  # fmt: skip
        body = pages.graph_svg(names, upstream(), counts) + table(
            ["asset", "health", *STATES], rows, raw=True, cls="counts"
        )
        return html(f"{pipeline.name}: assets", body)

    def heat(name: str, request: HttpRequest) -> tuple[Any, ...]:
        state = request.query_params.get("state") or None
        if state is not None and state not in STATES:
            raise HTTPException(400, f"unknown state {state}; one of {', '.join(STATES)}")
        lo, hi = _int(request, "lo", 0), _int(request, "hi", -1)
        codes, unit, cells = view.buckets(name, lo=lo, hi=None if hi < 0 else hi, state=state)
        hi = len(codes) if hi < 0 else min(hi, len(codes))
        return codes, state, max(0, min(lo, hi)), hi, unit, cells

    async def asset(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        asset_or_404(name)
        codes, state, lo, hi, unit, cells = await run_in_threadpool(heat, name, request)
        counts = dict(zip(STATES, np.bincount(codes, minlength=len(STATES)).tolist(), strict=True))
        parts = pipeline[name].partitions
        body = pages.asset_page(
            asset=name, description=parts.describe(), counts=counts, unit=unit, cells=cells,
            state=state, lo=lo, hi=hi, total=len(codes),
            first_key=cells[0].first if cells else "", last_key=cells[-1].last if cells else "",
        )  # fmt: skip
        return html(name, body)

    async def bucket_data(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        asset_or_404(name)
        _, state, lo, hi, unit, cells = await run_in_threadpool(heat, name, request)
        return JSONResponse({
            "asset": name, "unit": unit, "lo": lo, "hi": hi, "state": state,
            "buckets": [c.to_json() for c in cells],
        })  # fmt: skip

    async def partition(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        asset_or_404(name)
        key = request.path_params["key"]
        key = "" if key == "-" else key
        parts = pipeline[name].partitions
        if parts.is_partitioned and parts.indices([key])[0] < 0:
            raise HTTPException(404, f"asset {name} has no partition {key}")
        body = await run_in_threadpool(partition_body, view, name, key)
        return html(f"{name} {key}".strip(), body)

    async def lineage(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        asset_or_404(name)
        key = request.path_params["key"]
        key = "" if key == "-" else key
        given = request.query_params.get("version")
        version = _int(request, "version", -1) if given else None
        down = request.query_params.get("downstream") in ("1", "true")
        found = await run_in_threadpool(
            trace, lake, pipeline, name, key or None, version=version, downstream=down,
            depth=_int(request, "depth", 8),
        )  # fmt: skip
        title = f"lineage of {name} {key}".strip()
        return html(title, lineage_body(found, asset=name, key=key))

    async def runs(request: HttpRequest) -> Response:
        body = await run_in_threadpool(runs_body, view)
        return html("runs and backfills", body)

    async def run(request: HttpRequest) -> Response:
        run_id = request.path_params["run_id"]
        info = await run_in_threadpool(_status_or_404, lake, run_id)
        body = await run_in_threadpool(run_body, view, info, writable)
        return html(f"run {run_id}", body)

    async def stream(request: HttpRequest) -> Response:
        run_id = request.path_params["run_id"]
        await run_in_threadpool(_status_or_404, lake, run_id)

        async def events() -> Any:
            deadline = time.monotonic() + 3600
            while time.monotonic() < deadline:
                info = await run_in_threadpool(run_status, lake, run_id)
                yield f"data: {json.dumps(info, default=str)}\n\n"
                if info["status"] != "running" or await request.is_disconnected():
                    return
                await asyncio.sleep(1.0)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def triggers(request: HttpRequest) -> Response:
        body = await run_in_threadpool(triggers_body, pipeline, lake)
        return html("triggers", body)

    async def materialize_form(request: HttpRequest) -> Response:
        return html("materialize", pages.materialize_page(list(pipeline.assets), writable=writable))

    async def static(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            raise HTTPException(404, f"no such file {name}")
        data = files("lakeflow.serve.ui").joinpath("static", name).read_bytes()
        return Response(data, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    # -- writes --------------------------------------------------------------------------------
    def authorized(request: HttpRequest) -> None:
        if not writable:
            raise HTTPException(403, "this UI is read-only: start it with --token to allow writes")
        assert bearer is not None
        bearer.require(request)

    async def materialize(request: HttpRequest) -> Response:
        authorized(request)
        body = await read_body(request, limits)
        try:
            wanted = parse_run_request(body)
            pipeline.select(list(wanted.select))
        except LakeflowError as error:
            return error_response(400, public(str(error)))
        trigger = {"kind": "http", "client": request.client.host if request.client else None}
        try:
            summary = await run_in_threadpool(
                client.call, "submit", pipeline, wanted, "http", trigger
            )
        except LakeflowError as error:
            return error_response(400, public(str(error)))
        return JSONResponse({"run_id": summary["run_id"], "units": summary.get("total")}, 202)

    async def cancel(request: HttpRequest) -> Response:
        authorized(request)
        run_id = request.path_params["run_id"]
        info = await run_in_threadpool(_status_or_404, lake, run_id)
        if info["status"] != "running":
            return error_response(409, f"run {run_id} is not running ({info['status']})")
        await run_in_threadpool(lake.write_bytes, cancel_marker(lake, run_id), b"cancel\n")
        message = "cancel requested: units not started are cancelled, those running finish"
        return JSONResponse({"run_id": run_id, "message": message}, 202)

    async def resume(request: HttpRequest) -> Response:
        authorized(request)
        run_id = request.path_params["run_id"]
        info = await run_in_threadpool(_status_or_404, lake, run_id)
        if info["status"] == "running":
            return error_response(409, f"run {run_id} is running")
        try:
            await run_in_threadpool(client.call, "resume", run_id, False)
        except LakeflowError as error:
            return error_response(400, public(str(error)))
        return JSONResponse({"run_id": run_id, "message": f"run {run_id} resumed"}, 202)

    return [
        Route("/", home, methods=["GET"]),
        Route(f"{PREFIX}/", guard(graph), methods=["GET"]),
        Route(f"{PREFIX}/assets/{{name}}", guard(asset), methods=["GET"]),
        Route(
            f"{PREFIX}/assets/{{name}}/partitions/{{key:path}}", guard(partition), methods=["GET"]
        ),
        Route(f"{PREFIX}/lineage/{{name}}/{{key:path}}", guard(lineage), methods=["GET"]),
        Route(f"{PREFIX}/runs", guard(runs), methods=["GET"]),
        Route(f"{PREFIX}/runs/{{run_id}}", guard(run), methods=["GET"]),
        Route(f"{PREFIX}/runs/{{run_id}}/stream", guard(stream), methods=["GET"]),
        Route(f"{PREFIX}/triggers", guard(triggers), methods=["GET"]),
        Route(f"{PREFIX}/materialize", guard(materialize_form), methods=["GET"]),
        Route(f"{PREFIX}/static/{{name}}", static, methods=["GET"]),
        Route(f"{PREFIX}/api/assets/{{name}}/buckets", guard(bucket_data), methods=["GET"]),
        Route(f"{PREFIX}/api/materialize", materialize, methods=["POST"]),
        Route(f"{PREFIX}/api/runs/{{run_id}}/cancel", cancel, methods=["POST"]),
        Route(f"{PREFIX}/api/runs/{{run_id}}/resume", resume, methods=["POST"]),
    ]


def _int(request: HttpRequest, name: str, default: int) -> int:
    given = request.query_params.get(name)
    if given is None or given == "":
        return default
    if not given.lstrip("-").isdigit():
        raise HTTPException(400, f"{name} must be a whole number")
    return int(given)


def _status_or_404(lake: Lake, run_id: str) -> dict[str, Any]:
    try:
        return run_status(lake, run_id)
    except UnknownRun:
        raise HTTPException(404, f"no run {run_id}") from None
