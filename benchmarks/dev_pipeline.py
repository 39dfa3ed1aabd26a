"""The pipeline bench_dev.py serves: a year of small daily partitions and a downstream copy."""

from __future__ import annotations

import polars as pl

import lakeflow as lf

DAYS = lf.DailyPartitions(start="2024-01-01", end="2025-01-01")


@lf.asset(partitions=DAYS)
def readings(ctx: lf.Context) -> pl.DataFrame:
    return pl.DataFrame({"sensor": ["a", "b", "c"], "value": [ctx.partition.start.day, 2, 3]})


@lf.asset(partitions=DAYS)
def totals(readings: pl.LazyFrame) -> pl.LazyFrame:
    return readings.group_by("sensor").agg(pl.col("value").sum())


PIPELINE = lf.Pipeline([readings, totals], lake="./lake", name="dev_bench")
