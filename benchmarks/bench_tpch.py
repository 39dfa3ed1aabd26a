"""Data throughput: TPC-H lineitem (tpchgen-cli, Parquet) landed as one file per ship date
(~2,500 days at SF 1), backfilled by lakeflow into a Delta asset partitioned by day (and a daily
revenue mart), against raw polars reading the same files and writing them partitioned by day, in
one run: `sink_delta` (the same output, a Delta table) and a plain Parquet sink (no transaction
log, no statistics: a lower bound).

    python benchmarks/bench_tpch.py                 # SF 1
    python benchmarks/bench_tpch.py --scale 3       # larger, where the disk allows
    python benchmarks/bench_tpch.py --quick         # one month of SF 0.1; CI runs this
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
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import polars as pl  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import Timer, record, table  # noqa: E402
from benchmarks.shape import warmup_pipeline  # noqa: E402
from benchmarks.tpch import landing, landing_size, pipeline  # noqa: E402


def scan(folder: Path, days: int | None) -> pl.LazyFrame:
    files = sorted(str(folder / f) for f in os.listdir(folder) if f.endswith(".parquet"))[:days]
    return pl.scan_parquet(files).with_columns(pl.col("l_shipdate").cast(pl.String).alias("date"))


def raw_delta(folder: Path, out: Path, days: int | None) -> float:
    with Timer() as timer:
        scan(folder, days).sink_delta(str(out), delta_write_options={"partition_by": ["date"]})
    return timer.seconds


def raw_parquet(folder: Path, out: Path, days: int | None) -> float:
    with Timer() as timer:
        scan(folder, days).sink_parquet(
            pl.PartitionBy(str(out), key="date", include_key=False), mkdir=True
        )
    return timer.seconds


def lakeflow_backfill(
    folder: Path, lake: str, select: str, partitions: str | None, address: str | None
) -> float:
    lf.materialize(
        warmup_pipeline(lake), address=address
    )  # its controller starts outside the timing
    with Timer() as timer:
        result = lf.backfill(
            pipeline(folder, lake), select=select, partitions=partitions, address=address
        )
    assert result.ok, result.summary()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="SF 0.1, one month, nothing recorded")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else args.scale
    folder = landing(scale)
    days = 31 if args.quick else None
    files, size = landing_size(folder)
    if days:
        names = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))[:days]
        files, size = len(names), sum((folder / f).stat().st_size for f in names)
    rows = scan(folder, days).select(pl.len()).collect().item()
    first = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))[0].removesuffix(
        ".parquet"
    )
    partitions = f"{first}..{sorted(f for f in os.listdir(folder) if f.endswith('.parquet'))[files - 1].removesuffix('.parquet')}"
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-tpch-"))
    lf.connect(args.address, log_to_driver=False)
    try:
        results = [
            (
                "raw polars: sink_delta, partitioned by day",
                raw_delta(folder, work / "raw-delta", days),
            ),
            (
                "raw polars: Parquet sink, partitioned by day (no log)",
                raw_parquet(folder, work / "raw-parquet", days),
            ),
            (
                "lakeflow backfill: lineitem",
                lakeflow_backfill(
                    folder, str(work / "lake1"), "lineitem", partitions, args.address
                ),
            ),
            (
                "lakeflow backfill: lineitem + daily_revenue",
                lakeflow_backfill(folder, str(work / "lake2"), "*", partitions, args.address),
            ),
        ]
        same = results[0][1]
        body = table(
            ["run", "seconds", "MB/s (landed Parquet)", "rows/s", "throughput vs sink_delta"],
            [
                [name, seconds, size / 1e6 / seconds, rows / seconds, same / seconds]
                for name, seconds in results
            ],
        )
        body += (
            f"\n\nTPC-H SF {scale:g} lineitem: {rows:,} rows in {files:,} daily Parquet files, {size / 1e6:,.0f} MB. "
            f"Each lakeflow unit reads one day's file and writes it as that day's partition (staged, "
            f"audited, group-committed); the mart reads the published day. polars uses one thread per "
            f"Ray worker; the raw runs use every core."
        )
        record(f"Data throughput: TPC-H lineitem backfill, SF {scale:g}", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
