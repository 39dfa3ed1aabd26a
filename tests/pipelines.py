"""Small pipelines the tests run, in an importable module so Ray workers can load them too.

Their behaviour is steered through files in a directory named by `LAKEFLOW_TEST_CONTROL`
(set by a test), e.g. `fail-<asset>-<key>` makes that unit raise, `crash-<asset>-<key>` kills
its worker process once and `hold-<asset>` keeps that asset's units waiting until it is removed (each
waiting unit leaves a `held-<asset>-<key>-<pid>` file).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

import lakeflow as lf

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")
MONTHS = lf.MonthlyPartitions(start="2024-01", end="2024-02")


def control(name: str) -> Path | None:
    root = os.environ.get("LAKEFLOW_TEST_CONTROL")
    path = Path(root) / name if root else None
    return path if path is not None and path.exists() else None


def steer(asset: str, key: str) -> None:
    """Apply the test's instructions for this unit."""
    if (path := control(f"crash-{asset}-{key}")) is not None:
        path.unlink()
        os._exit(1)  # the worker process dies mid-task, once
    if (path := control(f"flaky-{asset}-{key}")) is not None:
        path.unlink()
        raise TimeoutError(f"{asset} {key}: transient failure")
    if control(f"fail-{asset}-{key}") is not None:
        raise ValueError(f"{asset} {key}: bad data")
    if (path := control(f"sleep-{asset}")) is not None:
        time.sleep(float(path.read_text() or "0.2"))
    if (hold := control(f"hold-{asset}")) is not None:  # say so, then wait for the release
        (hold.parent / f"held-{asset}-{key}-{os.getpid()}").touch()
        deadline = time.monotonic() + 300
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


@lf.asset(partitions=DAYS, retry=lf.RetryPolicy(attempts=3, backoff=0.01))
def events(ctx: lf.Context) -> pl.DataFrame:
    steer("events", ctx.partition.key)
    day = ctx.partition.start
    return pl.DataFrame(
        {"user": [f"u{i}" for i in range(4)], "amount": [day.day * 10 + i for i in range(4)]}
    )


@lf.asset(partitions=DAYS, retry=lf.RetryPolicy(attempts=2, backoff=0.01))
def spend(ctx: lf.Context, events: pl.LazyFrame) -> pl.LazyFrame:
    steer("spend", ctx.partition.key)
    return events.group_by("user").agg(pl.col("amount").sum()).sort("user")


@lf.asset(partitions=DAYS, inputs={"spend": lf.lookback(3)})
def spend_3d(ctx: lf.Context, spend: pl.LazyFrame) -> pl.LazyFrame:
    steer("spend_3d", ctx.partition.key)
    return (
        spend.group_by("user")
        .agg(pl.col("amount").sum(), pl.col("date").n_unique().alias("days"))
        .sort("user")
    )


@lf.asset(partitions=MONTHS, inputs={"spend": lf.rollup()})
def spend_monthly(spend: pl.LazyFrame) -> pa.Table:
    return (
        spend.group_by("user")
        .agg(pl.col("amount").sum(), pl.col("date").n_unique().alias("days"))
        .sort("user")
        .collect()
        .to_arrow()
    )


@lf.asset
def users(spend: pl.LazyFrame) -> pl.LazyFrame:
    return spend.select(pl.col("user").unique().sort())


PIPELINE = lf.Pipeline([events, spend, spend_3d, spend_monthly, users], name="spend")


# -- a pipeline with quality gates (tests/test_gates.py) -----------------------------------------
@lf.asset(checks=[lf.unique("customer")])
def customers() -> pl.DataFrame:
    names = ["c1", "c2", "c3"] + (["c1"] if control("dupe-customers") else [])
    return pl.DataFrame({"customer": names})


@lf.asset(
    partitions=DAYS,
    retry=lf.RetryPolicy(attempts=2, backoff=0.01),
    checks=[
        lf.not_null("customer"),
        lf.between("amount", 0, None),
        lf.references("customer", "customers"),
        lf.row_count(min=3, severity="warn"),
    ],
)
def orders(ctx: lf.Context) -> pl.DataFrame:
    key = ctx.partition.key
    steer("orders", key)
    amounts = [10.0, 20.0, -5.0 if control(f"bad-orders-{key}") else 30.0]
    customer = "zz" if control(f"orphan-orders-{key}") else "c3"
    rows = 2 if control(f"short-orders-{key}") else 3
    ctx.log.info("orders %s: %d rows", key, rows)  # captured: the web UI shows it
    frame = pl.DataFrame(
        {
            "order_id": [f"{key}-{i}" for i in range(3)],
            "customer": ["c1", "c2", customer],
            "amount": amounts,
        }
    )
    return frame.head(rows)


@lf.asset(partitions=DAYS)
def order_totals(orders: pl.LazyFrame) -> pl.LazyFrame:
    return orders.group_by("customer").agg(pl.col("amount").sum().alias("total")).sort("customer")


def _entries(ctx: lf.Context, orders: pl.LazyFrame, name: str) -> pl.LazyFrame:
    entries = orders.select("order_id", "amount")
    if control(f"dupe-{name}-{ctx.partition.key}"):  # reuse another day's order id
        entries = entries.with_columns(pl.lit("2024-01-01-0").alias("order_id"))
    if control(f"steal-{name}-{ctx.partition.key}"):  # one row reuses another day's order id
        entries = entries.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("2024-01-01-0"))
            .otherwise(pl.col("order_id")).alias("order_id")
        )  # fmt: skip
    return entries


@lf.asset(partitions=DAYS, checks=[lf.unique("order_id", scope="table")], on_fail="rollback")
def ledger(ctx: lf.Context, orders: pl.LazyFrame) -> pl.LazyFrame:
    return _entries(ctx, orders, "ledger")


@lf.asset(partitions=DAYS, checks=[lf.unique("order_id", scope="table")])
def journal(ctx: lf.Context, orders: pl.LazyFrame) -> pl.LazyFrame:
    return _entries(ctx, orders, "journal")


@lf.asset(partitions=DAYS)
def ledger_daily(ledger: pl.LazyFrame) -> pl.LazyFrame:
    return ledger.select(pl.len().alias("entries"))


@lf.asset(partitions=DAYS)
def journal_daily(journal: pl.LazyFrame) -> pl.LazyFrame:
    return journal.select(pl.len().alias("entries"))


GATED = lf.Pipeline(
    [customers, orders, order_totals, ledger, journal, ledger_daily, journal_daily], name="gated"
)


# -- a pipeline for backfills (tests/test_backfill.py) -------------------------------------------
YEAR = lf.DailyPartitions(start="2023-01-01", end="2024-02-05")  # 400 days


def _span(asset: str, work: float) -> None:
    """Record when this unit ran (for concurrency tests) and take `work` seconds."""
    started = time.time()
    if work:
        time.sleep(work)
    if control("record-spans") is not None:
        with open(
            Path(os.environ["LAKEFLOW_TEST_CONTROL"]) / f"span-{asset}-{started}-{os.getpid()}", "w"
        ) as out:
            out.write(f"{started} {time.time()}")


@lf.asset(partitions=YEAR, retry=lf.RetryPolicy(attempts=1))
def readings(ctx: lf.Context) -> pl.DataFrame:
    steer("readings", ctx.partition.key)
    slow = control("slow-readings")
    _span("readings", float(slow.read_text() or "0.05") if slow is not None else 0.0)
    day = YEAR.index(ctx.partition.key)
    return pl.DataFrame({"sensor": ["a", "b", "c"], "value": [day, day * 2, 1]})


@lf.asset(partitions=YEAR)
def daily_sum(readings: pl.LazyFrame) -> pl.LazyFrame:
    return readings.select(pl.col("value").sum().alias("total"))


@lf.asset(partitions=YEAR, inputs={"running_total": lf.previous()})
def running_total(
    ctx: lf.Context, daily_sum: pl.LazyFrame, running_total: pl.LazyFrame
) -> pl.LazyFrame:
    """Every day's total plus the day before's running total: a chain, link after link. The
    first day has no day before: its input is empty (without columns while the table is new)."""
    before = (
        running_total.collect()["total"].sum() if "total" in running_total.collect_schema() else 0
    )
    return daily_sum.select((pl.col("total") + before).alias("total"))


BACKFILL = lf.Pipeline([readings, daily_sum, running_total], name="backfill")


@lf.asset(partitions=DAYS, resources=lf.Resources(custom={"io": 1}))
def io_heavy(ctx: lf.Context) -> pl.DataFrame:
    return pl.DataFrame({"day": [ctx.partition.key]})


IO = lf.Pipeline([io_heavy], name="io")  # its units need a node with an `io` resource


# -- a pipeline with a unit that may hang (tests/test_timeouts.py) -----------------------------
@lf.asset(partitions=DAYS, timeout=8)  # a cold worker takes seconds to start
def hangs(ctx: lf.Context) -> pl.DataFrame:
    steer("hangs", ctx.partition.key)
    return pl.DataFrame({"n": [1]})


@lf.asset(partitions=DAYS)
def after_hangs(hangs: pl.LazyFrame) -> pl.LazyFrame:
    return hangs


HANGS = lf.Pipeline([hangs, after_hangs], name="hangs")


# -- a pipeline whose units print and log (tests/test_history.py) ------------------------------
@lf.asset(partitions=DAYS, retry=lf.RetryPolicy(attempts=1))
def chatty(ctx: lf.Context) -> pl.DataFrame:
    """Writes to stdout, stderr, `ctx.log` and a module logger; `loud-chatty` (holding a count)
    makes it print that many characters more; `say-chatty` makes it print that file's text."""
    key = ctx.partition.key
    print(f"hello from {key}")
    print(f"a warning on stderr for {key}", file=sys.stderr)
    ctx.log.info("built the rows of %s", key)
    logging.getLogger("tests.chatty").warning("module logger says %s", key)
    if (loud := control("loud-chatty")) is not None:
        for line in range(int(loud.read_text()) // 100):
            print(f"{line:09d} " + "x" * 89)
    if (say := control("say-chatty")) is not None:
        print(say.read_text())
    steer("chatty", key)
    print(f"done {key}")
    return pl.DataFrame({"day": [key]})


CHATTY = lf.Pipeline([chatty], name="chatty")
