"""Table-level checks run on the would-be version before its commit: no version of the table, the
latest or any in its history, ever holds rows that failed an `error` check."""

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from tests.conftest import lake_fingerprint, status_agrees_after
from tests.pipelines import GATED, control

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-09")


@lf.asset(partitions=DAYS, checks=[lf.unique("id", scope="table")])
def entries(ctx: lf.Context) -> pl.DataFrame:
    key = ctx.partition.key
    ids = [f"{key}-{i}" for i in range(3)]
    if control(f"steal-entries-{key}"):  # one row takes the first day's first id
        ids[-1] = "2024-01-01-0"
    return pl.DataFrame({"id": ids})


@lf.asset(partitions=DAYS, checks=[lf.unique("id", scope="table", severity="warn")])
def loose_entries(ctx: lf.Context) -> pl.DataFrame:
    return pl.DataFrame({"id": ["same"]})


@pytest.fixture(autouse=True)
def _status_agrees_with_the_dry_run(request, tmp_path):
    yield
    status_agrees_after(request, GATED, tmp_path)


def outcomes(result) -> dict[tuple[str, str], str]:
    rows = result.units.select("asset", "partition", "outcome").iter_rows()
    return {(a, p): o for a, p, o in rows}


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


READER = """
import json, sys
from pathlib import Path
import polars as pl
from deltalake import DeltaTable

table, ready, stop, out = sys.argv[1:5]
bad, reads, checked = [], 0, set()

def duplicated(frame):
    return frame["order_id"].is_duplicated().any()

def sweep():  # every version in the history, by time travel
    global reads
    for version in range(DeltaTable(table).version() + 1):
        if version not in checked:
            reads += 1
            if duplicated(pl.read_delta(table, version=version)):
                bad.append(["history", version])
            checked.add(version)

while not Path(stop).exists():
    reads += 1
    latest = pl.read_delta(table)  # the latest version, as any reader sees it
    if duplicated(latest):
        bad.append(["latest", DeltaTable(table).version()])
    sweep()
    Path(ready).touch()
sweep()  # the versions made since the last pass
Path(out).write_text(json.dumps({"bad": bad, "reads": reads, "versions": sorted(checked)}))
"""


@pytest.mark.parametrize("asset", ["ledger", "journal"])  # with and without on_fail="rollback"
def test_readers_never_see_rows_that_failed_a_table_check(lake, control, tmp_path, asset):
    days = "2024-01-01..2024-01-03"
    assert lf.materialize(
        GATED, select=f"+{asset}", partitions=days, lake=lake, executor="local"
    ).ok
    flags = tmp_path / "reader"
    flags.mkdir()
    ready, stop, out = flags / "ready", flags / "stop", flags / "out.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, f"{lake}/{asset}", str(ready), str(stop), str(out)]
    )
    try:
        wait_for(ready.exists)
        (control / f"dupe-{asset}-2024-01-03").touch()  # three rows with 2024-01-01's first id
        result = lf.materialize(
            GATED, select=f"{asset}+", partitions="2024-01-03", lake=lake, force=True,
            executor="local",
        )  # fmt: skip
        assert outcomes(result)[(asset, "2024-01-03")] == "check_failed"
        stop.touch()
        assert reader.wait(timeout=60) == 0
    finally:
        reader.kill()
    seen = json.loads(out.read_text())
    assert seen["bad"] == [] and seen["reads"] > 1
    assert seen["versions"] == list(range(seen["versions"][-1] + 1))  # every version was read


def test_a_table_check_sees_other_partitions_and_not_the_rows_it_replaces(lake, control):
    assert lf.materialize(GATED, select="+journal", lake=lake, partitions="2024-01-01..2024-01-03", executor="local").ok  # fmt: skip
    # the same ids again: the old rows of the partitions a commit replaces are not counted
    again = lf.materialize(GATED, select="journal", partitions="2024-01-01..2024-01-03", lake=lake, force=True, executor="local")  # fmt: skip
    assert again.ok, again.units
    before = lake_fingerprint(lake)
    (control / "steal-journal-2024-01-03").touch()  # unique in its day, not in the table
    result = lf.materialize(
        GATED, select="journal+", partitions="2024-01-03", lake=lake, force=True, executor="local"
    )
    got = outcomes(result)
    assert got[("journal", "2024-01-03")] == "check_failed"
    assert got[("journal_daily", "2024-01-03")] == "blocked"
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert "unique(order_id) failed: 1 duplicate rows of order_id" in error
    assert "order_id='2024-01-01-0'" in error
    assert lake_fingerprint(lake) == before  # not committed: no version holds the row
    # events and status tell the same story
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id)
    failed = events.filter(pl.col("kind") == "unit_check_failed")
    assert failed.select("asset", "partition").rows() == [("journal", "2024-01-03")]
    (row,) = lf.check_results(GATED, lake=lake, asset="journal", failed=True).iter_rows(named=True)
    assert (row["partition"], row["scope"], row["check"], row["failing"]) == (
        "2024-01-03", "table", "unique(order_id)", 1,
    )  # fmt: skip
    (quarantined,) = Path(row["quarantine"]).glob("*.parquet")
    assert "2024-01-01-0" in pl.read_parquet(quarantined)["order_id"].to_list()
    rows = {r["asset"]: r for r in lf.status(GATED, lake=lake).iter_rows(named=True)}
    assert rows["journal"]["check_failed"] == 1 and rows["journal_daily"]["blocked"] == 1
    (control / "steal-journal-2024-01-03").unlink()
    fixed = lf.materialize(GATED, select="journal+", partitions="2024-01-03", lake=lake, executor="local")  # fmt: skip
    assert fixed.ok


def test_one_bad_unit_fails_alone_in_a_commit_of_many(ray_session, lake, control):
    (control / "steal-entries-2024-01-05").touch()
    options = lf.ControllerOptions(commit_linger=30.0)  # every unit in one commit
    result = lf.materialize([entries], lake=lake, options=options)
    got = outcomes(result)
    failed = sorted(p for (_, p), o in got.items() if o == "check_failed")
    # 2024-01-01 and 2024-01-05 share an id: one of them goes, the other six are published
    assert failed in (["2024-01-01"], ["2024-01-05"])
    assert sorted(p for (_, p), o in got.items() if o == "published") == sorted(
        set(DAYS.keys(range(8))) - set(failed)
    )
    published = lf.read_events(lf.Lake(lake), run_id=result.run_id, kinds=["unit_published"])
    assert published["version"].n_unique() == 1  # they were one group, and it was split
    table = pl.read_delta(f"{lake}/entries")
    assert table.height == 21 and table["id"].n_unique() == 21
    kinds = lf.read_events(lf.Lake(lake), run_id=result.run_id)["kind"].to_list()
    assert kinds.count("unit_check_failed") == 1


def test_a_warn_table_check_publishes_and_records(lake):
    result = lf.materialize([loose_entries], lake=lake, partitions="2024-01-01..2024-01-02", executor="local")  # fmt: skip
    assert result.ok
    assert pl.read_delta(f"{lake}/loose_entries").height == 2
    checks = result.checks().filter(pl.col("scope") == "table")
    (row,) = checks.iter_rows(named=True)
    assert (row["status"], row["severity"], row["failing"]) == ("failed", "warn", 1)
    assert row["version"] == DeltaTable(f"{lake}/loose_entries").version()  # what it describes


def test_a_table_read_only_through_delta_is_checked_after_its_commit(lake, control):
    """Deletion vectors (turned on outside lakeflow) make the Parquet files alone the wrong
    rows: such a table's checks run on the committed version, and on_fail="rollback" undoes it."""
    assert lf.materialize(GATED, select="+ledger", partitions="2024-01-01..2024-01-03", lake=lake, executor="local").ok  # fmt: skip
    DeltaTable(f"{lake}/ledger").alter.set_table_properties({"delta.enableDeletionVectors": "true"})
    version = DeltaTable(f"{lake}/ledger").version()
    before = pl.read_delta(f"{lake}/ledger").sort("order_id")
    (control / "dupe-ledger-2024-01-03").touch()
    result = lf.materialize(GATED, select="ledger+", partitions="2024-01-03", lake=lake, force=True, executor="local")  # fmt: skip
    assert outcomes(result)[("ledger_daily", "2024-01-03")] == "blocked"
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert f"version {version + 1} rolled back by version {version + 2}" in error
    assert DeltaTable(f"{lake}/ledger").version() == version + 2
    assert pl.read_delta(f"{lake}/ledger").sort("order_id").equals(before)
