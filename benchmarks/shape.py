"""The benchmark work: 3 daily assets over small partitions (source -> clean -> stats), written once
as plain functions so lakeflow, the sequential loop and other orchestrators run the same code."""

from __future__ import annotations

import datetime as dt
import hashlib

import polars as pl

ROWS = 1000


def source_fn(key: str) -> pl.DataFrame:
    seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
    n = pl.int_range(0, ROWS, eager=True)
    return pl.DataFrame({
        "id": n,
        "store": (n * 7 + seed) % 25,
        "amount": ((n * 31 + seed) % 1000).cast(pl.Float64) / 10,
        "ok": ((n + seed) % 17) != 0,
    })  # fmt: skip


def clean_fn(source: pl.LazyFrame) -> pl.LazyFrame:
    return (
        source.filter(pl.col("ok")).with_columns((pl.col("amount") * 1.2).alias("gross")).drop("ok")
    )


def stats_fn(clean: pl.LazyFrame) -> pl.LazyFrame:
    return (
        clean.group_by("store")
        .agg(pl.len().alias("n"), pl.col("gross").sum().alias("gross"))
        .sort("store")
    )


def build_pipeline(days: int, lake: str):
    import lakeflow as lf

    start = dt.date(2024, 1, 1)
    partitions = lf.DailyPartitions(start=str(start), end=str(start + dt.timedelta(days=days)))

    @lf.asset(partitions=partitions)
    def source(ctx: lf.Context) -> pl.DataFrame:
        return source_fn(ctx.partition.key)

    @lf.asset(partitions=partitions)
    def clean(source: pl.LazyFrame) -> pl.LazyFrame:
        return clean_fn(source.drop("date"))

    @lf.asset(partitions=partitions)
    def stats(clean: pl.LazyFrame) -> pl.LazyFrame:
        return stats_fn(clean.drop("date"))

    return lf.Pipeline([source, clean, stats], lake=lake, name="shape")


def warmup_pipeline(lake: str):
    """One small asset on the same lake: starts its controller and the workers' imports, the
    one-time costs a long-lived controller has paid long before a real run."""
    import lakeflow as lf

    @lf.asset(partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-03"))
    def warmup(ctx: lf.Context) -> pl.DataFrame:
        return source_fn(ctx.partition.key)

    return lf.Pipeline([warmup], lake=lake, name="warmup")
