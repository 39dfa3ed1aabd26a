"""The `lakeflow` command.

    lakeflow materialize pipelines/flights.py --select "delays+" --partitions 2013-01-01..2013-01-31
    lakeflow backfill pipelines/flights.py --partitions 2013-01-01..2013-12-31 --order newest
    lakeflow backfill status|cancel|resume RUN_ID [--lake ./lake]
    lakeflow assets pipelines/flights.py
    lakeflow status pipelines/flights.py
    lakeflow checks pipelines/flights.py --failed
    lakeflow up pipelines/flights.py [--http 127.0.0.1:8080] [--detach]
    lakeflow down pipelines/flights.py
    lakeflow subscribe pipelines/flights.py daily_revenue [--webhook URL]
    lakeflow submit --address http://127.0.0.1:8265 -- backfill pipelines/flights.py ...
    lakeflow jobs list | logs ID [--follow] | stop ID

Exit codes: 0 every requested unit was published or already fresh; 1 some were not (a failure
of their own code, a failed check, a unit held behind one); 2 the request itself was wrong (bad
selection, partition key, pipeline) and nothing changed, found before Ray starts; 3 Ray or the
lake's storage failed, including a run whose failed units all failed on storage (a full disk);
130 cancelled with Ctrl-C (see `cli.common`). `--debug` shows the traceback behind an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import polars as pl
from rich.console import Console

from lakeflow.api import (
    PlanPreview,
    backfill,
    backfill_request,
    backfill_status,
    cancel,
    check_results,
    materialize,
    materialize_request,
    resume,
    status,
)
from lakeflow.cli import service as cli_service
from lakeflow.cli.common import (
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    guarded,
    on_ray,
    pipeline_args,
    pipeline_from_args,
    table,
)
from lakeflow.cli.service import add_commands
from lakeflow.errors import short_traceback
from lakeflow.lake import Lake
from lakeflow.maintenance import vacuum
from lakeflow.plan.planner import check_request
from lakeflow.progress import not_built

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "main"]
CHECK_COLUMNS = [
    "asset",
    "partition",
    "check",
    "severity",
    "status",
    "failing",
    "rows",
    "message",
    "quarantine",
]
RUN_COMMANDS = ("status", "cancel", "resume")


def _run_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--executor", choices=["ray", "local"], default="ray")
    sub.add_argument(
        "--address", help="Ray cluster address (default: start a local Ray for this command)"
    )
    sub.add_argument("--no-progress", action="store_true", help="no live progress bar")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")


def _selection_args(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--select", "-s", default="*", help='assets: names, "name+", "+name", "*", comma lists'
    )
    sub.add_argument(
        "--partitions", "-p", help="a key, a range a..b, or a comma list (default: all)"
    )
    sub.add_argument(
        "--order", choices=["oldest", "newest"], default="oldest", help="which partitions go first"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeflow",
        description="Keep a lake of Delta tables up to date on Ray.",
        epilog="Exit codes: 0 done, 1 units failed (their code or a check), 2 bad request or "
        "definitions (nothing changed), 3 Ray or the lake's storage failed (also when every "
        "failed unit failed on storage, e.g. a full disk). --debug (anywhere) shows tracebacks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("materialize", help="bring selected assets' partitions up to date")
    pipeline_args(run)
    _selection_args(run)
    run.add_argument("--force", action="store_true", help="rerun units that are already fresh")
    _run_args(run)

    fill = commands.add_parser(
        "backfill",
        help="fill in many partitions as a durable, resumable run",
        description="lakeflow backfill PIPELINE [options], or lakeflow backfill status|cancel|resume RUN_ID",
    )
    pipeline_args(fill)
    _selection_args(fill)
    fill.add_argument(
        "--only",
        choices=["missing", "stale", "failed", "all"],
        help="what to (re)process (default: missing or stale)",
    )
    fill.add_argument("--concurrency", type=int, help="tasks of this backfill in flight at most")
    fill.add_argument(
        "--max-share", type=float, help="fraction of the cluster's task slots it may use (0-1]"
    )
    fill.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan's counts and first units, run nothing",
    )
    _run_args(fill)

    assets = commands.add_parser("assets", help="print the asset graph")
    pipeline_args(assets)

    stat = commands.add_parser(
        "status", help="per asset: partitions published, stale, failed, held, missing"
    )
    pipeline_args(stat)
    stat.add_argument("--json", action="store_true", help="print as JSON")

    audit = commands.add_parser("checks", help="check outcomes per unit (the latest by default)")
    pipeline_args(audit)
    audit.add_argument("--asset", "-a", help="only this asset")
    audit.add_argument("--failed", action="store_true", help="only checks that did not pass")
    audit.add_argument("--history", action="store_true", help="every result, not only the latest")
    audit.add_argument("--json", action="store_true", help="print as JSON")

    tidy = commands.add_parser(
        "vacuum",
        help="delete replaced files and never-committed staged files older than the retention",
    )
    pipeline_args(tidy)
    tidy.add_argument("--select", "-s", help="assets (default: every asset lakeflow builds)")
    tidy.add_argument(
        "--retain-hours", type=int, default=168,
        help="keep what versions of the last N hours need (default 168; at least 1)",
    )  # fmt: skip
    tidy.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    tidy.add_argument("--json", action="store_true", help="print as JSON")

    add_commands(commands)
    return parser


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeflow backfill", description="Look after one backfill (or any run) by its id."
    )
    commands = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("status", "counts per state, rate, ETA, failures"),
        ("cancel", "cancel it cleanly"),
        ("resume", "carry on after a kill or a cancel"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("run_id")
        sub.add_argument("--lake", help="lake URL (default: $LAKEFLOW_LAKE or ./lake)")
        if name == "resume":
            _run_args(sub)
            sub.add_argument(
                "--accept-changed-code",
                action="store_true",
                help="resume even though the pipeline's definition changed since the run began",
            )
        elif name == "status":
            sub.add_argument("--json", action="store_true", help="print as JSON")
    return parser


def _exit(result: Any) -> int:
    """0 all done; 3 when every failed unit failed because Ray or the lake's storage did (the
    same run may pass later, unchanged); 1 when any unit failed on its own code or a check."""
    if result.ok:
        return EXIT_OK
    return EXIT_INFRA if result.infrastructure_failed else EXIT_FAILED


def _report(result: Any, args: argparse.Namespace, console: Console) -> int:
    """The end of a run: a summary line; failures by asset with their first error lines."""
    if args.json:
        summary = {
            "run_id": result.run_id,
            "status": result.status,
            "ok": result.ok,
            "infrastructure": result.infrastructure_failed,
            "counts": result.counts(),
        }
        print(json.dumps(summary))
        return _exit(result)
    console.print(result.summary(), highlight=False)
    for asset, partition, why in result.waiting().head(10).iter_rows():
        console.print(f"{asset} {partition} waiting: {why}", highlight=False)
    failures = result.failures()
    if not failures.is_empty():
        if failures.height <= 20:
            print(
                table(failures.select("asset", "partition", "outcome", "attempts", "error")),
                file=sys.stderr,
            )
        else:
            by_asset = failures.group_by("asset", "outcome", maintain_order=True).agg(
                pl.len().alias("units"), pl.col("error").drop_nulls().head(3).alias("first errors")
            )
            print(
                table(by_asset.with_columns(pl.col("first errors").list.join(" | "))),
                file=sys.stderr,
            )
        for where, text in list(result.errors.items())[:1]:
            if getattr(args, "debug", False):
                shown = text
            elif where in result.infrastructure:  # lakeflow's frames say nothing to the user
                shown = "  " + text.rstrip().splitlines()[-1].removeprefix("lakeflow.errors.")
            else:
                shown = short_traceback(text)
            print(f"\n{where}:\n{shown}", file=sys.stderr)
    code = _exit(result)
    if code == EXIT_INFRA:
        units = len(result.infrastructure)
        print(
            f"lakeflow: error: {units} unit{'s' * (units != 1)} failed because the lake's storage "
            "or Ray failed, not their own code: the same run may succeed once that is fixed",
            file=sys.stderr,
        )
    return code


def _materialize(args: argparse.Namespace, console: Console) -> int:
    pipeline = pipeline_from_args(args)
    # a wrong request is refused here, in a second, not after Ray took tens of seconds to start
    check_request(pipeline, materialize_request(
        args.select, args.partitions, force=args.force, order=args.order
    ))  # fmt: skip
    result = on_ray(args, lambda: materialize(
        pipeline, select=args.select, partitions=args.partitions, force=args.force, order=args.order,
        executor=args.executor, progress=not args.no_progress and not args.json, origin="cli",
    ))  # fmt: skip
    return _report(result, args, console)


def _backfill(args: argparse.Namespace, console: Console) -> int:
    pipeline = pipeline_from_args(args)
    options: dict[str, Any] = dict(
        select=args.select, partitions=args.partitions, only=args.only, order=args.order,
        concurrency=args.concurrency, max_share=args.max_share,
    )  # fmt: skip
    check_request(pipeline, backfill_request(**options))  # before Ray starts, as above
    if args.dry_run:
        plan = backfill(pipeline, dry_run=True, **options)
        assert isinstance(plan, PlanPreview)
        print(
            json.dumps({"units": plan.units, "fresh": plan.fresh, "first": plan.first})
            if args.json
            else repr(plan)
        )
        return EXIT_OK
    result = on_ray(args, lambda: backfill(
        pipeline, executor=args.executor, progress=not args.no_progress and not args.json, origin="cli", **options
    ))  # fmt: skip
    return _report(result, args, console)


def _look_after(argv: Sequence[str], console: Console, debug: bool) -> int:
    """`lakeflow backfill status|cancel|resume RUN_ID`."""
    args = _run_parser().parse_args(argv)
    args.debug = debug
    lake = Lake(args.lake or os.environ.get("LAKEFLOW_LAKE") or "./lake")
    if args.action == "status":
        info = backfill_status(args.run_id, lake=lake)
        if args.json:
            print(json.dumps(info, default=str))
            return EXIT_OK
        eta = f", ETA {info['eta']:.0f}s" if info.get("eta") else ""
        console.print(
            f"run {info['run_id']} ({info['kind']}) {info['status']}: {info['published']}/{info['total']} published, "
            f"{not_built(info)}, {info['rate']:.1f} units/s{eta}",
            highlight=False,
        )
        for asset, entry in info["failures"].items():
            console.print(
                f"  {asset}: {entry['failed']} failed; " + " | ".join(entry["first_errors"]),
                highlight=False,
            )
        return EXIT_OK
    if args.action == "cancel":
        if cancel(args.run_id, lake=lake):
            console.print(
                f"run {args.run_id}: cancel requested; units in flight finish, the rest is not started",
                highlight=False,
            )
            return EXIT_OK
        console.print(f"run {args.run_id} is not running", highlight=False)
        return EXIT_FAILED
    result = on_ray(
        args,
        lambda: resume(
            args.run_id,
            lake=lake,
            executor=args.executor,
            progress=not args.no_progress and not args.json,
            accept_changed_code=args.accept_changed_code,
        ),
    )
    return _report(result, args, console)


def main(argv: Sequence[str] | None = None) -> int:
    """The `lakeflow` command: its exit code (see the module docstring)."""
    return guarded(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str], debug: bool) -> int:
    console = Console(stderr=False, soft_wrap=True)
    if len(argv) > 1 and argv[0] == "backfill" and argv[1] in RUN_COMMANDS:
        return _look_after(argv[1:], console, debug)
    args = _parser().parse_args(argv)
    args.debug = debug
    if args.command == "materialize":
        return _materialize(args, console)
    if args.command == "backfill":
        return _backfill(args, console)
    if args.command in ("up", "down", "subscribe", "submit", "jobs"):
        args.argv = argv
        command = getattr(cli_service, args.command)
        return command(args) if args.command == "subscribe" else command(args, console)
    pipeline = pipeline_from_args(args)
    if args.command == "assets":
        print(pipeline.describe())
        return EXIT_OK
    if args.command == "status":
        frame = status(pipeline)
    elif args.command == "vacuum":
        frame = vacuum(
            pipeline, select=args.select, retain_hours=args.retain_hours, dry_run=args.dry_run
        )
    else:
        frame = check_results(pipeline, asset=args.asset, failed=args.failed, history=args.history)
        frame = frame.select(
            [*CHECK_COLUMNS, "ts", "run_id", "version", "scope"] if args.json else CHECK_COLUMNS
        )
    print(frame.write_json() if args.json else table(frame))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
