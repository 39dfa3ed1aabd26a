"""`lakeflow materialize`, `lakeflow backfill` and `lakeflow backfill status|cancel|resume RUN_ID`:
the commands that run units, and how a run's end is reported (a summary, failures by asset, the
exit code)."""

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
    materialize,
    materialize_request,
    nothing_to_run,
    resume,
)
from lakeflow.cli.common import (
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_OK,
    attached_service,
    on_ray,
    pipeline_args,
    pipeline_from_args,
    table,
)
from lakeflow.errors import short_traceback
from lakeflow.lake import Lake
from lakeflow.plan.planner import check_request
from lakeflow.progress import not_built

__all__ = ["RUN_COMMANDS", "add_commands", "look_after"]

RUN_COMMANDS = ("status", "cancel", "resume")
LOOK_AFTER = """look after a run by its id (any run, not only backfills):
  lakeflow backfill status RUN_ID [--lake URL] [--json]   counts per state, rate, ETA, failures
  lakeflow backfill cancel RUN_ID [--lake URL]            cancel it cleanly
  lakeflow backfill resume RUN_ID [--lake URL]            carry on after a kill or a cancel"""


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


def add_commands(commands: Any) -> None:
    """Add `materialize` and `backfill` to the `lakeflow` parser's subcommands."""
    run = commands.add_parser("materialize", help="bring selected assets' partitions up to date")
    pipeline_args(run)
    _selection_args(run)
    run.add_argument("--force", action="store_true", help="rerun units that are already fresh")
    _run_args(run)
    run.set_defaults(handler=_materialize)

    fill = commands.add_parser(
        "backfill",
        help="fill in many partitions as a durable, resumable run",
        description="lakeflow backfill PIPELINE [options], or lakeflow backfill status|cancel|resume RUN_ID",
        epilog=LOOK_AFTER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    fill.set_defaults(handler=_backfill)


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


JSON_FAILURES = 1000  # failing units a run's JSON lists (`failures_total` counts them all)


def _json(result: Any) -> dict[str, Any]:
    """A run's end as JSON: status, counts, duration, and the failing units with their first
    error lines, attempts and seconds, and the errors (tracebacks) by unit."""
    failures = result.failures()
    started, finished = result.started, result.finished
    rows = failures.head(JSON_FAILURES).select(
        "asset", "partition", "outcome", "attempts", "seconds",
        pl.col("error").str.split("\n").list.first().alias("error"),
    )  # fmt: skip
    return {
        "run_id": result.run_id,
        "status": result.status,
        "ok": result.ok,
        "infrastructure": result.infrastructure_failed,
        "counts": result.counts(),
        "started": started,
        "finished": finished,
        "seconds": finished - started if started and finished else None,
        "failures": rows.to_dicts(),
        "failures_total": failures.height,
        "errors": dict(list(result.errors.items())[:JSON_FAILURES]),
    }


def _report(result: Any, args: argparse.Namespace, console: Console) -> int:
    """The end of a run: a summary line; failures by asset with their first error lines."""
    if args.json:
        print(json.dumps(_json(result), default=str))
        return _exit(result)
    console.print(result.summary(), highlight=False)
    for asset, partition, why in result.waiting().head(10).iter_rows():
        console.print(f"{asset} {partition} waiting: {why}", highlight=False)
    failures = result.failures()
    if not failures.is_empty():
        if failures.height <= 20:
            print(
                table(
                    failures.select("asset", "partition", "outcome", "attempts", "error"),
                    file=sys.stderr,
                ),
                file=sys.stderr,
            )
        else:
            by_asset = failures.group_by("asset", "outcome", maintain_order=True).agg(
                pl.len().alias("units"), pl.col("error").drop_nulls().head(3).alias("first errors")
            )
            print(
                table(
                    by_asset.with_columns(pl.col("first errors").list.join(" | ")),
                    file=sys.stderr,
                ),
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


def _nothing_to_run(args: argparse.Namespace, pipeline: Any, request: Any) -> Any:
    """The result of a request with nothing to run, planned in this process from one snapshot
    of the lake (no Ray started, nothing written); None when units must run, when a cluster
    (`--address`) was named, whose controller may see a lake this process cannot, or when a
    `lakeflow dev` service serves the lake (its warm controller answers faster than a read of
    the lake here)."""
    check_request(pipeline, request)  # a wrong request is refused here, before Ray starts
    if args.address is not None or attached_service(args) is not None:
        return None
    return nothing_to_run(pipeline, request)


def _materialize(args: argparse.Namespace, console: Console) -> int:
    pipeline = pipeline_from_args(args)
    request = materialize_request(args.select, args.partitions, force=args.force, order=args.order)
    done = _nothing_to_run(args, pipeline, request)
    if done is not None:
        return _report(done, args, console)
    result = on_ray(args, lambda: materialize(
        pipeline, select=args.select, partitions=args.partitions, force=args.force, order=args.order,
        executor=args.executor, progress=not args.no_progress and not args.json, origin="cli",
        address=args.address,
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
    done = _nothing_to_run(args, pipeline, backfill_request(**options))
    if done is not None:
        return _report(done, args, console)
    result = on_ray(args, lambda: backfill(
        pipeline, executor=args.executor, progress=not args.no_progress and not args.json, origin="cli",
        address=args.address, **options
    ))  # fmt: skip
    return _report(result, args, console)


def look_after(argv: Sequence[str], console: Console, debug: bool) -> int:
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
            address=args.address,
            progress=not args.no_progress and not args.json,
            accept_changed_code=args.accept_changed_code,
        ),
    )
    return _report(result, args, console)
