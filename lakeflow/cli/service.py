"""The `lakeflow` commands that keep something running or talk to a cluster: `up`, `down`,
and `subscribe`: their arguments and what they do."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time
from typing import Any

from rich.console import Console

from lakeflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    attached_service,
    on_ray,
    pipeline_args,
    pipeline_from_args,
)
from lakeflow.control.client import controller_client
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.plan.scheduler import NOT_BUILT
from lakeflow.serve import service
from lakeflow.serve.web import (
    Bearer,
    HttpLimits,
    TriggerServer,
    bind,
    build_app,
    check_token,
    parse_address,
)
from lakeflow.serve.web_runs import run_routes
from lakeflow.triggers.engine import TriggerOptions

__all__ = ["add_commands"]


def add_commands(commands: Any) -> None:
    """Add these commands' parsers to the `lakeflow` parser's subcommands."""
    serve = commands.add_parser(
        "up", help="run the pipeline's triggers (commits, schedules, files, HTTP) until stopped"
    )
    pipeline_args(serve)
    serve.add_argument("--executor", choices=["ray", "local"], default="ray")
    serve.add_argument(
        "--address", help="Ray cluster address (default: a local Ray for this command)"
    )
    serve.add_argument("--http", metavar="HOST:PORT", help="serve POST /runs here (token required)")
    serve.add_argument(
        "--token", help="the HTTP token (default: $LAKEFLOW_HTTP_TOKEN, else a new one)"
    )
    serve.add_argument(
        "--poll", type=float, default=0.1, help="seconds between looks for outside commits"
    )
    serve.add_argument(
        "--detach", action="store_true",
        help="return at once: the triggers keep running (in the cluster's controller with --address, "
        "else in a background process) until `lakeflow down`",
    )  # fmt: skip
    serve.add_argument(  # a detached `up` passes on when it was asked
        "--invoked", type=float, default=None, help=argparse.SUPPRESS
    )
    serve.set_defaults(handler=up)

    halt = commands.add_parser("down", help="stop the triggers `lakeflow up` started")
    pipeline_args(halt)
    halt.set_defaults(handler=down)

    follow = commands.add_parser(
        "subscribe", help="print (or POST) every publish of an asset or source"
    )
    pipeline_args(follow)
    follow.add_argument("asset")
    follow.add_argument("--webhook", help="POST each publish as JSON to this URL")
    follow.add_argument(
        "--from-version", type=int, help="first version to deliver (default: new ones)"
    )
    follow.set_defaults(handler=subscribe)


def up(args: argparse.Namespace, console: Console) -> int:
    """`lakeflow up`: start the triggers, then watch them until Ctrl-C or `lakeflow down`."""
    import subprocess

    invoked = args.invoked if args.invoked is not None else time.time()  # schedules tick from here
    pipeline = pipeline_from_args(args)
    given: str | None = (
        args.token if args.token is not None else os.environ.get("LAKEFLOW_HTTP_TOKEN")
    )
    generated = not given and args.token is None  # an explicit --token "" is an error, not random
    token: str = secrets.token_urlsafe(24) if generated or given is None else given
    sock = _http_socket(args, token) if args.http else None  # before Ray: a clear error, exit 2
    attached = attached_service(args)  # `lakeflow dev` runs the lake's controller: ask it
    if args.detach and not args.address and attached is None:  # a local Ray lives as long as
        # its process: start one
        if sock is not None:
            sock.close()  # checked here; the background process serves it
        argv = [sys.executable, "-m", "lakeflow.cli", *[a for a in args.argv if a != "--detach"]]
        argv.append(f"--invoked={invoked!r}")
        path = os.path.join(os.getcwd(), f"lakeflow-up-{pipeline.name}.log")
        with open(path, "ab") as log:
            child = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        console.print(
            f"lakeflow up: running in the background (pid {child.pid}, log {path}); "
            "stop it with `lakeflow down`",
            highlight=False,
        )
        return EXIT_OK
    lake = Lake(pipeline.lake, pipeline.storage_options)

    def serve() -> int:
        server = None
        try:
            client = controller_client(lake, args.executor, None, args.address)
            status = client.call("up", pipeline, TriggerOptions(poll=args.poll, invoked=invoked))
            where = f" (in lakeflow dev, pid {attached.pid})" if attached is not None else ""
            console.print(
                f"lakeflow up: {pipeline.name} on {lake.url}{where}: watching {len(status['cursors'])} "
                f"tables, {len(status['schedules'])} schedules, {len(status['sensors'])} file sensors",
                highlight=False,
            )
            if sock is not None:
                server = _http_server(pipeline, client, lake, token, sock)
                shown = token if generated else "(given)"
                console.print(f"lakeflow up: POST {server.address}/runs with Authorization: Bearer {shown}",
                              highlight=False)  # fmt: skip
            if args.detach:
                return EXIT_OK
            return _watch(client, console)
        finally:  # Ctrl-C, `lakeflow down` or an error: the port is free again when up returns
            if server is not None:
                server.close()
            elif sock is not None:
                sock.close()

    return on_ray(args, serve)


def _http_socket(args: argparse.Namespace, token: str) -> socket.socket:
    """The checked token and the bound --http socket, or a `RequestError` (exit 2) before Ray."""
    if args.detach and args.address:
        raise RequestError(
            "--http is served by the `lakeflow up` process itself: not with --detach --address",
            hint="drop --detach, or run `lakeflow up --http` on a machine that stays up",
        )
    check_token(token)
    host, port = parse_address(args.http)
    return bind(host, port)


def _http_server(pipeline: Any, client: Any, lake: Any, token: str, sock: socket.socket) -> Any:
    """The HTTP endpoint's app (its /runs routes) served on `sock` from a thread of this process."""
    limits = HttpLimits()
    routes = run_routes(
        pipeline=pipeline, client=client, lake=lake, bearer=Bearer(token), limits=limits
    )
    return TriggerServer(app=build_app(routes), sock=sock, limits=limits)


def _ended(info: dict[str, Any]) -> str:
    """`succeeded in 3.2s: 10 published, 1 failed`: how a run ended, from its progress."""
    if not info.get("known", True):
        return "ended (its controller no longer holds it: `lakeflow runs` has it)"
    counts = {"published": info.get("published", 0), **{k: info.get(k) for k in NOT_BUILT},
              "cancelled": info.get("cancelled")}  # fmt: skip
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing to do"
    took = f" in {time.time() - info['started']:.1f}s" if info.get("started") else ""
    return f"{info.get('status', 'finished')}{took}: {shown}"


def _watch(client: Any, console: Console, *, every: float = 1.0) -> int:
    """Print a line when a triggered run starts and when it ends (id, origin, outcome counts),
    until `lakeflow down` (the triggers stop) or Ctrl-C (stop them)."""
    seen: set[str] = set()
    live: dict[str, str] = {}  # run id -> origin: started, its end not printed yet
    try:
        while True:
            time.sleep(every)
            status = client.call("trigger_status")
            for run_id, origin in list(live.items()):
                info = client.call("progress", run_id)
                if info.get("done"):
                    del live[run_id]
                    line = f"  run {run_id} <- {origin} {_ended(info)}"
                    console.print(line, highlight=False, soft_wrap=True)
            if status is None:
                console.print("lakeflow up: stopped by `lakeflow down`", highlight=False)
                return EXIT_OK
            for run_id, origin in status.get("recent", []):
                if run_id not in seen:
                    seen.add(run_id)
                    live[run_id] = origin
                    line = f"  run {run_id} <- {origin} started"
                    console.print(line, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        client.call("down")
        console.print("lakeflow up: stopped; runs in flight were left to finish", highlight=False)
        return EXIT_OK


def down(args: argparse.Namespace, console: Console) -> int:
    if service.down(pipeline_from_args(args)):
        console.print("lakeflow down: the triggers stopped", highlight=False)
        return EXIT_OK
    console.print("lakeflow down: no triggers were up on this lake", highlight=False)
    return EXIT_FAILED


def subscribe(args: argparse.Namespace, console: Console) -> int:
    import time
    import urllib.request

    def deliver(publish: Any) -> None:
        line = json.dumps(_as_dict(publish))
        if args.webhook:
            request = urllib.request.Request(
                args.webhook, data=line.encode(), headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=10).close()
        print(line, flush=True)

    subscription = service.subscribe(
        args.asset, deliver, pipeline=pipeline_from_args(args), from_version=args.from_version
    )
    try:
        while True:
            time.sleep(1.0)
            for error in subscription.errors[-1:]:
                print(f"lakeflow subscribe: {error}", file=sys.stderr)
            subscription.errors.clear()
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        subscription.stop()


def _as_dict(publish: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(publish)
