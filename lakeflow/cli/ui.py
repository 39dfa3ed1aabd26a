"""`lakeflow ui`: serve the web UI over a lake until Ctrl-C. Read-only without a token, and then
it never starts Ray; with `--token`, its materialize form and cancel/resume buttons reach the
lake's controller (started on the first write, as `lakeflow up --http` reaches it)."""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

from rich.console import Console

from lakeflow.cli.common import EXIT_OK, pipeline_args, pipeline_from_args
from lakeflow.control.client import connect, controller_client
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.serve.ui import ui_routes
from lakeflow.serve.web import Bearer, HttpLimits, TriggerServer, bind, build_app, check_token

__all__ = ["LazyClient", "add_commands"]


def add_commands(commands: Any) -> None:
    """Add `lakeflow ui` to the `lakeflow` parser's subcommands."""
    ui = commands.add_parser(
        "ui", help="serve the web UI over the lake (read-only without --token)"
    )
    pipeline_args(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument(
        "--port", type=int, default=3000, help="port (default 3000; 0 picks a free one)"
    )
    ui.add_argument(
        "--token", help="allow writes (materialize, cancel, resume) with this Bearer token "
        "(default: $LAKEFLOW_HTTP_TOKEN; neither: read-only)",
    )  # fmt: skip
    ui.add_argument("--executor", choices=["ray", "local"], default="ray",
                    help="where writes run: the lake's controller on Ray, or threads in this process")  # fmt: skip
    ui.add_argument("--address", help="Ray cluster address for writes (default: a local Ray)")
    ui.set_defaults(handler=serve_ui)


class LazyClient:
    """The lake's controller client, reached on the first call: pages that only read never
    start Ray."""

    def __init__(self, lake: Lake, executor: str, address: str | None) -> None:
        self._lake, self._executor, self._address = lake, executor, address
        self._client: Any = None
        self._lock = threading.Lock()

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._client is None:
                if self._executor == "ray":
                    connect(self._address)
                self._client = controller_client(self._lake, self._executor, None, self._address)
        return self._client.call(method, *args)


def serve_ui(args: argparse.Namespace, console: Console) -> int:
    pipeline = pipeline_from_args(args)
    token = args.token if args.token is not None else os.environ.get("LAKEFLOW_HTTP_TOKEN")
    if token is not None:
        check_token(token)
    if not 0 <= args.port <= 65535:
        raise RequestError(f"--port {args.port}: the port must be a number from 0 to 65535")
    sock = bind(args.host, args.port)  # a taken port is exit 2 before anything starts
    lake = Lake(pipeline.lake, pipeline.storage_options)
    writes = token is not None
    routes = ui_routes(
        pipeline=pipeline,
        lake=lake,
        client=LazyClient(lake, args.executor, args.address) if writes else None,
        bearer=Bearer(token) if token is not None else None,
    )
    server = TriggerServer(app=build_app(routes), sock=sock, limits=HttpLimits())
    mode = "writes need the token" if writes else "read-only"
    console.print(f"lakeflow ui: {pipeline.name} at {server.address}/ui/ ({mode})", highlight=False)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("lakeflow ui: stopped", highlight=False)
        return EXIT_OK
    finally:
        server.close()
