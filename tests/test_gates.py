"""Write-audit-publish: a unit whose blocking check fails is never committed, its output is
quarantined, its consumers are blocked; table checks hold consumers or roll the table back."""

import json
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import lake_fingerprint, status_agrees_after
from tests.pipelines import GATED

DAYS = "2024-01-01..2024-01-03"


@pytest.fixture(autouse=True)
def _status_agrees_with_the_dry_run(request, tmp_path):
    yield
    status_agrees_after(request, GATED, tmp_path)


def run(lake, select="*", partitions=DAYS, **options):
    options.setdefault("executor", "local")
    return lf.materialize(GATED, select=select, partitions=partitions, lake=lake, **options)


def outcomes(result):
    return {
        (a, p): o for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()
    }


def table_files(lake, asset):
    return sorted(
        str(p.relative_to(Path(lake) / asset)) for p in (Path(lake) / asset).rglob("*.parquet")
    )


def test_a_failing_check_leaves_the_table_as_it_was_and_blocks_consumers(lake, control):
    assert run(lake).ok
    before = lake_fingerprint(lake)
    files_before = table_files(lake, "orders")
    (control / "bad-orders-2024-01-02").touch()
    result = run(lake, select="orders+", partitions="2024-01-02", force=True)
    assert not result.ok
    got = outcomes(result)
    assert got[("orders", "2024-01-02")] == "check_failed"
    for asset in ("order_totals", "ledger", "journal", "ledger_daily", "journal_daily"):
        assert got[(asset, "2024-01-02")] == "blocked"
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert "between(amount, 0, None) failed: 1 of 3 rows" in error and "amount=-5.0" in error
    # no reader can see the bad rows: same versions, same files, the old data
    assert lake_fingerprint(lake) == before
    assert table_files(lake, "orders") == files_before  # the staged file left the table directory
    old = pl.read_delta(f"{lake}/orders").filter(pl.col("date") == "2024-01-02")
    assert old["amount"].to_list() == [10.0, 20.0, 30.0]
    folder = Path(lake) / "_lakeflow" / "quarantine" / "orders" / "2024-01-02" / result.run_id
    (quarantined,) = folder.glob("*.parquet")
    assert pl.read_parquet(quarantined)["amount"].to_list() == [10.0, 20.0, -5.0]


def test_a_unit_held_by_its_check_runs_with_its_consumers_once_fixed(lake, control):
    (control / "bad-orders-2024-01-03").touch()
    first = run(lake)
    assert outcomes(first)[("orders", "2024-01-03")] == "check_failed"
    assert outcomes(first)[("journal_daily", "2024-01-03")] == "blocked"
    assert outcomes(first)[("journal_daily", "2024-01-02")] == "published"
    rows = {r["asset"]: r for r in lf.status(GATED, lake=lake).iter_rows(named=True)}
    assert (
        rows["orders"]["check_failed"] == 1
        and rows["ledger"]["blocked"] == 1
        and rows["orders"]["published"] == 2
    )
    (control / "bad-orders-2024-01-03").unlink()
    fixed = run(lake)
    published = sorted(a for (a, p), o in outcomes(fixed).items() if o == "published")
    assert published == sorted(
        ["orders", "order_totals", "ledger", "journal", "ledger_daily", "journal_daily"]
    )
    rows = {r["asset"]: r for r in lf.status(GATED, lake=lake).iter_rows(named=True)}
    assert (
        rows["orders"]["check_failed"] == 0
        and rows["ledger"]["blocked"] == 0
        and rows["orders"]["published"] == 3
    )


def test_a_warn_check_publishes_and_records(lake, control):
    (control / "short-orders-2024-01-02").touch()
    result = run(lake, select="customers,orders")
    assert result.ok
    checks = lf.check_results(GATED, lake=lake, asset="orders", failed=True)
    (row,) = checks.iter_rows(named=True)
    assert (row["partition"], row["check"], row["severity"], row["status"]) == (
        "2024-01-02",
        "row_count(3, None)",
        "warn",
        "failed",
    )
    assert pl.read_delta(f"{lake}/orders").filter(pl.col("date") == "2024-01-02").height == 2


def test_every_check_result_is_an_event(lake, control):
    result = run(lake, select="customers,orders", partitions="2024-01-01")
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id).filter(
        pl.col("kind") == "check_result"
    )
    details = [json.loads(d) for d in events["detail"]]
    assert sorted(d["check"] for d in details) == sorted([
        "unique(customer)", "not_null(customer)", "between(amount, 0, None)",
        "references(customer -> customers.customer)", "row_count(3, None)",
    ])  # fmt: skip
    assert all(d["status"] == "passed" and d["seconds"] >= 0 for d in details)


def test_a_reference_to_a_missing_key_is_a_failed_check(lake, control):
    (control / "orphan-orders-2024-01-01").touch()
    result = run(lake, select="customers,orders", partitions="2024-01-01")
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert (
        "references(customer -> customers.customer) failed: 1 rows with a customer missing from customers.customer"
        in error
    )


def test_a_failed_check_upstream_blocks_every_consumer_partition(lake, control):
    (control / "dupe-customers").touch()
    result = run(lake, select="customers,orders")
    got = outcomes(result)
    assert got[("customers", "")] == "check_failed"
    assert [got[("orders", f"2024-01-0{d}")] for d in (1, 2, 3)] == ["blocked"] * 3
    assert not (Path(lake) / "customers" / "_delta_log").exists()  # never created


def test_a_check_on_a_missing_column_counts_as_failed(lake):
    @lf.asset(checks=[lf.not_null("custmer")])
    def people() -> pl.DataFrame:
        return pl.DataFrame({"customer": ["a"]})

    result = lf.materialize([people], lake=lake, executor="local")
    row = result.units.row(0, named=True)
    assert row["outcome"] == "check_failed" and "column 'custmer' does not exist" in row["error"]
    assert lake_fingerprint(lake) == {}


def test_a_failing_table_check_holds_consumers(lake, control):
    assert run(lake, partitions="2024-01-01..2024-01-02").ok
    (control / "dupe-journal-2024-01-03").touch()
    assert run(lake, select="+orders", partitions="2024-01-03").ok
    before = lake_fingerprint(lake)
    result = run(lake, partitions="2024-01-03")
    got = outcomes(result)
    assert got[("journal", "2024-01-03")] == "check_failed"
    assert got[("journal_daily", "2024-01-03")] == "blocked"
    assert got[("ledger_daily", "2024-01-03")] == "published"  # the other branch is fine
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert (
        "unique(order_id) failed: 3 duplicate rows of order_id" in error
        and "nothing committed" in error
    )
    assert (
        lake_fingerprint(lake)["journal"] == before["journal"]
    )  # checked before its commit: never published
    rows = {r["asset"]: r for r in lf.status(GATED, lake=lake).iter_rows(named=True)}
    assert rows["journal"]["check_failed"] == 1 and rows["journal_daily"]["blocked"] == 1


def test_rollback_is_not_needed_by_a_table_check_that_runs_before_the_commit(lake, control):
    assert run(lake, partitions="2024-01-01..2024-01-02").ok
    before = pl.read_delta(f"{lake}/ledger").sort("order_id")
    version = DeltaTable(f"{lake}/ledger").version()
    (control / "dupe-ledger-2024-01-03").touch()
    result = run(lake, partitions="2024-01-03")
    got = outcomes(result)
    assert (
        got[("ledger", "2024-01-03")] == "check_failed"
        and got[("ledger_daily", "2024-01-03")] == "blocked"
    )
    assert DeltaTable(f"{lake}/ledger").version() == version  # no bad commit, so no undo
    assert pl.read_delta(f"{lake}/ledger").sort("order_id").equals(before)
    kinds = lf.read_events(lf.Lake(lake), run_id=result.run_id)["kind"].to_list()
    assert "table_rolled_back" not in kinds
    (control / "dupe-ledger-2024-01-03").unlink()
    assert run(lake, partitions="2024-01-03").ok  # fixed: published, consumers run


def test_the_cli_names_asset_partition_check_count_and_examples(ray_session, lake, control, capsys):
    (control / "bad-orders-2024-01-02").touch()
    code = main(
        [
            "materialize",
            "tests.pipelines:GATED",
            "--lake",
            lake,
            "--partitions",
            DAYS,
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "orders" in err and "2024-01-02" in err and "check_failed" in err
    assert "between(amount, 0, None) failed: 1 of 3 rows" in err and "amount=-5.0" in err
    assert main(["checks", "tests.pipelines:GATED", "--lake", lake, "--failed", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["asset"], row["partition"], row["check"], row["failing"]) == (
        "orders",
        "2024-01-02",
        "between(amount, 0, None)",
        1,
    )
    assert row["quarantine"].endswith(f"_lakeflow/quarantine/orders/2024-01-02/{row['run_id']}")
    assert main(["status", "tests.pipelines:GATED", "--lake", lake, "--json"]) == 0
    rows = {r["asset"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["orders"]["check_failed"] == 1 and rows["order_totals"]["blocked"] == 1


@lf.asset(
    partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-03"),
    checks=[lf.gx_suite("suites/orders.json")],
)
def gx_orders(ctx: lf.Context) -> pl.DataFrame:
    bad = ctx.partition.key == "2024-01-02"
    return pl.DataFrame({"customer": ["c1", "c9" if bad else "c2"], "amount": [1.0, 2.0]})


def test_a_gx_suite_gates_units_in_ray_workers(ray_session, lake):
    result = lf.materialize([gx_orders], lake=lake)
    got = outcomes(result)
    assert got == {
        ("gx_orders", "2024-01-01"): "published",
        ("gx_orders", "2024-01-02"): "check_failed",
    }
    assert (
        "expect_column_values_to_be_in_set(customer) failed: 1 of 2 rows"
        in result.units["error"].to_list()[1]
    )
    assert pl.read_delta(f"{lake}/gx_orders")["date"].unique().to_list() == ["2024-01-01"]


@pytest.mark.parametrize("severity", ["warn", "error"])
def test_severity_decides_whether_a_failure_blocks(lake, severity):
    @lf.asset(checks=[lf.check(pl.col("x") > 0, name="positive", severity=severity)])
    def numbers() -> pl.DataFrame:
        return pl.DataFrame({"x": [1, -1]})

    result = lf.materialize([numbers], lake=lake, executor="local")
    assert result.units["outcome"][0] == ("published" if severity == "warn" else "check_failed")


def test_the_result_carries_the_runs_check_results(lake, control):
    (control / "bad-orders-2024-01-02").touch()
    result = run(lake, select="customers,orders")
    checks = result.checks()
    assert checks.height == 1 + 3 * 4  # customers: one check; orders: four checks on three days
    failed = result.checks(failed=True).row(0, named=True)
    assert (failed["asset"], failed["partition"], failed["check"], failed["failing"]) == (
        "orders",
        "2024-01-02",
        "between(amount, 0, None)",
        1,
    )
    assert failed["quarantine"].endswith(f"orders/2024-01-02/{result.run_id}")


@lf.asset(
    partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-03"),
    checks=[lf.references("customer", "customers", scope="table")],
)
def late_orders(ctx: lf.Context) -> pl.DataFrame:
    return pl.DataFrame({"customer": ["c1", "zz" if ctx.partition.key == "2024-01-02" else "c2"]})


def test_a_table_level_reference_check_fails_only_the_unit_with_the_orphan(lake, control):
    from tests.pipelines import customers

    result = lf.materialize([customers, late_orders], lake=lake, executor="local")
    got = outcomes(result)
    assert got[("customers", "")] == "published"
    assert got[("late_orders", "2024-01-02")] == "check_failed"
    assert got[("late_orders", "2024-01-01")] == "published"  # in the same commit or not
    failed = result.checks(failed=True).row(0, named=True)
    assert (failed["partition"], failed["scope"], failed["failing"]) == ("2024-01-02", "table", 1)
    assert failed["check"] == "references(customer -> customers.customer)"
    assert pl.read_delta(f"{lake}/late_orders")["customer"].to_list() == ["c1", "c2"]
