"""TPC-H lineitem for the throughput benchmark: generation with tpchgen-cli, a landing zone of one
Parquet file per ship date, and the lakeflow pipeline that backfills it (lineitem by ship date,
and a daily revenue mart)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parent / "data"


def landing(scale: float) -> Path:
    """`data/tpch-sf<scale>/landing/<YYYY-MM-DD>.parquet`, generated once and kept."""
    root = DATA / f"tpch-sf{scale:g}"
    folder = root / "landing"
    done = folder / "_complete"
    if done.exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    generator = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    if not Path(generator).exists():
        raise SystemExit("tpchgen-cli is not installed: pip install -e '.[bench]'")
    subprocess.run(
        [generator, "parquet", "-s", f"{scale:g}", "--tables=lineitem", f"--output-dir={root}"],
        check=True,
    )
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    # streamed: SF 10's lineitem (60M rows) read whole and split in memory took over 24 GiB
    split = root / "split"
    shutil.rmtree(split, ignore_errors=True)
    pl.scan_parquet(root / "lineitem.parquet").sink_parquet(
        pl.PartitionBy(str(split), key="l_shipdate", include_key=True), mkdir=True
    )
    for day_dir in split.glob("l_shipdate=*"):
        day = day_dir.name.removeprefix("l_shipdate=")
        parts = sorted(day_dir.glob("*.parquet"))
        if len(parts) == 1:
            parts[0].rename(folder / f"{day}.parquet")
        else:  # the sink may cut a large day into several files: one file a day for the landing
            pl.scan_parquet(parts).sink_parquet(folder / f"{day}.parquet")
    shutil.rmtree(split)
    (root / "lineitem.parquet").unlink()
    done.touch()
    return folder


def landing_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) of the landing zone."""
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    return len(files), sum((folder / f).stat().st_size for f in files)


def pipeline(folder: Path, lake: str, *, sql: bool = False):
    """lineitem and its daily mart; `sql` adds the mart again as a SQL asset (lakeflow[sql])."""
    import lakeflow as lf

    days = sorted(f.removesuffix(".parquet") for f in os.listdir(folder) if f.endswith(".parquet"))
    partitions = lf.DailyPartitions(
        start=days[0],
        end=str(pl.Series([days[-1]]).str.to_date()[0] + __import__("datetime").timedelta(days=1)),
    )
    source = str(folder)

    def lineitem(ctx: lf.Context) -> pl.LazyFrame:
        """The day's line items as they landed (a missing day has none)."""
        path = f"{source}/{ctx.partition.key}.parquet"
        if not os.path.exists(path):
            return pl.scan_parquet(next(Path(source).glob("*.parquet"))).head(0)
        return pl.scan_parquet(path)

    def daily_revenue(lineitem: pl.LazyFrame) -> pl.LazyFrame:
        """TPC-H Q1's measures for the day, per return flag and line status."""
        price = pl.col("l_extendedprice").cast(pl.Float64)
        discount = pl.col("l_discount").cast(pl.Float64)
        return (
            lineitem.group_by("l_returnflag", "l_linestatus")
            .agg(
                pl.col("l_quantity").cast(pl.Float64).sum().alias("sum_qty"),
                price.sum().alias("sum_base_price"),
                (price * (1 - discount)).sum().alias("sum_disc_price"),
                pl.len().alias("count_order"),
            )
            .sort("l_returnflag", "l_linestatus")
        )

    assets = [
        lf.asset(lineitem, partitions=partitions),
        lf.asset(daily_revenue, partitions=partitions),
    ]
    if sql:
        assets.append(lf.sql_asset("daily_revenue_sql", DAILY_REVENUE_SQL, partitions=partitions))
    return lf.Pipeline(assets, lake=lake, name="tpch")


# `daily_revenue` in SQL: the same measures and types, for the SQL-asset benchmark (bench_sql.py)
DAILY_REVENUE_SQL = """
select
    l_returnflag,
    l_linestatus,
    sum(cast(l_quantity as double)) as sum_qty,
    sum(cast(l_extendedprice as double)) as sum_base_price,
    sum(cast(l_extendedprice as double) * (1 - cast(l_discount as double))) as sum_disc_price,
    count(*) as count_order
from {{ ref('lineitem') }}
group by l_returnflag, l_linestatus
order by l_returnflag, l_linestatus
"""
