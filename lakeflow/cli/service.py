"""The `lakeflow` commands that keep something running or talk to a cluster: `up`, `down`,
`subscribe`, `submit` and `jobs`, their arguments and what they do (the rest is in `cli.main`)."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
from typing import Any

import polars as pl
from rich.console import Console

from lakeflow.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    on_ray,
    pipeline_args,
    pipeline_from_args,
    table,
)
from lakeflow.control.client import controller_client
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.serve import service
from lakeflow.serve.jobs import follow_job, job_client, parse_env, submit_job
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

__all__ = ["add_commands", "down", "jobs", "submit", "subscribe", "up"]


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

    halt = commands.add_parser("down", help="stop the triggers `lakeflow up` started")
    pipeline_args(halt)

    follow = commands.add_parser(
        "subscribe", help="print (or POST) every publish of an asset or source"
    )
    pipeline_args(follow)
    follow.add_argument("asset")
    follow.add_argument("--webhook", help="POST each publish as JSON to this URL")
    follow.add_argument(
        "--from-version", type=int, help="first version to deliver (default: new ones)"
    )

    job = commands.add_parser(
        "submit",
        help="run a lakeflow command on a Ray cluster as a Ray Job",
        description="lakeflow submit [options] -- materialize|backfill|up PIPELINE ...",
    )
    job.add_argument(
        "--address", help="Ray Jobs URL (default: $LAKEFLOW_JOBS_ADDRESS or http://127.0.0.1:8265)"
    )
    job.add_argument("--working-dir", default=".", help="the project to upload (default: here)")
    job.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="for the job (LAKEFLOW_*, AWS_* pass by themselves)",
    )
    job.add_argument("--no-wait", action="store_true", help="print the job id and return")
    job.add_argument("--id", dest="submission_id", help="the job id to use")
    job.add_argument("job", nargs=argparse.REMAINDER, help="-- then the lakeflow command")

    jobs = commands.add_parser("jobs", help="list the cluster's jobs, print one's logs, stop one")
    jobs.add_argument("action", choices=["list", "logs", "stop", "status"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument(
        "--address", help="Ray Jobs URL (default: $LAKEFLOW_JOBS_ADDRESS or http://127.0.0.1:8265)"
    )
    jobs.add_argument(
        "--follow", "-f", action="store_true", help="logs: keep printing until it ends"
    )
    jobs.add_argument("--json", action="store_true", help="list: print as JSON")


def up(args: argparse.Namespace, console: Console) -> int:
    """`lakeflow up`: start the triggers, then watch them until Ctrl-C or `lakeflow down`."""
    import subprocess

    pipeline = pipeline_from_args(args)
    given: str | None = (
        args.token if args.token is not None else os.environ.get("LAKEFLOW_HTTP_TOKEN")
    )
    generated = not given and args.token is None  # an explicit --token "" is an error, not random
    token: str = secrets.token_urlsafe(24) if generated or given is None else given
    sock = _http_socket(args, token) if args.http else None  # before Ray: a clear error, exit 2
    if args.detach and not args.address:  # a local Ray lives as long as its process: start one
        if sock is not None:
            sock.close()  # checked here; the background process serves it
        argv = [sys.executable, "-m", "lakeflow.cli", *[a for a in args.argv if a != "--detach"]]
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
            status = client.call("up", pipeline, TriggerOptions(poll=args.poll))
            console.print(
                f"lakeflow up: {pipeline.name} on {lake.url}: watching {len(status['cursors'])} "
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


def _watch(client: Any, console: Console) -> int:
    """Print the triggered runs until `lakeflow down` (the triggers stop) or Ctrl-C (stop them)."""
    import time

    seen: set[str] = set()
    try:
        while True:
            time.sleep(1.0)
            status = client.call("trigger_status")
            if status is None:
                console.print("lakeflow up: stopped by `lakeflow down`", highlight=False)
                return EXIT_OK
            for run_id, origin in status.get("recent", []):
                if run_id not in seen:
                    seen.add(run_id)
                    console.print(f"  run {run_id} <- {origin}", highlight=False)
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


def subscribe(args: argparse.Namespace) -> int:
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


def submit(args: argparse.Namespace, console: Console) -> int:
    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    job_id = submit_job(
        command, address=args.address, working_dir=args.working_dir, env=parse_env(args.env),
        submission_id=args.submission_id,
    )  # fmt: skip
    print(job_id, flush=True)
    if args.no_wait:
        return EXIT_OK
    try:
        status, code = follow_job(job_client(args.address), job_id)
    except KeyboardInterrupt:
        print(f"lakeflow submit: stopped following; job {job_id} goes on "
              f"(lakeflow jobs logs {job_id} -f, lakeflow jobs stop {job_id})", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(f"lakeflow submit: job {job_id} {status.lower()}", file=sys.stderr)
    return code


def jobs(args: argparse.Namespace, console: Console) -> int:
    if args.action != "list" and not args.job_id:  # before reaching the cluster
        raise RequestError(f"lakeflow jobs {args.action} needs a job id")
    client = job_client(args.address)
    if args.action == "list":
        rows = [
            {
                "job_id": j.submission_id, "status": str(j.status).rsplit(".", 1)[-1],
                "start": j.start_time, "end": j.end_time, "entrypoint": j.entrypoint,
            }
            for j in sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
            if j.submission_id
        ]  # fmt: skip
        if args.json:
            print(json.dumps(rows))
        else:
            frame = pl.DataFrame(
                rows,
                schema={
                    "job_id": pl.String,
                    "status": pl.String,
                    "start": pl.Int64,
                    "end": pl.Int64,
                    "entrypoint": pl.String,
                },
            )
            frame = frame.with_columns(pl.from_epoch("start", "ms"), pl.from_epoch("end", "ms"))
            print(table(frame))
        return EXIT_OK
    try:
        if args.action == "status":
            print(str(client.get_job_status(args.job_id)).rsplit(".", 1)[-1])
        elif args.action == "stop":
            stopped = client.stop_job(args.job_id)
            print(f"job {args.job_id}: {'stopping' if stopped else 'was not running'}")
        elif args.follow:
            return follow_job(client, args.job_id)[1]
        else:
            print(client.get_job_logs(args.job_id), end="")
    except RuntimeError as error:  # the SDK's answer to an unknown id
        raise RequestError(f"no job {args.job_id}: {str(error).splitlines()[0]}") from error
    return EXIT_OK
