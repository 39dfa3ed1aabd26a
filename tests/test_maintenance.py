"""`lakeflow vacuum`: staged files no commit took and replaced files go once they are older than
the retention; what the table's versions in the window need stays readable."""

import json
import os
import shutil
import time
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import lake_fingerprint
from tests.pipelines import GATED, PIPELINE

SPEND = "tests.pipelines:PIPELINE"


def materialize(lake: str, *args: str) -> None:
    assert main(["materialize", SPEND, "--lake", lake, "--executor", "local", *args]) == 0


def leftover(lake: str, hours_old: float) -> Path:
    """A staged file of an attempt that died before its commit, `hours_old` hours ago."""
    table = DeltaTable(f"{lake}/events")
    some = Path(table.file_uris()[0])
    stray = some.parent / "part-run-dead-1-0123456789ab.parquet"
    shutil.copy(some, stray)
    then = time.time() - hours_old * 3600
    os.utime(stray, (then, then))
    return stray


def test_vacuum_deletes_what_no_version_needs(lake, capsys):
    materialize(lake, "--select", "events", "--partitions", "2024-01-01..2024-01-03")
    materialize(lake, "--select", "events", "--partitions", "2024-01-01", "--force")
    stray = leftover(lake, hours_old=3)
    before = pl.read_delta(f"{lake}/events").sort("date", "user")
    capsys.readouterr()

    planned = lf.vacuum(PIPELINE, lake=lake, retain_hours=1, dry_run=True)
    assert planned.to_dicts() == [
        {
            "asset": "events",
            "files": 1,
            "bytes": stray.stat().st_size,
            "quarantined_files": 0,
            "dry_run": True,
        }
    ]  # the replaced file of 2024-01-01 was replaced minutes ago: it stays
    assert stray.exists()

    assert main(["vacuum", SPEND, "--lake", lake, "--retain-hours", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{**planned.to_dicts()[0], "dry_run": False}]
    assert not stray.exists()
    assert pl.read_delta(f"{lake}/events").sort("date", "user").equals(before)
    assert pl.read_delta(f"{lake}/events", version=0).height == before.height  # time travel


def test_a_retention_under_an_hour_is_refused_and_deletes_nothing(lake, capsys):
    materialize(lake, "--select", "events", "--partitions", "2024-01-01")
    leftover(lake, hours_old=3)
    fingerprint = lake_fingerprint(lake)
    files = sorted(p.name for p in Path(lake, "events").rglob("*.parquet"))
    assert main(["vacuum", SPEND, "--lake", lake, "--retain-hours", "0"]) == 2
    assert "under 1 h" in capsys.readouterr().err
    assert sorted(p.name for p in Path(lake, "events").rglob("*.parquet")) == files
    assert lake_fingerprint(lake) == fingerprint


def test_quarantined_outputs_go_once_older_than_the_retention(lake, control):
    (control / "bad-orders-2024-01-02").touch()
    result = lf.materialize(GATED, select="customers,orders", partitions="2024-01-01..2024-01-03",
                            lake=lake, executor="local")  # fmt: skip
    assert not result.ok
    quarantine = Path(lake) / "_lakeflow" / "quarantine" / "orders"
    folder = quarantine / "2024-01-02" / result.run_id
    (kept,) = folder.glob("*.parquet")
    table = sorted(Path(lake, "orders").rglob("*.parquet"))

    def tidy() -> dict:
        (row,) = lf.vacuum(GATED, select="orders", lake=lake, retain_hours=1).to_dicts()
        return row

    assert tidy()["quarantined_files"] == 0 and kept.exists()  # minutes old: kept to inspect
    then = time.time() - 2 * 3600
    os.utime(kept, (then, then))
    assert tidy() == {"asset": "orders", "files": 0, "bytes": 0, "quarantined_files": 1,
                      "dry_run": False}  # fmt: skip
    assert not folder.exists() and sorted(Path(lake, "orders").rglob("*.parquet")) == table
