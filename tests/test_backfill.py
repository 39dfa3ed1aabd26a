"""Backfills: durable runs over hundreds of partitions, with group commits, re-processing modes,
ordering, limits, cancel and resume, and chains of partitions built on their predecessors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import ROOT, lake_fingerprint, status_agrees_after
from tests.pipelines import BACKFILL, YEAR


@pytest.fixture(autouse=True)
def _status_agrees_with_the_dry_run(request, tmp_path):
    yield
    status_agrees_after(request, BACKFILL, tmp_path)


def commits_per_partition(lake: str, asset: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in DeltaTable(f"{lake}/{asset}").history():
        for group in (entry.get("lakeflow") or {}).get("groups", []):
            for key in group["keys"]:
                counts[key] = counts.get(key, 0) + 1
    return counts


def lakeflow_commits(lake: str, asset: str) -> int:
    return sum(1 for entry in DeltaTable(f"{lake}/{asset}").history() if entry.get("lakeflow"))


def expected_totals() -> list[int]:
    totals, running = [], 0
    for day in range(len(YEAR)):
        running += day + day * 2 + 1
        totals.append(running)
    return totals


def test_dry_run_counts_the_plan_and_changes_nothing(lake, control, capsys):
    plan = lf.backfill(BACKFILL, partitions="2023-01-01..2023-01-10", lake=lake, dry_run=True)
    assert plan.units == {"readings": 10, "daily_sum": 10, "running_total": 10} and plan.total == 30
    assert plan.first[0] == ("readings", "2023-01-01")
    assert (
        main(
            [
                "backfill",
                "tests.pipelines:BACKFILL",
                "--lake",
                lake,
                "--order",
                "newest",
                "--dry-run",
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["units"] == {"readings": 400, "daily_sum": 400, "running_total": 400}
    assert printed["first"][0] == ["readings", "2024-02-04"]  # newest first
    assert lake_fingerprint(lake) == {}


def test_a_backfill_of_hundreds_of_partitions_groups_its_commits(ray_session, lake, control):
    result = lf.backfill(BACKFILL, lake=lake)
    assert result.ok, result
    assert result.counts() == {"published": 1200}
    for asset in ("readings", "daily_sum", "running_total"):
        assert commits_per_partition(lake, asset) == dict.fromkeys(YEAR.keys(), 1)
    assert (
        lakeflow_commits(lake, "readings") < 400 / 4
        and lakeflow_commits(lake, "daily_sum") < 400 / 4
    )
    totals = pl.read_delta(f"{lake}/running_total").sort("date")["total"].to_list()
    assert totals == expected_totals()  # the chain ran link after link, each on its predecessor


def test_the_chain_runs_link_after_link(lake, control):
    result = lf.backfill(
        BACKFILL,
        select="readings,daily_sum,running_total",
        partitions="2023-03-01..2023-03-20",
        lake=lake,
        executor="local",
    )
    assert not result.ok  # 2023-03-01 has no published predecessor: a chain cannot start mid-air
    chain = result.units.filter(pl.col("asset") == "running_total").sort("partition")
    assert chain["outcome"].to_list() == ["failed"] + ["upstream_failed"] * 19
    assert "input running_total partition 2023-02-28 is not materialized" in chain["error"][0]
    full = lf.backfill(BACKFILL, partitions="2023-01-01..2023-03-20", lake=lake, executor="local")
    assert full.ok
    events = lf.read_events(lf.Lake(lake), run_id=full.run_id, asset="running_total")
    started = (
        events.filter(pl.col("kind") == "unit_started").select("partition", "ts").sort("partition")
    )
    published = (
        events.filter(pl.col("kind") == "unit_published")
        .select("partition", "ts")
        .sort("partition")
    )
    assert (
        started["ts"][1:] >= published["ts"][:-1]
    ).all()  # each link starts after the one before is published
    assert (
        pl.read_delta(f"{lake}/running_total").sort("date")["total"].to_list()
        == expected_totals()[: len(published)]
    )


@pytest.mark.parametrize("order", ["oldest", "newest"])
def test_order_decides_which_partitions_go_first(lake, control, order):
    result = lf.backfill(
        BACKFILL,
        select="readings",
        partitions="2023-01-01..2023-01-30",
        order=order,
        lake=lake,
        executor="local",
        options=lf.ControllerOptions(max_in_flight=1),
    )
    started = (
        lf.read_events(lf.Lake(lake), run_id=result.run_id)
        .filter(pl.col("kind") == "unit_started")["partition"]
        .to_list()
    )
    assert started[0] == ("2023-01-01" if order == "oldest" else "2023-01-30")


def spans(control: Path) -> list[tuple[float, float]]:
    return sorted(tuple(map(float, p.read_text().split())) for p in control.glob("span-*"))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    level = best = 0
    for _, step in edges:
        level += step
        best = max(best, level)
    return best


def test_concurrency_caps_the_tasks_in_flight(lake, control):
    (control / "record-spans").touch()
    (control / "slow-readings").write_text("0.05")
    options = lf.ControllerOptions(max_in_flight=4, max_task_units=1)
    lf.backfill(
        BACKFILL,
        select="readings",
        partitions="2023-01-01..2023-01-12",
        lake=lake,
        executor="local",
        options=options,
        concurrency=1,
    )
    assert most_at_once(spans(control)) == 1
    for path in control.glob("span-*"):
        path.unlink()
    lf.backfill(
        BACKFILL,
        select="readings",
        partitions="2023-02-01..2023-02-16",
        lake=lake,
        executor="local",
        options=options,
        max_share=0.5,
    )
    assert most_at_once(spans(control)) == 2  # half of four slots


def test_reprocessing_modes(lake, control):
    (control / "fail-readings-2023-01-05").touch()
    first = lf.backfill(
        BACKFILL,
        select="readings,daily_sum",
        partitions="2023-01-01..2023-01-10",
        lake=lake,
        executor="local",
    )
    assert first.counts() == {"published": 18, "failed": 1, "upstream_failed": 1}
    (control / "fail-readings-2023-01-05").unlink()
    failed = lf.backfill(
        BACKFILL,
        select="readings,daily_sum",
        partitions="2023-01-01..2023-01-10",
        only="failed",
        lake=lake,
        executor="local",
    )
    rerun = sorted(
        failed.units.filter(pl.col("outcome") == "published")
        .select("asset", "partition")
        .iter_rows()
    )
    assert rerun == [("daily_sum", "2023-01-05"), ("readings", "2023-01-05")]
    missing = lf.backfill(
        BACKFILL,
        select="readings",
        partitions="2023-01-01..2023-01-12",
        only="missing",
        lake=lake,
        executor="local",
    )
    assert sorted(
        missing.units.filter(pl.col("outcome") == "published")["partition"].to_list()
    ) == ["2023-01-11", "2023-01-12"]
    # an outside rewrite of readings 2023-01-03 leaves daily_sum 2023-01-03 stale
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(
        f"{lake}/readings",
        pa.table({"sensor": ["z"], "value": [100], "date": ["2023-01-03"]}),
        mode="overwrite",
        predicate="date = '2023-01-03'",
    )
    stale = lf.backfill(
        BACKFILL,
        select="daily_sum",
        partitions="2023-01-01..2023-01-10",
        only="stale",
        lake=lake,
        executor="local",
    )
    assert stale.units.filter(pl.col("outcome") == "published")["partition"].to_list() == [
        "2023-01-03"
    ]
    everything = lf.backfill(
        BACKFILL,
        select="daily_sum",
        partitions="2023-01-01..2023-01-10",
        only="all",
        lake=lake,
        executor="local",
    )
    assert everything.counts() == {"published": 10}


def test_cancel_stops_cleanly_and_resume_finishes_the_rest(ray_session, lake, control):
    (control / "slow-readings").write_text("0.1")
    handle = lf.backfill(
        BACKFILL,
        select="readings,daily_sum",
        partitions="2023-01-01..2023-04-10",
        lake=lake,
        wait=False,
    )
    deadline = time.time() + 60
    while handle.progress()["published"] < 6 and time.time() < deadline:
        time.sleep(0.2)
    assert lf.cancel(handle.id, lake=lake)
    result = handle.wait()
    assert result.status == "cancelled" and result.counts().get("cancelled", 0) > 0
    published = commits_per_partition(lake, "readings")
    assert published and all(n == 1 for n in published.values()) and len(published) < 100
    status = lf.backfill_status(handle.id, lake=lake)
    assert status["status"] == "cancelled" and status["published"] == result.counts()["published"]
    (control / "slow-readings").unlink()
    resumed = lf.resume(handle.id, lake=lake)
    assert resumed.ok
    assert commits_per_partition(lake, "readings") == dict.fromkeys(YEAR.keys()[:100], 1)
    assert commits_per_partition(lake, "daily_sum") == dict.fromkeys(YEAR.keys()[:100], 1)
    assert lf.backfill_status(handle.id, lake=lake)["status"] == "succeeded"


def test_resume_logs_the_publishes_a_dead_controller_never_wrote_down(lake, control):
    """The tables, not the event log, say what a run published: a controller that died after its
    commits but before its events reached the log leaves them to the one that resumes the run."""
    days = "2023-01-01..2023-01-10"
    first = lf.backfill(BACKFILL, select="readings,daily_sum", partitions=days, lake=lake,
                        executor="local")  # fmt: skip
    assert first.ok
    lf.stop(lake)  # its controller is gone ...
    shutil.rmtree(Path(lake, "_lakeflow", "events"))  # ... and so is every event of the run

    resumed = lf.resume(first.run_id, lake=lake, executor="local")
    assert resumed.ok and resumed.counts() == {"published": 20}  # all of them before the resume
    events = lf.read_events(lf.Lake(lake), run_id=first.run_id)
    repaired = events.filter(pl.col("kind") == "unit_published")
    assert sorted(set(repaired["asset"].to_list())) == ["daily_sum", "readings"]
    assert repaired.height == 20 and all(json.loads(d)["repaired"] for d in repaired["detail"])
    assert lf.backfill_status(first.run_id, lake=lake)["published"] == 20
    for asset in ("readings", "daily_sum"):
        assert commits_per_partition(lake, asset) == dict.fromkeys(YEAR.keys()[:10], 1)


def _raylets() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True).stdout.split()
    return {int(pid) for pid in found}


def test_a_killed_backfill_resumes_from_the_lake(tmp_path, control):
    """The CLI's process (and its embedded Ray) is killed mid-backfill; `lakeflow backfill resume`
    from another process finishes it, with no partition published twice and none lost."""
    lake = str(tmp_path / "lake")
    (control / "slow-readings").write_text("0.05")
    env = dict(os.environ)
    raylets_before = _raylets()
    command = [
        str(Path(sys.executable).parent / "lakeflow"),
        "backfill",
        "tests.pipelines:BACKFILL",
        "--lake",
        lake,
        "--select",
        "readings,daily_sum",
        "--no-progress",
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        published = 0
        while time.time() < deadline and published < 20:
            time.sleep(0.5)
            try:
                published = lf.read_events(lf.Lake(lake))["kind"].to_list().count("unit_published")
            except Exception:
                published = 0
        assert published >= 20
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.time() + 60  # its Ray (and the controller in it) goes down with it
    while _raylets() - raylets_before and time.time() < deadline:
        time.sleep(0.5)
    run_id = lf.read_events(lf.Lake(lake), kinds=["run_requested"])["run_id"][0]
    assert lf.backfill_status(run_id, lake=lake)["status"] == "running"  # nobody finished it
    (control / "slow-readings").unlink()
    done = subprocess.run(
        [*command[:2], "resume", run_id, "--lake", lake, "--executor", "local", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["counts"] == {"published": 800}  # before and after the kill
    for asset in ("readings", "daily_sum"):
        assert commits_per_partition(lake, asset) == dict.fromkeys(YEAR.keys(), 1)


def test_the_cli_backfills_and_reports_failures_by_asset(ray_session, lake, control, capsys):
    for day in ("2023-01-03", "2023-01-07"):
        (control / f"fail-readings-{day}").touch()
    code = main(
        [
            "backfill",
            "tests.pipelines:BACKFILL",
            "--lake",
            lake,
            "--select",
            "readings,daily_sum",
            "--partitions",
            "2023-01-01..2023-01-31",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "failed" in captured.out and "ValueError: readings 2023-01-03: bad data" in captured.err
    run_id = lf.read_events(lf.Lake(lake), kinds=["run_requested"])["run_id"][0]
    assert main(["backfill", "status", run_id, "--lake", lake]) == 0
    out = capsys.readouterr().out
    # what failed and what was held behind it are counted apart
    assert f"run {run_id} (backfill) failed: 58/62 published, 2 failed, 2 upstream_failed" in out
    assert "readings: 2 failed; 2023-01-03: ValueError: readings 2023-01-03: bad data" in out
    assert main(["backfill", "cancel", run_id, "--lake", lake]) == 1  # it is over
