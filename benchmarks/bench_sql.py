"""SQL assets against the same work in polars: TPC-H lineitem's daily Q1 mart (one unit per ship
date, ~2,500 at SF 1) computed by a polars asset and by a SQL asset (DuckDB inside the unit's
task), over the same published lineitem, in one run, alternating; plus DuckDB and polars alone
running the whole mart as one query over the landed files, for scale. The two marts' rows are
compared before any figure is recorded.

    python benchmarks/bench_sql.py                 # SF 1
    python benchmarks/bench_sql.py --quick         # one month of SF 0.1; CI runs this
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

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import Timer, record, table  # noqa: E402
from benchmarks.shape import warmup_pipeline  # noqa: E402
from benchmarks.tpch import landing, pipeline  # noqa: E402

MEASURES = ["sum_qty", "sum_base_price", "sum_disc_price", "count_order"]


def one_query_polars(files: list[str]) -> float:
    price = pl.col("l_extendedprice").cast(pl.Float64)
    with Timer() as timer:
        pl.scan_parquet(files).group_by("l_shipdate", "l_returnflag", "l_linestatus").agg(
            pl.col("l_quantity").cast(pl.Float64).sum().alias("sum_qty"),
            price.sum().alias("sum_base_price"),
            (price * (1 - pl.col("l_discount").cast(pl.Float64))).sum().alias("sum_disc_price"),
            pl.len().alias("count_order"),
        ).collect()
    return timer.seconds


def one_query_duckdb(files: list[str]) -> float:
    with Timer() as timer:
        duckdb.sql(
            "select l_shipdate, l_returnflag, l_linestatus, sum(cast(l_quantity as double)), "
            "sum(cast(l_extendedprice as double)), "
            "sum(cast(l_extendedprice as double) * (1 - cast(l_discount as double))), count(*) "
            f"from read_parquet({files!r}) group by all"
        ).fetchall()
    return timer.seconds


def same_rows(lake: str) -> None:
    """The SQL mart holds what the polars mart holds (sums to 1e-9 relative: summation order)."""
    keys = ["date", "l_returnflag", "l_linestatus"]
    python = pl.read_delta(f"{lake}/daily_revenue").sort(keys)
    sql = pl.read_delta(f"{lake}/daily_revenue_sql").sort(keys)
    assert python.select(keys).equals(sql.select(keys)), "the marts' keys differ"
    assert python.schema == sql.schema, (python.schema, sql.schema)
    for name in MEASURES:
        a, b = python[name].cast(pl.Float64), sql[name].cast(pl.Float64)
        assert ((a - b).abs() <= 1e-9 * a.abs().clip(lower_bound=1)).all(), name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="SF 0.1, one month, nothing recorded")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each mart")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args()
    scale = 0.1 if args.quick else args.scale
    rounds = 1 if args.quick else args.rounds
    folder = landing(scale)
    names = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    names = names[:31] if args.quick else names
    files = [str(folder / name) for name in names]
    partitions = f"{names[0].removesuffix('.parquet')}..{names[-1].removesuffix('.parquet')}"
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-sql-"))
    lake = str(work / "lake")
    lf.connect(args.address, log_to_driver=False)
    try:
        lf.materialize(warmup_pipeline(lake), address=args.address)  # controller, worker imports
        marts = pipeline(folder, lake, sql=True)
        landed = lf.backfill(marts, select="lineitem", partitions=partitions, address=args.address)
        assert landed.ok, landed.summary()
        seconds: dict[str, list[float]] = {"daily_revenue": [], "daily_revenue_sql": []}
        for _ in range(rounds):
            for mart in seconds:  # alternating: the host's noise falls on both
                with Timer() as timer:
                    result = lf.backfill(
                        marts, select=mart, partitions=partitions, only="all", address=args.address
                    )
                assert result.ok, result.summary()
                seconds[mart].append(timer.seconds)
        same_rows(lake)
        polars_alone, duckdb_alone = one_query_polars(files), one_query_duckdb(files)
        units = len(names)
        best = {mart: min(times) for mart, times in seconds.items()}
        rows = [
            ["lakeflow, polars asset", units, best["daily_revenue"], units / best["daily_revenue"], 1.0],
            [
                "lakeflow, SQL asset (DuckDB)", units, best["daily_revenue_sql"],
                units / best["daily_revenue_sql"], best["daily_revenue"] / best["daily_revenue_sql"],
            ],
            ["polars alone, one query, nothing written", 1, polars_alone, "", ""],
            ["DuckDB alone, one query, nothing written", 1, duckdb_alone, "", ""],
        ]  # fmt: skip
        body = table(["run", "units", "seconds (best)", "units/s", "vs polars asset"], rows)
        body += (
            f"\n\nTPC-H SF {scale:g} lineitem, {units:,} ship dates: the daily Q1 mart as a polars "
            f"asset and as a SQL asset over the same published lineitem, each backfilled "
            f"{rounds} time(s) alternating (best shown; all: "
            + ", ".join(f"{m} {' / '.join(f'{s:.2f}' for s in t)} s" for m, t in seconds.items())
            + "). Both marts' rows are compared equal first. Each unit reads one day's published "
            "files, computes, stages, audits and is group-committed; 'alone' is the engine over "
            "all landed files at once, with no lake and no per-day units."
        )
        record(f"SQL assets: TPC-H daily Q1 mart, SF {scale:g}", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
