"""TPC-H lineitem for the throughput benchmark: generation with tpchgen-cli, a landing zone of one
Parquet file per ship date (or per ship date and synthetic hour), and the lakeflow pipeline that
backfills it (lineitem by ship date or hour, its Q1 revenue mart at the same grain, and a monthly
roll-up of lineitem)."""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parent / "data"


PART_SCALE = 2  # scale factors per generated part: ~12M line items, ~2 GB once in memory


def landing(scale: float) -> Path:
    """`data/tpch-sf<scale>/landing/<YYYY-MM-DD>.parquet`, generated once and kept.

    tpchgen-cli writes lineitem in parts of at most `PART_SCALE` scale factors; each part is
    split by ship date, then each day's pieces are merged into its file. Memory stays bounded by
    one part whatever the scale (SF 30 read whole would need ~30 GB)."""
    root = DATA / f"tpch-sf{scale:g}"
    folder = root / "landing"
    done = folder / "_complete"
    if done.exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    generator = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    if not Path(generator).exists():
        raise SystemExit("tpchgen-cli is not installed: pip install -e '.[bench]'")
    parts = max(1, math.ceil(scale / PART_SCALE))
    subprocess.run(
        [
            generator, "parquet", "-s", f"{scale:g}", "--tables=lineitem", f"--parts={parts}",
            f"--output-dir={root}", "--overwrite",
        ],
        check=True,
    )  # fmt: skip
    generated, pieces = root / "lineitem", root / "pieces"
    shutil.rmtree(pieces, ignore_errors=True)
    for part in sorted(generated.glob("*.parquet"), key=lambda p: int(p.suffixes[-2][1:])):
        frame = pl.read_parquet(part)
        for (day,), rows in frame.partition_by("l_shipdate", as_dict=True).items():
            (pieces / str(day)).mkdir(parents=True, exist_ok=True)
            rows.write_parquet(pieces / str(day) / part.name)
        part.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for day in sorted(os.listdir(pieces)):
        files = sorted((pieces / day).iterdir(), key=lambda p: int(p.suffixes[-2][1:]))
        pl.read_parquet(files).write_parquet(folder / f"{day}.parquet")
        shutil.rmtree(pieces / day)  # the disk holds the data about once at any time
    pieces.rmdir()
    generated.rmdir()
    done.touch()
    return folder


def hourly_landing(scale: float) -> Path:
    """`data/tpch-sf<scale>/landing-hourly/<YYYY-MM-DDTHH>.parquet`: the daily landing split by
    `HOUR`, made once from it and kept. lineitem has ship dates, no times: the hour is
    synthetic, an even spread of each day's orders over 24 files (~61,000 at any scale)."""
    daily = landing(scale)
    folder = daily.parent / "landing-hourly"
    done = folder / "_complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for day in landed_keys(daily):
        frame = pl.read_parquet(daily / f"{day}.parquet").with_columns(HOUR.alias("_hour"))
        for (hour,), rows in frame.partition_by("_hour", as_dict=True, include_key=False).items():
            rows.write_parquet(folder / f"{day}T{hour:02d}.parquet")
    done.touch()
    return folder


HOUR = pl.col("l_orderkey") % 24  # the synthetic hour of a line item (its order's, so stable)


def landed_keys(folder: Path) -> list[str]:
    """The partition keys the landing holds, in order: `1992-01-02` or `1992-01-02T05`."""
    return sorted(f.removesuffix(".parquet") for f in os.listdir(folder) if f.endswith(".parquet"))


def landing_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) of the landing zone."""
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    return len(files), sum((folder / f).stat().st_size for f in files)


def is_hourly(keys: list[str]) -> bool:
    return "T" in keys[0]


def _after(key: str) -> str:
    """The key of the window after `key` (a day, an hour or a month), as partitions' `end`."""
    if len(key) == 7:  # a month
        year, month = divmod(int(key[:4]) * 12 + int(key[5:7]), 12)
        return f"{year:04d}-{month + 1:02d}"
    unit = dt.timedelta(hours=1) if "T" in key else dt.timedelta(days=1)
    following = dt.datetime.fromisoformat(key if "T" not in key else key + ":00") + unit
    return following.strftime("%Y-%m-%dT%H" if "T" in key else "%Y-%m-%d")


def revenue(lineitem: pl.LazyFrame) -> pl.LazyFrame:
    """TPC-H Q1's measures over the input's line items, per return flag and line status: the
    daily (or hourly) mart of a partition, and the monthly roll-up of a month's partitions."""
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


def pipeline(folder: Path, lake: str, *, sql: bool = False, storage_options=None):
    """lineitem at the landing's grain (daily or hourly), its mart at the same grain
    (`daily_revenue` or `hourly_revenue`) and `monthly_revenue`, a roll-up of lineitem's
    partitions of each month; `sql` adds the daily mart again as a SQL asset (lakeflow[sql])."""
    import lakeflow as lf

    keys = landed_keys(folder)
    grain = lf.HourlyPartitions if is_hourly(keys) else lf.DailyPartitions
    partitions = grain(start=keys[0], end=_after(keys[-1]))
    months = lf.MonthlyPartitions(start=keys[0][:7], end=_after(keys[-1][:7]))
    source, first = str(folder), str(folder / f"{keys[0]}.parquet")

    def lineitem(ctx: lf.Context) -> pl.LazyFrame:
        """The partition's line items as they landed (a missing day or hour has none)."""
        path = f"{source}/{ctx.partition.key}.parquet"
        if os.path.exists(path):
            return pl.scan_parquet(path)
        return pl.scan_parquet(first).head(0)  # the schema, no rows

    mart = "hourly_revenue" if is_hourly(keys) else "daily_revenue"
    assets = [
        lf.asset(lineitem, partitions=partitions),
        lf.asset(revenue, name=mart, partitions=partitions),
        lf.asset(
            revenue, name="monthly_revenue", partitions=months, inputs={"lineitem": lf.rollup()}
        ),
    ]
    if sql:
        assets.append(lf.sql_asset("daily_revenue_sql", DAILY_REVENUE_SQL, partitions=partitions))
    return lf.Pipeline(assets, lake=lake, name="tpch", storage_options=storage_options)


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
