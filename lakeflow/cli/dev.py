"""`lakeflow dev PIPELINE [--port 3000] [--detach]` and `lakeflow dev --stop`: the resident local
service of a lake (`serve/dev.py`) in the foreground until Ctrl-C, or in the background with its
output in a log file it names; `--stop` ends it cleanly from any shell.

While it runs, `materialize`, `backfill`, `backfill resume`, `up` and `lf.materialize(...)` on the
same lake send their work to it (`control/services.py`) instead of starting a Ray of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console

from lakeflow.cli.common import EXIT_FAILED, EXIT_INFRA, EXIT_OK, pipeline_from_args
from lakeflow.control.services import (
    ServiceInfo,
    find_service,
    marker_path,
    pid_alive,
    read_marker,
    remove_marker,
)
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.serve.dev import DevOptions, DevService
from lakeflow.serve.web import parse_address

__all__ = ["add_commands"]

LOG_ENV = "LAKEFLOW_DEV_LOG"  # the log file a detached service writes, for its marker to name
START_TIMEOUT = 180.0  # seconds `--detach` waits for the service to be ready (Ray's start)
STOP_TIMEOUT = 60.0  # seconds `--stop` waits for a clean stop before killing the process group


def add_commands(commands: Any) -> None:
    """Add `dev` to the `lakeflow` parser's subcommands."""
    dev = commands.add_parser(
        "dev",
        help="a resident local service (Ray, the lake's controller, triggers, HTTP) that every "
        "command on the same lake attaches to",
        description="Start (or find) the lake's resident service; `--stop` stops it.",
        epilog="While it runs, materialize, backfill, backfill resume and up on the same lake "
        "(and lf.materialize in Python) run in it without starting Ray; --address or "
        "LAKEFLOW_NO_SERVICE=1 bypass it.",
    )
    dev.add_argument(
        "pipeline", nargs="?", help="pipeline module: path/to/file.py or package.module[:NAME]"
    )
    dev.add_argument("--lake", help="lake URL (default: the pipeline's, or $LAKEFLOW_LAKE)")
    dev.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000; 0: any)")
    dev.add_argument("--token", help="the HTTP token (default: $LAKEFLOW_HTTP_TOKEN, else new)")
    dev.add_argument(
        "--poll", type=float, default=0.1, help="seconds between looks for outside commits"
    )
    dev.add_argument(
        "--detach", action="store_true", help="return once it is ready; it runs in the background"
    )
    dev.add_argument("--stop", action="store_true", help="stop the lake's running service")
    dev.set_defaults(handler=dev_command)


def dev_command(args: argparse.Namespace, console: Console) -> int:
    if args.stop:
        return _stop(_lake(args), console)
    if not args.pipeline:
        raise RequestError(
            "lakeflow dev needs a pipeline", hint="lakeflow dev pipelines/flights.py"
        )
    pipeline = pipeline_from_args(args)
    lake = Lake(pipeline.lake, pipeline.storage_options)
    parse_address(f"{args.host}:{args.port}")  # a bad address is refused before anything starts
    running = find_service(lake.url)
    if running is not None:
        return _already(running, console)
    if args.detach:
        return _detach(args, lake, console)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())  # `lakeflow dev --stop`
    token = args.token if args.token is not None else os.environ.get("LAKEFLOW_HTTP_TOKEN")
    options = DevOptions(host=args.host, port=args.port, token=token, poll=args.poll,
                         log=os.environ.get(LOG_ENV))  # fmt: skip
    service = DevService.start(pipeline, reference=_reference(args.pipeline), options=options)
    if isinstance(service, ServiceInfo):  # another one won the race to this lake
        return _already(service, console)
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())  # again: Ray's start replaced it
    info = service.info
    _say(console, f"lakeflow dev: {pipeline.name} on {lake.url}\n"
         f"  http {info.http} (token in {marker_path(lake.url)}), Ray {info.ray_address}\n"
         "  commands and notebooks on this lake now run here; Ctrl-C or `lakeflow dev --stop` "
         "stops it")  # fmt: skip
    service.serve_until(stopped, say=lambda line: _say(console, line))
    _say(console, "lakeflow dev: stopped (triggers down, controller stopped, Ray shut down)")
    return EXIT_OK


def _say(console: Console, text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True)
    console.file.flush()


def _already(info: ServiceInfo, console: Console) -> int:
    _say(console, f"lakeflow dev: already running for {info.lake} (pid {info.pid}, {info.http}, "
         f"pipeline {info.pipeline}); stop it with `lakeflow dev --stop`")  # fmt: skip
    return EXIT_OK


def _reference(given: str) -> str:
    """The pipeline as typed, with a file made absolute (the marker is read from anywhere)."""
    location, sep, name = given.partition(":")
    path = Path(location)
    return f"{path.resolve()}{sep}{name}" if path.exists() else given


def _lake(args: argparse.Namespace) -> Lake:
    if args.pipeline:
        pipeline = pipeline_from_args(args)
        return Lake(pipeline.lake, pipeline.storage_options)
    return Lake(args.lake or os.environ.get("LAKEFLOW_LAKE") or "./lake")


def _detach(args: argparse.Namespace, lake: Lake, console: Console) -> int:
    """Start the service as a background process in its own session; return once it is ready
    (0), or with its log's last lines when it could not start (its exit code)."""
    log = marker_path(lake.url).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [sys.executable, "-m", "lakeflow.cli", *[a for a in args.argv if a != "--detach"]]
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        child = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, LOG_ENV: str(log)},
        )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr if code else sys.stdout)
            return code
        info = read_marker(lake.url)
        if info is not None and info.pid == child.pid and info.ready:
            _say(console, f"lakeflow dev: running in the background (pid {child.pid}, "
                 f"{info.http}, log {log}); stop it with `lakeflow dev --stop`")  # fmt: skip
            return EXIT_OK
        time.sleep(0.1)
    _kill_group(child.pid)
    print(f"lakeflow: error: lakeflow dev did not start within {START_TIMEOUT:.0f}s; log {log}",
          file=sys.stderr)  # fmt: skip
    return EXIT_INFRA


def _stop(lake: Lake, console: Console) -> int:
    """Stop the lake's service: SIGTERM makes it stop cleanly (triggers down, controller
    stopped, Ray shut down, marker removed); its process group is killed if it hangs."""
    info = read_marker(lake.url)
    if info is None or not pid_alive(info.pid):
        remove_marker(lake.url)
        _say(console, f"lakeflow dev: no service was running for {lake.url}")
        return EXIT_FAILED
    if info.ready and not _answers_as(info):  # its pid may now be another program's
        remove_marker(lake.url, pid=info.pid)
        _say(console, f"lakeflow dev: the service of {lake.url} is gone (pid {info.pid} does not "
                      "answer as it; not signalled): its marker was removed")  # fmt: skip
        return EXIT_FAILED
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid_alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(info.pid):
        _kill_group(info.pid)
        remove_marker(lake.url, pid=info.pid)
        _say(
            console, f"lakeflow dev: pid {info.pid} did not stop within {STOP_TIMEOUT:.0f}s: killed"
        )
        return EXIT_FAILED
    remove_marker(lake.url, pid=info.pid)
    _say(console, f"lakeflow dev: stopped the service of {lake.url} (pid {info.pid})")
    return EXIT_OK


def _answers_as(info: ServiceInfo) -> bool:
    """Whether the service at the marker's address, asked with its token, says it is that pid
    started at that time: only then is the pid signalled."""
    request = urllib.request.Request(
        info.http + "/service", headers={"Authorization": f"Bearer {info.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            about = json.loads(answer.read())["value"]
    except (OSError, ValueError, KeyError):
        return False
    return about.get("pid") == info.pid and about.get("started") == info.started


def _kill_group(pid: int) -> None:
    """The last resort: the service and every process of its session (its Ray)."""
    try:
        group = os.getpgid(pid)
        if group == pid:  # a service started by --detach leads its own group
            os.killpg(group, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
