"""The `lakeflow` command.

    lakeflow materialize pipelines/flights.py --select "delays+" --partitions 2013-01-01..2013-01-31
    lakeflow backfill pipelines/flights.py --partitions 2013-01-01..2013-12-31 --order newest
    lakeflow backfill status|cancel|resume RUN_ID [--lake ./lake]
    lakeflow assets pipelines/flights.py
    lakeflow status pipelines/flights.py
    lakeflow checks pipelines/flights.py --failed
    lakeflow optimize pipelines/flights.py --select flights_clean [--zorder carrier] [--json]
    lakeflow runs [pipelines/flights.py] [--lake ./lake] [--limit 20] [--json]
    lakeflow logs RUN_ID [ASSET [PARTITION]] [--lake ./lake]
    lakeflow up pipelines/flights.py [--http 127.0.0.1:8080] [--detach]
    lakeflow down pipelines/flights.py
    lakeflow dev pipelines/flights.py [--port 3000] [--detach]   |   lakeflow dev --stop --lake ./lake
    lakeflow ui pipelines/flights.py [--port 3000] [--token T]
    lakeflow subscribe pipelines/flights.py daily_revenue [--webhook URL]
    lakeflow submit --address http://127.0.0.1:8265 -- backfill pipelines/flights.py ...
    lakeflow jobs list | logs ID [--follow] | stop ID

Exit codes: 0 every requested unit was published or already fresh; 1 some were not (a failure
of their own code, a failed check, a unit held behind one); 2 the request itself was wrong (bad
selection, partition key, pipeline) and nothing changed, found before Ray starts; 3 Ray or the
lake's storage failed, including a run whose failed units all failed on storage (a full disk);
130 cancelled with Ctrl-C (see `cli.common`). `--debug` shows the traceback behind an error.

This module only assembles the parser from the command groups (one module each: `run`, `lake`,
`history`, `service`, `dev`, `ui`, `cluster`) and calls the handler a command names. It imports only the group of the
command typed (`GROUPS` says which group adds which command), so `lakeflow status` never loads
the controller, the web service or Ray; help, a bare `lakeflow` and a command no group claims
load them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType

from rich.console import Console

from lakeflow.cli.common import EXIT_INTERRUPTED, EXIT_OK, guarded

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "GROUPS", "groups", "main"]

# each command group's module and the commands it adds, in the order `lakeflow --help` lists
# them; a command missing here still works (every group is then loaded), only slower to start
GROUPS: dict[str, tuple[str, ...]] = {
    "lakeflow.cli.run": ("materialize", "backfill"),
    "lakeflow.cli.lake": ("assets", "status", "checks", "lineage", "vacuum", "optimize"),
    "lakeflow.cli.history": ("runs", "logs"),
    "lakeflow.cli.service": ("up", "down", "subscribe"),
    "lakeflow.cli.dev": ("dev",),
    "lakeflow.cli.ui": ("ui",),
    "lakeflow.cli.cluster": ("submit", "jobs"),
}


def groups(argv: Sequence[str] = ()) -> list[ModuleType]:
    """The group modules `argv` needs: the one adding its command, else all of them."""
    command = next((a for a in argv if not a.startswith("-")), None)
    owners = [name for name, commands in GROUPS.items() if command in commands]
    return [importlib.import_module(name) for name in owners or GROUPS]


def _version() -> str:
    try:
        return version("lakeflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeflow",
        description="Keep a lake of Delta tables up to date on Ray.",
        epilog="Exit codes: 0 done, 1 units failed (their code or a check), 2 bad request or "
        "definitions (nothing changed), 3 Ray or the lake's storage failed (also when every "
        "failed unit failed on storage, e.g. a full disk). --debug (anywhere) shows tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"lakeflow {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in groups(argv):
        group.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `lakeflow` command: its exit code (see the module docstring)."""
    return guarded(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str], debug: bool) -> int:
    if argv == ["--version"]:  # without building every group's parser
        print(f"lakeflow {_version()}")
        return EXIT_OK
    console = Console(stderr=False, soft_wrap=True)
    if len(argv) > 1 and argv[0] == "backfill":
        (run,) = groups(["backfill"])
        if argv[1] in run.RUN_COMMANDS:
            return run.look_after(argv[1:], console, debug)
    parser = _parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `lakeflow`: what it can do, not an error
        parser.print_help()
        return EXIT_OK
    args.debug = debug
    args.argv = argv  # `up --detach` starts itself again in the background with these
    return args.handler(args, console)


if __name__ == "__main__":
    sys.exit(main())
