"""3 assets x N daily partitions of small data, through lakeflow and through a plain sequential
Python loop doing the same reads and Delta writes, in one run. Prints units/s and the ratio.

    python benchmarks/bench_pipeline.py --days 365
    python benchmarks/bench_pipeline.py --quick          # seconds; CI runs this
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
)  # for Ray workers
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import polars as pl  # noqa: E402
from deltalake import write_deltalake  # noqa: E402

from benchmarks.common import Timer, record, table  # noqa: E402
from benchmarks.shape import ROWS, build_pipeline, clean_fn, source_fn, stats_fn  # noqa: E402


def run_lakeflow(lake: str, days: int, executor: str, address: str | None) -> float:
    import lakeflow as lf

    pipeline = build_pipeline(days, lake)
    with Timer() as timer:
        result = lf.materialize(pipeline, executor=executor, address=address)
    assert result.ok, result
    return timer.seconds


def run_loop(lake: str, days: int) -> float:
    """What a hand-written script does: each unit read, computed and written on its own."""
    import datetime as dt

    start = dt.date(2024, 1, 1)
    steps = [("source", None, None), ("clean", "source", clean_fn), ("stats", "clean", stats_fn)]
    with Timer() as timer:
        for d in range(days):
            key = str(start + dt.timedelta(days=d))
            for table, upstream, compute in steps:
                if compute is None:
                    frame = source_fn(key)
                else:
                    read = (
                        pl.scan_delta(f"{lake}/{upstream}")
                        .filter(pl.col("date") == key)
                        .drop("date")
                    )
                    frame = compute(read).collect()
                write_deltalake(
                    f"{lake}/{table}",
                    frame.with_columns(pl.lit(key).alias("date")).to_arrow(),
                    mode="overwrite",
                    partition_by=["date"],
                    predicate=f"date = '{key}'",
                )
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--quick", action="store_true", help="a few days only, nothing recorded")
    parser.add_argument("--executor", choices=["ray", "local"], default="ray")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--skip-loop", action="store_true")
    args = parser.parse_args()
    days = 5 if args.quick else args.days
    units = 3 * days
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-"))
    try:
        import lakeflow as lf

        if args.executor == "ray":
            lf.connect(args.address, log_to_driver=False)
            run_lakeflow(
                str(work / "warmup"), 2, args.executor, args.address
            )  # start worker processes
        rows = []
        seconds = run_lakeflow(str(work / "lakeflow"), days, args.executor, args.address)
        rows.append([f"lakeflow ({args.executor})", units, seconds, units / seconds])
        if not args.skip_loop:
            loop = run_loop(str(work / "loop"), days)
            rows.append(["sequential Python loop", units, loop, units / loop])
            ratio = (
                f"\nlakeflow / loop: **{(units / seconds) / (units / loop):.1f}x** the units/s\n"
            )
        else:
            ratio = ""
        body = (
            table(["runner", "units", "seconds", "units/s"], rows)
            + f"\n\n{ROWS} rows a partition.{ratio}"
        )
        record(f"Pipeline shape: 3 assets x {days} daily partitions", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
