"""`lakeflow runs` and `lakeflow logs`: a lake's run history and what its units printed, read
from the event log (`control.history`). Neither starts Ray nor needs a controller.

    lakeflow runs [PIPELINE] [--lake URL] [--limit 20] [--json]
    lakeflow logs RUN_ID [ASSET [PARTITION]] [--lake URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import polars as pl
from rich.console import Console

from lakeflow.cli.common import EXIT_OK, table
from lakeflow.control.history import run_history, run_logs
from lakeflow.errors import RequestError
from lakeflow.lake import Lake
from lakeflow.loading import load_pipeline

__all__ = ["add_commands"]

SHOWN = 50  # units `logs` prints as text (--json has them all)


def add_commands(commands: Any) -> None:
    """Add `runs` and `logs` to the `lakeflow` parser's subcommands."""
    runs = commands.add_parser(
        "runs", help="the lake's latest runs: kind, origin, status, start, duration, counts"
    )
    runs.add_argument("pipeline", nargs="?", help="pipeline module whose lake to read (or --lake)")
    _lake_arg(runs)
    runs.add_argument("--limit", "-n", type=int, default=20, help="how many runs (default 20)")
    runs.add_argument("--json", action="store_true", help="print as JSON")
    runs.set_defaults(handler=_runs)

    logs = commands.add_parser(
        "logs",
        help="what a run's units printed and logged, with their errors",
        description="Without ASSET: the run's failing units (or, if none failed, which units "
        "printed anything). With ASSET [PARTITION]: those units' output of every attempt.",
    )
    logs.add_argument("run_id", metavar="RUN_ID")
    logs.add_argument("asset", nargs="?", help="only this asset's units")
    logs.add_argument("partition", nargs="?", help="only this partition of the asset")
    logs.add_argument("--pipeline", help="pipeline module whose lake to read (or --lake)")
    _lake_arg(logs)
    logs.add_argument("--json", action="store_true", help="print as JSON")
    logs.set_defaults(handler=_logs)


def _lake_arg(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--lake", help="lake URL (default: the pipeline's, or $LAKEFLOW_LAKE, or ./lake)"
    )


def _lake(args: argparse.Namespace) -> Lake:
    """The lake the arguments name: --lake, the pipeline's, $LAKEFLOW_LAKE, or ./lake."""
    if args.pipeline:  # its storage options (credentials) apply to --lake too
        pipeline = load_pipeline(args.pipeline)
        return Lake(args.lake or pipeline.lake, pipeline.storage_options)
    return Lake(args.lake or os.environ.get("LAKEFLOW_LAKE") or "./lake")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) or "-"


def _runs(args: argparse.Namespace, console: Console) -> int:
    if args.limit < 1:
        raise RequestError(f"--limit must be 1 or more, not {args.limit}")
    lake = _lake(args)
    runs = run_history(lake, limit=args.limit)
    if args.json:
        print(json.dumps({"lake": lake.url, "runs": runs}, default=str))
        return EXIT_OK
    if not runs:
        console.print(f"no runs in the lake {lake.url} yet", highlight=False)
        return EXIT_OK
    frame = pl.DataFrame(
        {
            "run": [r["run_id"] for r in runs],
            "kind": [r["kind"] for r in runs],
            "origin": [r["origin"] for r in runs],
            "status": [r["status"] for r in runs],
            "started": [(r["started"] or "")[:19].replace("T", " ") for r in runs],
            "seconds": [round(r["seconds"], 1) for r in runs],
            "units": [_counts(r["counts"]) for r in runs],
        }
    )
    print(table(frame))
    return EXIT_OK


def _logs(args: argparse.Namespace, console: Console) -> int:
    if args.partition is not None and args.asset is None:
        raise RequestError("a partition needs its asset: lakeflow logs RUN_ID ASSET PARTITION")
    found = run_logs(_lake(args), args.run_id, asset=args.asset, partition=args.partition)
    if args.json:
        print(json.dumps(found, default=str))
        return EXIT_OK
    units = found["units"]
    if not units:
        what = "no unit failed" if args.asset is None else "nothing logged yet"
        console.print(f"run {found['run_id']} ({found['status']}): {what}", highlight=False)
        if found["logged"]:
            console.print("units that printed or logged (lakeflow logs RUN ASSET PARTITION):",
                          highlight=False)  # fmt: skip
            print(table(pl.DataFrame(found["logged"])))
        return EXIT_OK
    for unit in units[:SHOWN]:
        where = f"{unit['asset']} {unit['partition']}".rstrip()
        tries = unit["attempts"]
        after = f" after {tries} attempt{'s' * (tries != 1)}" if tries else ""
        console.rule(f"{where}: {unit['outcome']}{after}", style="bold", align="left")
        if not unit["logs"]:
            console.print("(it printed and logged nothing)", style="dim", highlight=False)
        for attempt in unit["logs"]:
            if len(unit["logs"]) > 1 or attempt["attempt"] != 1:
                console.print(f"-- attempt {attempt['attempt']} --", style="dim", highlight=False)
            console.out(attempt["logs"].rstrip("\n"), highlight=False)
        if unit["traceback"] or unit["error"]:
            console.print("error:", style="red", highlight=False)
            console.out((unit["traceback"] or unit["error"]).rstrip("\n"), highlight=False)
    if len(units) > SHOWN:
        console.print(f"... and {len(units) - SHOWN:,} more units: name a PARTITION, or --json "
                      "prints them all", highlight=False)  # fmt: skip
    return EXIT_OK
