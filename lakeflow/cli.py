"""The `lakeflow` command.

    lakeflow materialize pipelines/flights.py --select "delays+" --partitions 2013-01-01..2013-01-31
    lakeflow assets pipelines/flights.py
    lakeflow status pipelines/flights.py
    lakeflow checks pipelines/flights.py --failed

Exit codes: 0 every requested unit was published or already fresh; 1 some were not (a failure,
a failed check, a unit held behind one); 2 the request itself was wrong (bad selection,
partition key, pipeline, unreachable lake) and nothing changed.
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

from .errors import LakeflowError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lakeflow", description="Keep a lake of Delta tables up to date on Ray."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def pipeline_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "pipeline", help="pipeline module: path/to/file.py or package.module, optionally :NAME"
        )
        sub.add_argument("--lake", help="lake URL (default: the pipeline's, or $LAKEFLOW_LAKE)")

    run = commands.add_parser("materialize", help="bring selected assets' partitions up to date")
    pipeline_args(run)
    run.add_argument(
        "--select", "-s", default="*", help='assets: names, "name+", "+name", "*", comma lists'
    )
    run.add_argument(
        "--partitions", "-p", help="a key, a range a..b, or a comma list (default: all)"
    )
    run.add_argument("--force", action="store_true", help="rerun units that are already fresh")
    run.add_argument("--order", choices=["oldest", "newest"], default="oldest")
    run.add_argument("--executor", choices=["ray", "local"], default="ray")
    run.add_argument(
        "--address", help="Ray cluster address (default: start a local Ray for this command)"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    run.add_argument("--json", action="store_true", help="print the result as JSON")

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
    return parser


def _pipeline(args: argparse.Namespace) -> Any:
    from .graph import Pipeline
    from .loading import load_pipeline

    pipeline = load_pipeline(args.pipeline)
    lake = args.lake or os.environ.get("LAKEFLOW_LAKE")
    if lake:
        pipeline = Pipeline(
            pipeline.assets.values(),
            lake=lake,
            storage_options=pipeline.storage_options,
            name=pipeline.name,
        )
    return pipeline


def _table(frame: pl.DataFrame) -> str:
    with pl.Config(
        tbl_rows=200,
        tbl_cols=20,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        fmt_str_lengths=160,
        tbl_width_chars=200,
    ):
        return str(frame)


def _materialize(args: argparse.Namespace, console: Console) -> int:
    import ray

    from .api import connect, materialize

    pipeline = _pipeline(args)
    started_here = False
    if args.executor == "ray" and not ray.is_initialized():
        connect(args.address, log_to_driver=bool(os.environ.get("LAKEFLOW_WORKER_LOGS")))
        started_here = True
    try:
        result = materialize(
            pipeline,
            select=args.select,
            partitions=args.partitions,
            force=args.force,
            order=args.order,
            executor=args.executor,
            progress=not args.no_progress and not args.json,
            origin="cli",
        )
    finally:
        if started_here:
            ray.shutdown()
    if args.json:
        summary = {
            "run_id": result.run_id,
            "status": result.status,
            "ok": result.ok,
            "counts": result.counts(),
        }
        print(json.dumps(summary))
        return EXIT_OK if result.ok else EXIT_FAILED
    console.print(result.summary(), highlight=False)
    failures = result.failures()
    if not failures.is_empty():
        shown = failures.select("asset", "partition", "outcome", "attempts", "error")
        print(_table(shown), file=sys.stderr)
        for where, text in list(result.errors.items())[:1]:
            print(f"\n{where}:\n{text}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=False, soft_wrap=True)
    try:
        if args.command == "materialize":
            return _materialize(args, console)
        pipeline = _pipeline(args)
        if args.command == "assets":
            print(pipeline.describe())
            return EXIT_OK
        if args.command == "status":
            from .api import status

            frame = status(pipeline)
        else:
            from .api import check_results

            frame = check_results(
                pipeline, asset=args.asset, failed=args.failed, history=args.history
            )
            frame = frame.select(
                [*CHECK_COLUMNS, "ts", "run_id", "version", "scope"] if args.json else CHECK_COLUMNS
            )
        print(frame.write_json() if args.json else _table(frame))
        return EXIT_OK
    except LakeflowError as error:
        print(f"lakeflow: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
