"""The /runs routes of the HTTP endpoint: start a run of one pipeline, list the lake's recent
runs, read one. Every route needs the Bearer token; the request body is read under a byte cap
and a deadline before any of it is parsed, and nothing is submitted unless all of it is valid.

    POST /runs        {"select": "delays+", "partitions": "2013-01-01..2013-01-31", "force": false,
                       "kind": "materialize" | "backfill", "only": ..., "order": ...}
                      -> 202 {"run_id": ..., "units": ...}
    GET  /runs        {"runs": [...]}: the latest runs, newest first (?limit=N, at most 500)
    GET  /runs/ID     the run's status: counts, rate, ETA, failures
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lakeflow.control.runs import UnknownRun, recent_runs, run_status
from lakeflow.errors import LakeError, LakeflowError, RequestError
from lakeflow.lake import Lake
from lakeflow.plan.planner import Request
from lakeflow.serve.web import Bearer, HttpLimits, error_response

__all__ = ["parse_run_request", "run_routes"]

FIELDS = {"select", "partitions", "force", "kind", "only", "order"}


def run_routes(
    *, pipeline: Any, client: Any, lake: Lake, bearer: Bearer, limits: HttpLimits
) -> list[BaseRoute]:
    """The routes, bound to the pipeline they run and the controller client that runs it."""

    def public(message: str) -> str:  # error messages go to clients: never the lake's location
        return message.replace(lake.url, "<lake>")

    async def start(request: HttpRequest) -> Response:
        bearer.require(request)
        body = await read_body(request, limits)
        try:
            run = parse_run_request(body)
            pipeline.select(list(run.select))
        except LakeflowError as error:
            return error_response(400, public(str(error)))
        client_host = request.client.host if request.client else None
        trigger = {"kind": "http", "client": client_host}
        try:
            summary = await run_in_threadpool(client.call, "submit", pipeline, run, "http", trigger)
        except LakeError as error:
            return error_response(503, public(str(error)))
        except LakeflowError as error:
            return error_response(400, public(str(error)))
        return JSONResponse({"run_id": summary["run_id"], "units": summary.get("total")}, 202)

    async def listing(request: HttpRequest) -> Response:
        bearer.require(request)
        given = request.query_params.get("limit", "50")
        if not given.isdigit() or not 1 <= int(given) <= 500:
            return error_response(400, "limit must be a whole number from 1 to 500")
        try:
            runs = await run_in_threadpool(recent_runs, lake, limit=int(given))
        except LakeError as error:
            return error_response(503, public(str(error)))
        return JSONResponse({"runs": runs})

    async def one(request: HttpRequest) -> Response:
        bearer.require(request)
        run_id = request.path_params["run_id"]
        try:
            return JSONResponse(await run_in_threadpool(run_status, lake, run_id))
        except UnknownRun:
            return error_response(404, f"no run {run_id}")
        except LakeError as error:
            return error_response(503, public(str(error)))

    return [
        Route("/runs", start, methods=["POST"]),
        Route("/runs", listing, methods=["GET"]),
        Route("/runs/{run_id}", one, methods=["GET"]),
    ]


async def read_body(request: HttpRequest, limits: HttpLimits) -> bytes:
    """The body, refused (413) once more than `limits.max_body` bytes arrived or are announced,
    and (408) when it takes longer than `limits.body_timeout`."""
    cap = f"the request body is over {limits.max_body // 1024} KiB"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body:
        raise HTTPException(413, cap, {"Connection": "close"})
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limits.max_body:
                    raise HTTPException(413, cap, {"Connection": "close"})
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(
            408, "the request body came too slowly", {"Connection": "close"}
        ) from None
    return b"".join(chunks)


def parse_run_request(body: bytes) -> Request:
    """A POST /runs body -> the run `Request`; a `LakeflowError` saying what is wrong."""
    if not body.strip():
        raise RequestError('the body must be a JSON object such as {"select": "orders+"}')
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"the body is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise RequestError('the body must be a JSON object such as {"select": "orders+"}')
    unknown = set(fields) - FIELDS
    if unknown:
        raise RequestError(f"unknown fields {sorted(unknown)}", hint=f"known: {sorted(FIELDS)}")
    if "select" not in fields:
        raise RequestError('say what to run: "select" (an asset, "name+", "+name" or "*")')
    select = fields["select"]
    if isinstance(select, str):
        select = select.split(",")
    if not isinstance(select, list) or not all(isinstance(t, str) and t.strip() for t in select):
        raise RequestError("select must be a string or a list of non-empty strings")
    partitions = fields.get("partitions")
    if isinstance(partitions, list) and all(isinstance(p, str) for p in partitions):
        partitions = tuple(partitions)
    elif partitions is not None and not isinstance(partitions, str):
        raise RequestError("partitions must be a string or a list of keys")
    force = fields.get("force", False)
    if not isinstance(force, bool):
        raise RequestError("force must be true or false")
    kind = fields.get("kind", "materialize")
    if kind not in ("materialize", "backfill"):
        raise RequestError("kind must be materialize or backfill")
    for name in ("only", "order"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise RequestError(f"{name} must be a string")
    return Request(
        select=tuple(t.strip() for t in select),
        partitions=partitions,
        force=force,
        kind=kind,
        only=fields.get("only"),
        order=fields.get("order") or "oldest",
    )
