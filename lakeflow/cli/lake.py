"""`lakeflow assets`, `status`, `checks`, `lineage`, `vacuum` and `optimize`: the commands that read
(or tidy) the lake and never run a unit, so they never start Ray."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console

from lakeflow.cli.common import EXIT_OK, pipeline_args, pipeline_from_args, table
from lakeflow.maintenance import optimize, vacuum
from lakeflow.plan.lineage import lineage
from lakeflow.plan.status import check_results, file_status, status

__all__ = ["add_commands", "graph_json"]

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


def add_commands(commands: Any) -> None:
    """Add these commands' parsers to the `lakeflow` parser's subcommands."""
    assets = commands.add_parser("assets", help="print the asset graph")
    pipeline_args(assets)
    assets.add_argument(
        "--json",
        action="store_true",
        help="print as JSON: assets, upstream edges, partitions, checks",
    )
    assets.set_defaults(handler=_assets)

    stat = commands.add_parser(
        "status", help="per asset: partitions published, stale, failed, held, missing"
    )
    pipeline_args(stat)
    stat.add_argument("--json", action="store_true", help="print as JSON")
    stat.add_argument(
        "--files",
        action="store_true",
        help="only the sensed files that failed or changed since their data was built",
    )
    stat.set_defaults(handler=_status)

    audit = commands.add_parser("checks", help="check outcomes per unit (the latest by default)")
    pipeline_args(audit)
    audit.add_argument("--asset", "-a", help="only this asset")
    audit.add_argument("--failed", action="store_true", help="only checks that did not pass")
    audit.add_argument("--history", action="store_true", help="every result, not only the latest")
    audit.add_argument("--json", action="store_true", help="print as JSON")
    audit.set_defaults(handler=_checks)

    trace = commands.add_parser(
        "lineage",
        help="what a partition was built from, recursively (or what it fed: --downstream)",
        description="The exact upstream partition versions a partition version read, as the "
        "commits recorded them; with --downstream, the consumer partition versions built from it.",
    )
    pipeline_args(trace)
    trace.add_argument("asset")
    trace.add_argument("partition", nargs="?", help="its key (none for an unpartitioned asset)")
    trace.add_argument("--version", type=int, help="as this table version left it (default: now)")
    trace.add_argument("--downstream", action="store_true", help="what was built from it")
    trace.add_argument("--depth", type=int, help="levels to follow at most (default: all)")
    trace.add_argument("--json", action="store_true", help="print the tree as JSON")
    trace.set_defaults(handler=_lineage)

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
    tidy.set_defaults(handler=_vacuum)

    pack = commands.add_parser(
        "optimize",
        help="compact partitions holding many small files (and z-order them); changes no rows",
        description="Rewrite the partitions that hold at least --min-files small files into files "
        "of about --target-size bytes, one Delta OPTIMIZE commit per batch. Partitions keep the run, "
        "code version and inputs they were published with: nothing becomes stale.",
    )
    pipeline_args(pack)
    pack.add_argument("--select", "-s", help="assets (default: every asset lakeflow builds)")
    pack.add_argument("--partitions", "-p", help="partitions (default: all), as for materialize")
    pack.add_argument(
        "--zorder", help="comma-separated columns to z-order by (default: the asset's Compaction)"
    )
    pack.add_argument("--target-size", type=int, help="bytes per file (default: 100 MiB)")
    pack.add_argument(
        "--min-files", type=int, default=2,
        help="rewrite a partition holding at least this many small files (default 2)",
    )  # fmt: skip
    pack.add_argument("--json", action="store_true", help="print as JSON")
    pack.set_defaults(handler=_optimize)


def graph_json(pipeline: Any) -> dict[str, Any]:
    """The pipeline's graph as JSON values: each asset with its partitions (description, count,
    column), upstream edges with their mappings, checks, and whether lakeflow writes it."""
    assets = []
    for name, item in pipeline.assets.items():
        assets.append({
            "name": name, "group": item.group, "description": item.description,
            "source": item.source, "code_version": item.code_version,
            "partitions": {"describe": item.partitions.describe(), "count": len(item.partitions),
                           "column": item.partitions.column},
            "upstream": [{"asset": e.up, "mapping": e.mapping.describe()} for e in pipeline.upstream(name)],
            "checks": [{"name": c.name, "severity": c.severity, "scope": getattr(c, "scope", "unit")}
                       for c in item.checks],
            "automation": item.automation.describe() if item.automation is not None else None,
        })  # fmt: skip
    edges = [[e["asset"], a["name"]] for a in assets for e in a["upstream"]]
    return {"pipeline": pipeline.name, "lake": str(pipeline.lake), "assets": assets, "edges": edges}


def _assets(args: argparse.Namespace, console: Console) -> int:
    pipeline = pipeline_from_args(args)
    print(json.dumps(graph_json(pipeline), default=str) if args.json else pipeline.describe())
    return EXIT_OK


def _status(args: argparse.Namespace, console: Console) -> int:
    """The counts per asset, then the files that need a look (only those with --files)."""
    pipeline = pipeline_from_args(args)
    files = file_status(pipeline)
    if args.files:
        print(files.write_json() if args.json else table(files))
        return EXIT_OK
    frame = status(pipeline)
    print(frame.write_json() if args.json else table(frame))
    if not args.json and not files.is_empty():
        print(f"\nfiles that failed or changed since ({len(files)}):")
        print(table(files))
    return EXIT_OK


def _checks(args: argparse.Namespace, console: Console) -> int:
    frame = check_results(
        pipeline_from_args(args), asset=args.asset, failed=args.failed, history=args.history
    )
    frame = frame.select(
        [*CHECK_COLUMNS, "ts", "run_id", "version", "scope"] if args.json else CHECK_COLUMNS
    )
    print(frame.write_json() if args.json else table(frame))
    return EXIT_OK


def _lineage(args: argparse.Namespace, console: Console) -> int:
    found = lineage(
        pipeline_from_args(args), args.asset, args.partition,
        version=args.version, downstream=args.downstream, depth=args.depth,
    )  # fmt: skip
    print(json.dumps(found.to_dict()) if args.json else str(found))
    return EXIT_OK


def _vacuum(args: argparse.Namespace, console: Console) -> int:
    frame = vacuum(
        pipeline_from_args(args),
        select=args.select,
        retain_hours=args.retain_hours,
        dry_run=args.dry_run,
    )
    print(frame.write_json() if args.json else table(frame))
    return EXIT_OK


def _optimize(args: argparse.Namespace, console: Console) -> int:
    columns = [c.strip() for c in args.zorder.split(",")] if args.zorder is not None else None
    frame = optimize(
        pipeline_from_args(args), select=args.select, partitions=args.partitions,
        zorder=columns, target_size=args.target_size, min_files=args.min_files,
    )  # fmt: skip
    print(frame.write_json() if args.json else table(frame))
    return EXIT_OK
