"""SQL assets from the outside: what DuckDB publishes equals the same computation in polars, over
exactly the mapped upstream partitions, in a graph mixed with Python assets; the template's
variables, sources, the whole-table read path, schema evolution and types; S3 and Ray; code
versions; errors at run time (their template lines, the storage's failures); upstreams whose
names differ in case; `sql_assets` folders; the notebook call; DuckDB's resources, a database
per running unit, its spill folder and timeouts; the partition column in an output.

Everything runs on the local executor over tiny frames, apart from one Ray and one S3 test. Bad
definitions through the command line are rows of tests/test_cli_errors.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake
from polars.testing import assert_frame_equal

import lakeflow as lf
from lakeflow.define.sql import SqlError
from tests.conftest import ROOT, assert_status_agrees, eventually, lake_fingerprint

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-07")  # six days
MONTHS = lf.MonthlyPartitions(start="2024-01", end="2024-02")
KEYS = [f"2024-01-0{d}" for d in range(1, 7)]


def orders_of(day: date) -> pl.DataFrame:
    """One day's orders: two to four rows, amounts that depend on the day."""
    n = day.day
    rows = 2 + n % 3
    return pl.DataFrame(
        {"customer": ["ann", "bob", "ann", "cy"][:rows], "amount": [10 * n, 3, n, 7][:rows]}
    )


def all_orders() -> pl.DataFrame:
    """Every day's orders with the partition column, as the published table holds them."""
    return pl.concat([orders_of(date.fromisoformat(k)).with_columns(date=pl.lit(k)) for k in KEYS])


@lf.asset(partitions=DAYS)
def orders(ctx: lf.Context) -> pl.DataFrame:
    return orders_of(ctx.partition.start.date())


REVENUE = """
select customer,
       sum(amount) as revenue,
       count(*) as orders
from {{ ref('orders') }}
group by customer
"""
revenue = lf.sql_asset("revenue", REVENUE, partitions=DAYS)

recent = lf.sql_asset(
    "recent",
    "select list(distinct date order by date) as days_seen, sum(amount) as amount "
    "from {{ ref('orders') }}",
    partitions=DAYS,
    inputs={"orders": lf.lookback(3)},
)

monthly = lf.sql_asset(
    "monthly",
    "select customer, sum(revenue) as revenue, count(distinct date) as days "
    "from {{ ref('revenue') }} group by customer",
    partitions=MONTHS,
    inputs={"revenue": lf.rollup()},
)

total = lf.sql_asset(
    "total",
    "select customer, sum(amount) as amount, count(distinct date) as days "
    "from {{ ref('orders') }} group by customer",
)


@lf.asset(partitions=DAYS)
def day_summary(revenue: pl.LazyFrame) -> pl.LazyFrame:
    """A Python asset reading a SQL asset's output."""
    return revenue.select(pl.col("revenue").sum().alias("total"), pl.len().alias("customers"))


def shop(lake: str, *extra: lf.AssetDef, **assets: lf.AssetDef) -> lf.Pipeline:
    defined = {a.name: a for a in (orders, revenue, recent, monthly, total, day_summary)}
    return lf.Pipeline([*{**defined, **assets}.values(), *extra], lake=lake)


def table(lake: str, name: str, storage_options: dict | None = None) -> pl.DataFrame:
    return pl.read_delta(f"{lake}/{name}", storage_options=storage_options)


def expected_revenue() -> pl.DataFrame:
    return (
        all_orders()
        .group_by("date", "customer")
        .agg(pl.col("amount").sum().alias("revenue"), pl.len().cast(pl.Int64).alias("orders"))
    )


def same_rows(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Equal as sets of rows: same columns (any order), same types, same values."""
    columns = sorted(expected.columns)
    assert sorted(actual.columns) == columns
    assert_frame_equal(actual.select(columns).sort(columns), expected.select(columns).sort(columns))


def assert_shop_tables(lake: str, storage_options: dict | None = None) -> None:
    """Every SQL asset of `shop` holds what the same computation in polars gives."""
    every = all_orders()
    same_rows(table(lake, "revenue", storage_options), expected_revenue())
    totals = every.group_by("customer").agg(
        pl.col("amount").sum(), pl.col("date").n_unique().cast(pl.Int64).alias("days")
    )
    same_rows(table(lake, "total", storage_options), totals)
    months = (
        expected_revenue()
        .group_by("customer")
        .agg(pl.col("revenue").sum(), pl.col("date").n_unique().cast(pl.Int64).alias("days"))
    )
    same_rows(table(lake, "monthly", storage_options), months.with_columns(month=pl.lit("2024-01")))


def test_sql_assets_equal_polars_in_a_mixed_graph(lake):
    pipeline = shop(lake)
    result = lf.materialize(pipeline, executor="local")
    assert result.ok, result.failures()
    assert_shop_tables(lake)
    # lookback(3): each day reads itself and the two days before, clipped at the first day
    seen = table(lake, "recent").sort("date")
    assert seen["days_seen"].to_list() == [KEYS[max(0, i - 2) : i + 1] for i in range(6)]
    every = all_orders()
    assert seen["amount"].to_list() == [
        every.filter(pl.col("date").is_in(KEYS[max(0, i - 2) : i + 1]))["amount"].sum()
        for i in range(6)
    ]
    # a Python asset downstream of a SQL asset
    summary = table(lake, "day_summary")
    expected = (
        expected_revenue()
        .group_by("date")
        .agg(pl.col("revenue").sum().alias("total"), pl.len().cast(pl.Int64).alias("customers"))
    )
    same_rows(summary, expected)
    # one status for the whole graph, and one selection syntax
    rows = {r["asset"]: r for r in lf.status(pipeline).iter_rows(named=True)}
    assert {a: (r["published"], r["stale"], r["missing"]) for a, r in rows.items()} == {
        "orders": (6, 0, 0), "revenue": (6, 0, 0), "recent": (6, 0, 0), "monthly": (1, 0, 0),
        "total": (1, 0, 0), "day_summary": (6, 0, 0),
    }  # fmt: skip
    again = lf.materialize(pipeline, select="revenue+", force=True, executor="local")
    assert again.ok
    ran = again.units.group_by("asset").len()
    assert dict(ran.iter_rows()) == {"revenue": 6, "monthly": 1, "day_summary": 6}
    assert_status_agrees(pipeline)


def produce(lake: str, keys: list[str], *, mode: str = "append", **columns) -> None:
    """An outside producer's commit to the `orders` source: its orders of `keys`."""
    frame = (
        all_orders()
        .filter(pl.col("date").is_in(keys))
        .with_columns(**{name: pl.lit(value) for name, value in columns.items()})
    )
    write_deltalake(
        f"{lake}/orders", frame.to_arrow(), mode=mode, partition_by=["date"], schema_mode="merge"
    )


def test_partition_and_var_render_and_a_source_commit_makes_its_consumer_stale(lake):
    stamp = lf.sql_asset(
        "stamp",
        """
        select '{{ partition.key }}' as key,
               timestamptz '{{ partition.start }}' as window_start,
               timestamptz '{{ partition.end }}' as window_end,
               {{ var('rate') }} * sum(amount) as scaled,
               '{{ var("label", "none") }}' as label,
               count(*) as orders
        from {{ source('shop', 'orders') }}
        """,
        partitions=DAYS,
        vars={"rate": 2},
    )
    pipeline = lf.Pipeline([lf.source("orders", partitions=DAYS), stamp], lake=lake)
    produce(lake, KEYS)
    assert lf.materialize(pipeline, executor="local").ok
    out = table(lake, "stamp").sort("key")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    every = all_orders()
    assert out.rows() == [
        (
            key,
            start + timedelta(days=i),
            start + timedelta(days=i + 1),
            2 * every.filter(pl.col("date") == key)["amount"].sum(),
            "none",
            every.filter(pl.col("date") == key).height,
            key,
        )
        for i, key in enumerate(KEYS)
    ]
    assert out.schema["window_start"] == pl.Datetime("us", "UTC")
    # the producer commits more orders for one day: only that day's consumer is stale
    produce(lake, ["2024-01-02"])
    rows = {r["asset"]: r for r in lf.status(pipeline).iter_rows(named=True)}
    assert (rows["stamp"]["stale"], rows["stamp"]["to_run"]) == (1, 1)
    again = lf.materialize(pipeline, executor="local")
    assert again.counts() == {"fresh": 5, "published": 1}
    day = table(lake, "stamp").filter(pl.col("key") == "2024-01-02").row(0, named=True)
    assert day["orders"] == 2 * every.filter(pl.col("date") == "2024-01-02").height


@pytest.fixture
def sql_inputs(monkeypatch):
    """Records, per SQL unit run, which of its inputs were read as a whole table."""
    from lakeflow.execute import worker

    seen: list[tuple[str, tuple[bool, ...]]] = []
    run = worker._run_unit

    def recording(lake, run_id, pipeline, unit, tag):
        if pipeline.assets[unit.asset].sql is not None:
            seen.append((unit.asset, tuple(spec.whole_table for spec in unit.inputs)))
        return run(lake, run_id, pipeline, unit, tag)

    monkeypatch.setattr(worker, "_run_unit", recording)
    return seen


def test_inputs_of_many_files_read_through_the_whole_table_give_the_same_rows(
    lake, monkeypatch, sql_inputs
):
    monkeypatch.setattr("lakeflow.control.claims.WHOLE_TABLE_FILES", 2)
    result = lf.materialize(shop(lake), executor="local")
    assert result.ok, result.failures()
    assert_shop_tables(lake)
    recent_days = table(lake, "recent").sort("date")["days_seen"].to_list()
    assert recent_days == [KEYS[max(0, i - 2) : i + 1] for i in range(6)]
    whole = {name for name, flags in sql_inputs if any(flags)}
    assert whole == {"recent", "monthly", "total"}  # three or more files each; revenue reads one


@pytest.mark.parametrize("whole_table", [False, True], ids=["files", "whole table"])
def test_files_written_before_a_column_was_added_read_it_as_null(
    lake, monkeypatch, sql_inputs, whole_table
):
    if whole_table:
        monkeypatch.setattr("lakeflow.control.claims.WHOLE_TABLE_FILES", 0)
    produce(lake, KEYS[:3])
    produce(lake, KEYS[3:], coupon="NEW")  # a later commit adds the column
    coupons = lf.sql_asset(
        "coupons",
        "select date, count(*) as orders, count(coupon) as with_coupon "
        "from {{ ref('orders') }} group by date",
    )

    @lf.asset
    def python_coupons(orders: pl.LazyFrame) -> pl.LazyFrame:  # the same, read by polars
        return orders.group_by("date").agg(
            pl.len().cast(pl.Int64).alias("orders"),
            pl.col("coupon").count().cast(pl.Int64).alias("with_coupon"),
        )

    source = lf.source("orders", partitions=DAYS)
    pipeline = lf.Pipeline([source, coupons, python_coupons], lake=lake)
    assert lf.materialize(pipeline, executor="local").ok
    out = table(lake, "coupons").sort("date")
    heights = [all_orders().filter(pl.col("date") == k).height for k in KEYS]
    assert out.rows() == [
        (k, h, h if i >= 3 else 0) for i, (k, h) in enumerate(zip(KEYS, heights, strict=True))
    ]
    assert_frame_equal(table(lake, "python_coupons").sort("date"), out)
    assert sql_inputs == [("coupons", (whole_table,))]


def test_a_file_the_storage_lost_is_a_lake_error_and_retried_not_the_sqls(lake):
    """DuckDB failing to read an upstream's file is the storage's failure: retried as one, and
    reported as one rather than as an error in the asset's SQL."""
    once = lf.RetryPolicy(attempts=2, backoff=0, retry_on=(TimeoutError,))  # SQL errors: no retry
    reads = lf.sql_asset("reads", REVENUE, partitions=DAYS, retry=once)
    pipeline = lf.Pipeline([orders, reads], lake=lake)
    assert lf.materialize(pipeline, select="orders", partitions="2024-01-02", executor="local").ok
    (lost,) = (Path(lake) / "orders" / "date=2024-01-02").glob("*.parquet")
    lost.unlink()
    before = lake_fingerprint(lake)
    result = lf.materialize(pipeline, select="reads", partitions="2024-01-02", executor="local")
    (row,) = result.units.select("attempts", "error").rows()
    assert row[0] == 2, row
    assert row[1].startswith("LakeError: ") and str(lost) in row[1], row
    assert lake_fingerprint(lake) == before


TYPED = pl.DataFrame(
    {
        "ts": [datetime(2024, 1, 2, 23, 30, tzinfo=UTC), None],
        "day": [date(2024, 1, 2), None],
        "price": [Decimal("12.34"), None],
        "paid": [True, None],
        "note": ["é, ünïcode", None],
        "n": [2**40, None],
    },
    schema={
        "ts": pl.Datetime("us", "UTC"), "day": pl.Date, "price": pl.Decimal(10, 2),
        "paid": pl.Boolean, "note": pl.String, "n": pl.Int64,
    },
)  # fmt: skip


@lf.asset(partitions=DAYS)
def typed() -> pl.DataFrame:
    return TYPED


def test_types_round_trip_through_duckdb(lake):
    copied = lf.sql_asset(
        "copied",
        "select *, ts::date as ts_day, date_trunc('day', ts) as ts_midnight "
        "from {{ ref('typed') }}",
        partitions=DAYS,
    )
    summed = lf.sql_asset(
        "summed",
        "select sum(n) as n_sum, sum(n) * 0 + 1 as one, sum(price) as price_sum, "
        "count(*) as rows from {{ ref('typed') }}",
        partitions=DAYS,
    )
    pipeline = lf.Pipeline([typed, copied, summed], lake=lake)
    assert lf.materialize(pipeline, partitions="2024-01-02", executor="local").ok
    out = table(lake, "copied")
    assert_frame_equal(out.select(TYPED.columns), TYPED)
    # DuckDB's session time zone is UTC whatever the machine's: 23:30 UTC is still the 2nd
    assert out["ts_day"].to_list() == [date(2024, 1, 2), None]
    assert out["ts_midnight"].to_list() == [datetime(2024, 1, 2, tzinfo=UTC), None]
    assert out.schema["ts_midnight"] == pl.Datetime("us", "UTC")
    # sum(BIGINT) is a HUGEINT in DuckDB: stored as a 64-bit integer, as polars would sum
    sums = table(lake, "summed")
    assert sums.schema["n_sum"] == pl.Int64 and sums.schema["one"] == pl.Int64
    expected = (2**40, 1, Decimal("12.34"), 2)
    assert sums.select("n_sum", "one", "price_sum", "rows").row(0) == expected


def test_a_sum_beyond_bigint_is_an_error_naming_the_column_and_a_cast_keeps_it(lake):
    big = "select sum(x) as {name} from (select 9223372036854775807 as x union all select 1)"
    overflow = lf.sql_asset("overflow", big.format(name="total"))
    kept = lf.sql_asset("kept", big.format(name="total").replace("sum(x)", "sum(x)::double"))
    result = lf.materialize(lf.Pipeline([overflow, kept], lake=lake), executor="local")
    errors = dict(result.units.select("asset", "error").iter_rows())
    assert errors["kept"] is None and table(lake, "kept")["total"].to_list() == [2.0**63]
    assert "column 'total' is a HUGEINT" in errors["overflow"]
    assert "cast it to DOUBLE or DECIMAL(38, 0)" in errors["overflow"]
    assert not (Path(lake) / "overflow").exists()


def test_duckdb_types_delta_lacks_are_stored_as_polars_would_or_refused_by_name(lake):
    kinds = lf.sql_asset(
        "kinds",
        "select 200::utinyint as u8, 60000::usmallint as u16, 4000000000::uinteger as u32, "
        "hash(42) as u64, {'total': sum(x), 'parts': [sum(x)]} as nested, "
        "map(['n'], [sum(x)]) as by_name from range(3) t(x)",
    )
    refused = {
        "hashed": "select hash('x') as h",
        "waited": "select timestamp '2024-01-02' - timestamp '2024-01-01' as waited",
        "deep": "select {'sums': [9223372036854775807::hugeint + 1]} as deep",
    }
    bad = [lf.sql_asset(name, sql) for name, sql in refused.items()]
    result = lf.materialize(lf.Pipeline([kinds, *bad], lake=lake), executor="local")
    out = table(lake, "kinds")
    assert out.schema == {
        "u8": pl.Int16, "u16": pl.Int32, "u32": pl.Int64, "u64": pl.Int64,
        "nested": pl.Struct({"total": pl.Int64, "parts": pl.List(pl.Int64)}),
        "by_name": pl.Map(pl.String, pl.Int64),
    }  # fmt: skip
    assert out.row(0) == (
        200, 60000, 4000000000, 7199933130570745587, {"total": 3, "parts": [3]}, {"n": 3},
    )  # fmt: skip
    errors = dict(result.units.select("asset", "error").iter_rows())
    hashed = "column 'h' is a UBIGINT (hash() gives one, say) holding a value beyond BIGINT"
    assert hashed in errors["hashed"]
    assert "column 'waited' is an INTERVAL, which a Delta table cannot store" in errors["waited"]
    assert "date_diff('second', start, end)" in errors["waited"]
    assert "column 'deep' (at deep.sums[]) is a HUGEINT" in errors["deep"]
    assert sorted(lake_fingerprint(lake)) == ["kinds"]


def test_the_session_time_zone_is_utc_whatever_the_machines(tmp_path):
    """On a machine set to Los Angeles, 01:30 UTC on the 3rd is still the 3rd: DuckDB's default
    session zone, the machine's, would make its day the 2nd and zone the timestamps there."""
    script = (
        "import polars as pl, lakeflow as lf\n"
        "days = lf.DailyPartitions(start='2024-01-01', end='2024-01-07')\n"
        "q = lf.sql_asset('q', \"select ts::date as day, date_trunc('day', ts) as midnight, "
        "ts from {{ ref('t') }}\", partitions=days)\n"
        "t = pl.DataFrame({'ts': ['2024-01-03 01:30:00']}).select("
        "pl.col('ts').str.to_datetime(time_zone='UTC'))\n"
        "out = q(t=t, partition='2024-01-03')\n"
        "print(out.schema['midnight'], out.row(0))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TZ": "America/Los_Angeles", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "Datetime(time_unit='us', time_zone='UTC') (datetime.date(2024, 1, 3), "
        "datetime.datetime(2024, 1, 3, 0, 0, tzinfo=zoneinfo.ZoneInfo(key='UTC')), "
        "datetime.datetime(2024, 1, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo(key='UTC')))"
    )


def test_a_sql_asset_over_a_python_asset_on_s3(s3_lake):
    url, options = s3_lake
    pipeline = lf.Pipeline([orders, revenue, total], lake=url, storage_options=options)
    result = lf.materialize(pipeline, executor="local")
    assert result.ok, result.failures()
    same_rows(table(url, "revenue", options), expected_revenue())
    assert table(url, "total", options)["amount"].sum() == all_orders()["amount"].sum()


def test_a_sql_asset_runs_in_a_ray_worker(ray_session, lake):
    pipeline = lf.Pipeline([orders, revenue, monthly], lake=lake)
    result = lf.materialize(pipeline)
    assert result.ok, result.failures()
    same_rows(table(lake, "revenue"), expected_revenue())
    assert table(lake, "monthly")["revenue"].sum() == all_orders()["amount"].sum()


def status_of(pipeline: lf.Pipeline) -> dict[str, tuple[int, int, int]]:
    """Per asset: (stale, code_changed, to_run)."""
    return {
        r["asset"]: (r["stale"], r["code_changed"], r["to_run"])
        for r in lf.status(pipeline).iter_rows(named=True)
    }


def test_editing_one_sql_asset_makes_only_its_partitions_and_their_consumers_stale(lake):
    assert lf.materialize(shop(lake), executor="local").ok
    same = lf.sql_asset("revenue", REVENUE, partitions=DAYS)  # declared again, the same SQL
    assert same.code_version == revenue.code_version
    assert lf.materialize(shop(lake, revenue=same), executor="local").counts() == {"fresh": 26}
    edited = lf.sql_asset("revenue", REVENUE.replace("count(*)", "count(amount)"), partitions=DAYS)
    assert edited.code_version != revenue.code_version
    pipeline = shop(lake, revenue=edited)
    assert status_of(pipeline) == {
        "orders": (0, 0, 0), "revenue": (6, 6, 6), "recent": (0, 0, 0), "total": (0, 0, 0),
        # its consumers are stale through it, not for their own code
        "monthly": (1, 0, 1), "day_summary": (6, 0, 6),
    }  # fmt: skip
    result = lf.materialize(pipeline, executor="local")
    published = result.units.filter(pl.col("outcome") == "published").group_by("asset").len()
    assert dict(published.iter_rows()) == {"revenue": 6, "monthly": 1, "day_summary": 6}
    assert result.counts() == {"fresh": 13, "published": 13}
    assert set(status_of(pipeline).values()) == {(0, 0, 0)}


def test_a_var_moves_the_code_version_of_the_assets_that_read_it():
    def declare(**variables):
        reads = lf.sql_asset("reads", "select {{ var('rate') }} as rate", vars=variables)
        ignores = lf.sql_asset("ignores", "select 1 as one", vars=variables)
        branch = lf.sql_asset(  # the placeholder partition never takes the branch with the var
            "branch",
            "select {% if partition.key == 'x' %}{{ var('rate') }}{% else %}1{% endif %} as r",
            vars=variables,
        )
        return reads.code_version, ignores.code_version, branch.code_version

    base = declare(rate=1, other=1)
    assert declare(rate=1, other=1) == base
    assert declare(rate=1, other=2) == base  # a var none of them reads
    moved = declare(rate=2, other=1)
    assert (moved[0] != base[0], moved[1] == base[1], moved[2] != base[2]) == (True, True, True)


def test_an_edit_in_a_branch_the_placeholder_partition_skips_moves_the_code_version():
    template = (
        "select {% if partition.start.year >= 2024 %}2{% else %}1{% endif %} as generation "
        "from {{ ref('orders') }}"
    )

    def version(sql: str) -> str:
        return lf.sql_asset("generation", sql, partitions=DAYS).code_version

    assert version(template) == version(template)  # declared again: not stale
    assert version(template.replace("2{%", "3{%")) != version(template)


def test_upstreams_whose_names_differ_only_in_case_are_read_apart(lake):
    """DuckDB's names ignore case; asset names do not."""

    @lf.asset
    def Orders() -> pl.DataFrame:  # an upper-case name: the point of the test
        return pl.DataFrame({"amount": [100, 200]})

    @lf.asset(name="orders")
    def small_orders() -> pl.DataFrame:
        return pl.DataFrame({"amount": [1, 2]})

    both = lf.sql_asset(
        "both",
        "select (select sum(amount) from {{ ref('orders') }}) as lower, "
        "(select sum(amount) from {{ ref('Orders') }}) as upper",
    )
    wrong = lf.sql_asset(
        "wrong", "select amount, nope from {{ ref('Orders') }}, {{ ref('orders') }}"
    )
    pipeline = lf.Pipeline([Orders, small_orders, both, wrong], lake=lake)
    result = lf.materialize(pipeline, executor="local")
    assert table(lake, "both").rows() == [(3, 300)]
    assert both(
        orders=pl.DataFrame({"amount": [5]}), Orders=pl.DataFrame({"amount": [7]})
    ).rows() == [(5, 7)]
    # DuckDB's messages speak of the assets, not of the names lakeflow gave their views
    (error,) = result.failures()["error"].to_list()
    assert 'Binder Error: Ambiguous reference to column name "amount"' in error
    assert "#" not in error, error


def test_a_missing_column_fails_its_units_with_the_file_line_and_duckdbs_message(lake, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.sql").write_text(
        "select customer,\n       amount * discount as net\nfrom {{ ref('orders') }}\n"
    )
    (broken,) = lf.sql_assets(models, partitions=DAYS)
    pipeline = lf.Pipeline([orders, revenue, broken], lake=lake)
    assert lf.materialize(pipeline, select="orders", executor="local").ok
    before = lake_fingerprint(lake)
    result = lf.materialize(pipeline, select="revenue,broken", executor="local")
    outcomes = dict(
        result.units.group_by("asset", "outcome").len().select("asset", "outcome").iter_rows()
    )
    assert outcomes == {"revenue": "published", "broken": "failed"}  # the others are unaffected
    errors = result.failures()["error"].unique().to_list()
    assert len(errors) == 1
    assert errors[0].startswith(f"SqlError: {models / 'broken.sql'}, line 2: Binder Error: ")
    assert 'Referenced column "discount" not found' in errors[0]
    after = lake_fingerprint(lake)
    assert "broken" not in after and after["orders"] == before["orders"]
    # the unit's record shows DuckDB's message and the SQL line, not lakeflow's frames
    from lakeflow.lake import Lake
    from lakeflow.lake.events import read_events

    failed = read_events(Lake(lake), run_id=result.run_id, kinds=["unit_failed"])
    detail = failed["detail"][0]
    assert "LINE 2:        amount * discount as net" in detail
    assert "lakeflow/" not in detail and 'File "' not in detail, detail


def test_an_error_on_a_long_line_joined_by_jinja_is_placed_on_its_template_line():
    """DuckDB shows a window of a long rendered line; the caret under it still finds the
    template line the text came from (the CLI rows test the short ones)."""
    template = (
        "select {%- for i in range(40) %} {{ i }} as c{{ i }},{% endfor %}\n"
        "{#- the loop's columns end here -#}\n"
        "  nope as x from {{ ref('orders') }}"
    )
    wide = lf.sql_asset("wide", template)
    with pytest.raises(SqlError) as error:
        wide(orders=orders_of(date(2024, 1, 2)))
    assert ', line 3: Binder Error: Referenced column "nope" not found' in str(error.value)
    assert "LINE 1: ..." in str(error.value)  # the rendered line, cut to a window


def test_a_folder_of_sql_files_with_partitions_per_asset(lake, tmp_path):
    models = tmp_path / "models"
    (models / "marts").mkdir(parents=True)
    (models / "revenue.sql").write_text(REVENUE)
    (models / "marts" / "monthly.sql").write_text(
        "-- a month of daily revenue\n"
        "select customer, sum(revenue) as revenue from {{ ref('revenue') }} group by customer\n"
    )
    (models / "marts" / "customers.sql").write_text(
        "select distinct customer from {{ ref('revenue') }}"
    )
    assets = lf.sql_assets(
        models,
        partitions=DAYS,
        overrides={
            "monthly": {"partitions": MONTHS, "inputs": {"revenue": lf.rollup()}},
            "customers": {"partitions": None},
        },
    )
    assert [a.name for a in assets] == ["customers", "monthly", "revenue"]
    pipeline = lf.Pipeline([orders, *assets], lake=lake)
    assert lf.materialize(pipeline, executor="local").ok
    parts = {r["asset"]: r["partitions"] for r in lf.status(pipeline).iter_rows(named=True)}
    assert parts == {"orders": 6, "revenue": 6, "monthly": 1, "customers": 1}
    same_rows(table(lake, "revenue"), expected_revenue())
    months = expected_revenue().group_by("customer").agg(pl.col("revenue").sum())
    same_rows(table(lake, "monthly"), months.with_columns(month=pl.lit("2024-01")))
    assert sorted(table(lake, "customers")["customer"]) == ["ann", "bob", "cy"]
    assert pipeline["monthly"].description == f"SQL: {models / 'marts' / 'monthly.sql'}"


def test_calling_a_sql_asset_in_a_notebook_gives_what_the_run_published(lake):
    pipeline = lf.Pipeline([orders, revenue], lake=lake)
    assert lf.materialize(pipeline, executor="local").ok
    day = "2024-01-02"
    frame = table(lake, "orders").filter(pl.col("date") == day)
    computed = revenue(orders=frame, partition=day)
    assert isinstance(computed, pl.DataFrame)
    published = table(lake, "revenue").filter(pl.col("date") == day).drop("date")
    same_rows(computed, published)
    assert computed.schema["revenue"] == pl.Int64
    # lazy frames and Arrow tables too; the key's window renders as in a run
    window = lf.sql_asset(
        "window", "select timestamptz '{{ partition.end }}' - timestamptz "
        "'{{ partition.start }}' = interval 1 day as one_day from {{ ref('orders') }} limit 1",
        partitions=DAYS,
    )  # fmt: skip
    assert window(orders=frame.lazy(), partition=day)["one_day"].to_list() == [True]
    assert window(orders=frame.to_arrow(), partition=day)["one_day"].to_list() == [True]
    with pytest.raises(lf.PartitionError, match="asset window is partitioned"):
        window(orders=frame)
    with pytest.raises(lf.PartitionError):
        window(orders=frame, partition="2023-12-31")
    with pytest.raises(lf.DefinitionError, match="asset window reads orders"):
        window(partition=day)


def test_duckdb_gets_the_units_cpus_and_memory(lake):
    settings = lf.sql_asset(
        "settings",
        "select current_setting('threads') as threads, "
        "current_setting('memory_limit') as memory_limit, "
        "current_setting('TimeZone') as time_zone",
        resources=lf.Resources(num_cpus=2, memory=512 * 2**20),
    )
    assert lf.materialize(lf.Pipeline([settings], lake=lake), executor="local").ok
    assert table(lake, "settings").row(0) == (2, "512.0 MiB", "UTC")


def test_units_running_at_once_each_get_a_database_of_their_own(lake, monkeypatch):
    """DuckDB's memory limit holds for a database: two units sharing one would share one unit's
    memory. Two units are held until both have their connection, so that they run at once."""
    from lakeflow.execute import sql as execute_sql

    both = threading.Barrier(2, timeout=30)
    connect = execute_sql.connect

    def at_once(**size):
        connection = connect(**size)
        both.wait()
        return connection

    monkeypatch.setattr(execute_sql, "connect", at_once)
    settings = lf.sql_asset(
        "settings",
        "select current_setting('temp_directory') as scratch, "
        "current_setting('memory_limit') as memory_limit",
        partitions=DAYS,
        resources=lf.Resources(memory=256 * 2**20),
    )
    pipeline = lf.Pipeline([settings], lake=lake)
    options = lf.ControllerOptions(max_in_flight=2)
    two = "2024-01-01..2024-01-02"
    run = lf.materialize(pipeline, partitions=two, executor="local", options=options)
    assert run.ok, run.failures()
    first = table(lake, "settings")
    assert first["memory_limit"].to_list() == ["256.0 MiB"] * 2
    assert first["scratch"].n_unique() == 2  # two databases
    # and a database spills into a folder of lakeflow's, not into the working directory
    assert all(Path(p).parent.name.startswith("lakeflow-duckdb-") for p in first["scratch"])
    again = lf.materialize(pipeline, partitions=two, force=True, executor="local", options=options)
    assert again.ok  # the databases are used again, one unit at a time
    assert set(table(lake, "settings")["scratch"]) == set(first["scratch"])


def test_duckdb_spills_outside_the_working_directory_and_its_folder_goes_at_exit(
    lake, tmp_path, monkeypatch
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    spills = lf.sql_asset(  # a sort of 3 million rows in 100 MiB: DuckDB writes to disk
        "spills",
        "select i from range(3000000) t(i) order by hash(i) limit 1 offset 2999999",
        resources=lf.Resources(memory=100 * 2**20),
    )
    assert lf.materialize(lf.Pipeline([spills], lake=lake), executor="local").ok
    assert list(work.iterdir()) == []  # DuckDB's default: a .tmp folder here
    script = (
        "from lakeflow.define.sql import connect\n"
        "print(connect().execute(\"select current_setting('temp_directory')\").fetchone()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scratch = Path(done.stdout.strip())
    assert scratch.parent.name.startswith("lakeflow-duckdb-")
    assert not scratch.parent.exists()  # removed when the process exited


def test_a_sql_unit_past_its_timeout_on_the_local_executor_stops_its_query(lake):
    forever = lf.sql_asset(  # a trillion rows: hours
        "forever", "select sum(i) as total from range(1000000000000) t(i)", timeout=1
    )
    before = set(threading.enumerate())
    result = lf.materialize(lf.Pipeline([forever], lake=lake), executor="local")
    assert "did not finish within its timeout of 1s" in result.failures()["error"][0]
    started = [t for t in threading.enumerate() if t not in before and t.name == "lakeflow-unit"]

    def stopped() -> bool:
        """the unit's thread ended: DuckDB was interrupted"""
        return not any(thread.is_alive() for thread in started)

    eventually(stopped, timeout=20)
    assert not (Path(lake) / "forever").exists()


def test_checks_gate_a_sql_assets_output_before_it_is_published(lake):
    gated = lf.sql_asset(
        "gated",
        "select customer, sum(amount) as revenue from {{ ref('orders') }} group by customer "
        "union all select 'zed', 1 where '{{ partition.key }}' = '2024-01-03'",
        partitions=DAYS,
        checks=[lf.references("customer", "orders"), lf.not_null("revenue")],
    )

    @lf.asset(partitions=DAYS)
    def downstream(gated: pl.LazyFrame) -> pl.LazyFrame:
        return gated.select(pl.len())

    pipeline = lf.Pipeline([orders, gated, downstream], lake=lake)
    result = lf.materialize(pipeline, executor="local")
    outcomes = {
        (a, p): o for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()
    }
    assert outcomes[("gated", "2024-01-03")] == "check_failed"
    assert outcomes[("downstream", "2024-01-03")] == "blocked"
    assert (
        outcomes[("gated", "2024-01-02")] == outcomes[("downstream", "2024-01-02")] == "published"
    )
    assert "zed" not in table(lake, "gated")["customer"].to_list()
    failed = result.checks(failed=True)
    assert failed.select("asset", "partition").rows() == [("gated", "2024-01-03")]


def test_a_null_in_the_partition_column_is_refused_like_another_key(lake):
    """A Python or SQL asset returning the partition column must hold the unit's key in every
    row: a null there would be dropped with the column, its row published under the key."""

    @lf.asset(partitions=DAYS)
    def python_nulls(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"date": [ctx.partition.key, None], "x": [1, 2]})

    sql_nulls = lf.sql_asset(
        "sql_nulls",
        "select '{{ partition.key }}' as date, 1 as x union all select null, 2",
        partitions=DAYS,
    )
    pipeline = lf.Pipeline([python_nulls, sql_nulls], lake=lake)
    result = lf.materialize(pipeline, partitions="2024-01-02", executor="local")
    errors = dict(result.units.select("asset", "error").iter_rows())
    for asset in ("python_nulls", "sql_nulls"):
        assert errors[asset].startswith(
            f"SchemaError: asset {asset} partition 2024-01-02: column 'date' is the partition "
            "column but holds nulls or values other than '2024-01-02'"
        ), errors
    assert lake_fingerprint(lake) == {}
