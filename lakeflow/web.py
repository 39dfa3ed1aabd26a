"""The HTTP trigger endpoint that `lakeflow up --http 127.0.0.1:PORT` serves.

    POST /runs        {"select": "delays+", "partitions": "2013-01-01..2013-01-31", "force": false,
                       "kind": "materialize" | "backfill"}  -> 202 {"run_id": ...}
    GET  /runs/ID     the run's status: counts, rate, ETA, failures
    GET  /health      200, no token needed

Every other call needs `Authorization: Bearer TOKEN`; a missing or wrong token is 401 and runs
nothing. Bind it to loopback or put it behind your own TLS proxy: the token travels in clear.
"""

from __future__ import annotations

import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import LakeflowError
from .lake import Lake
from .planner import Request

__all__ = ["TriggerServer"]

MAX_BODY = 64 * 1024


class TriggerServer:
    """Serves POST /runs for one pipeline on a thread; `close()` stops it."""

    def __init__(self, host: str, port: int, token: str, client: Any, pipeline: Any) -> None:
        if not token:
            raise LakeflowError(
                "the HTTP endpoint needs a token", hint="--token or $LAKEFLOW_HTTP_TOKEN"
            )
        self.token, self.client, self.pipeline = token, client, pipeline
        self.lake = Lake(pipeline.lake, pipeline.storage_options)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(
                self, format: str, *args: Any
            ) -> None:  # quiet: the event log records runs
                return

            def do_GET(self) -> None:
                if self.path == "/health":
                    return self._reply(200, {"ok": True})
                if not self._authorized():
                    return None
                if self.path.startswith("/runs/"):
                    from .runs import run_status

                    try:
                        return self._reply(200, run_status(server.lake, self.path[len("/runs/") :]))
                    except LakeflowError as error:
                        return self._reply(404, {"error": str(error)})
                return self._reply(404, {"error": f"no such path {self.path}"})

            def do_POST(self) -> None:
                if not self._authorized():
                    return None
                if self.path != "/runs":
                    return self._reply(404, {"error": f"no such path {self.path}"})
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > MAX_BODY:
                        return self._reply(413, {"error": "request body too large"})
                    body = json.loads(self.rfile.read(length) or b"{}")
                    if not isinstance(body, dict):
                        raise ValueError("the body must be a JSON object")
                    request = _request(body)
                    server.pipeline.select(list(request.select))
                except (ValueError, TypeError) as error:
                    return self._reply(400, {"error": str(error)})
                except LakeflowError as error:
                    return self._reply(400, {"error": str(error)})
                trigger = {"kind": "http", "client": self.client_address[0]}
                try:
                    summary = server.client.call(
                        "submit", server.pipeline, request, "http", trigger
                    )
                except LakeflowError as error:
                    return self._reply(400, {"error": str(error)})
                return self._reply(
                    202, {"run_id": summary["run_id"], "units": summary.get("total")}
                )

            def _authorized(self) -> bool:
                given = self.headers.get("Authorization", "")
                scheme, _, value = given.partition(" ")
                if scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), server.token):
                    return True
                self._reply(401, {"error": "missing or wrong token"})
                return False

            def _reply(self, code: int, payload: Any) -> None:
                data = json.dumps(payload, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 401:
                    self.send_header("WWW-Authenticate", "Bearer")
                self.end_headers()
                self.wfile.write(data)

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as error:
            raise LakeflowError(f"cannot serve HTTP on {host}:{port}: {error}") from error
        self.address = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="lakeflow-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _request(body: dict[str, Any]) -> Request:
    unknown = set(body) - {"select", "partitions", "force", "kind", "only", "order"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    select = body.get("select", "*")
    if not isinstance(select, str | list):
        raise ValueError("select must be a string or a list of strings")
    terms = tuple(select.split(",")) if isinstance(select, str) else tuple(select)
    partitions = body.get("partitions")
    if partitions is not None and not isinstance(partitions, str | list):
        raise ValueError("partitions must be a string or a list of keys")
    kind = body.get("kind", "materialize")
    if kind not in ("materialize", "backfill"):
        raise ValueError("kind must be materialize or backfill")
    return Request(
        select=terms,
        partitions=tuple(partitions) if isinstance(partitions, list) else partitions,
        force=bool(body.get("force", False)),
        kind=kind,
        only=body.get("only"),
        order=body.get("order", "oldest"),
    )
