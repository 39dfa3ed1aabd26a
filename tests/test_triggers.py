"""Data-aware triggers with real Delta tables and the session's local Ray: an outside producer's
commits run exactly the consumer partitions they touched, across bursts and controller restarts;
schedules fire and catch up; files arrive once; a held upstream triggers nothing."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.lake import Lake
from lakeflow.triggers.follow import STATE_URL, consumer_partitions
from tests.conftest import assert_status_agrees, eventually
from tests.trigger_pipelines import (
    DAYS,
    TRIPS_ON_START,
    files_pipeline,
    held_pipeline,
    minute_key,
    minutes_pipeline,
    ticking_pipeline,
    trips_pipeline,
    trips_total_pipeline,
    write_csv,
    write_trips,
)


def partitions_of(url: str, column: str = "day", storage_options=None) -> dict[str, int]:
    """partition -> rows, of a table's current version (empty if it does not exist)."""
    if not DeltaTable.is_deltatable(url, storage_options=storage_options):
        return {}
    frame = pl.read_delta(url, storage_options=storage_options)
    if frame.is_empty():
        return {}
    return dict(frame.group_by(column).len().iter_rows())


def consumer(lake: str) -> dict[str, tuple[int, float]]:
    """trips_daily: day -> (trips, fares)."""
    url = f"{lake}/trips_daily"
    if not DeltaTable.is_deltatable(url):
        return {}
    frame = pl.read_delta(url)
    return {d: (t, f) for d, t, f in frame.select("day", "trips", "fares").iter_rows()}


def publish_counts(lake: str, asset: str) -> dict[str, int]:
    """unit_published events of `asset`, by partition."""
    return dict(published(lake, asset).group_by("partition").len().iter_rows())


def published(lake: str, asset: str) -> pl.DataFrame:
    return lf.read_events(Lake(lake), kinds=["unit_published"], asset=asset)


def expected_from_source(lake: str) -> dict[str, tuple[int, float]]:
    frame = pl.read_delta(f"{lake}/trips")
    rows = frame.group_by("day").agg(pl.len().alias("trips"), pl.col("fare").sum().alias("fares"))
    return {d: (t, f) for d, t, f in rows.iter_rows()}


@pytest.fixture
def service_stopper():
    started: list[str] = []
    yield started
    for lake in started:
        try:
            lf.down(lake=lake, timeout=10)
        except lf.LakeflowError:
            pass


def test_an_outside_commit_runs_exactly_the_partitions_it_touched(
    ray_session, lake, service_stopper
):
    pipeline = trips_pipeline(lake)
    source = f"{lake}/trips"
    write_trips(source, "2024-01-01", [1, 2, 3])  # history from before `up`: built once on start
    service = lf.up(pipeline)
    service_stopper.append(lake)
    eventually(lambda: set(consumer(lake)) == {"2024-01-01"})

    write_trips(source, "2024-01-05", [10, 11])
    write_trips(source, "2024-01-07", [20])
    eventually(lambda: set(consumer(lake)) == {"2024-01-01", "2024-01-05", "2024-01-07"})
    assert consumer(lake) == {
        "2024-01-01": (3, 1 % 7 + 2 % 7 + 3 % 7 + 7.5),
        "2024-01-05": (2, 10 % 7 + 11 % 7 + 5.0),
        "2024-01-07": (1, 20 % 7 + 2.5),
    }
    time.sleep(0.5)  # and nothing else comes
    assert set(consumer(lake)) == {"2024-01-01", "2024-01-05", "2024-01-07"}
    # a unit's unit_published event is written just after its commit: wait for the event log
    eventually(
        lambda: (
            publish_counts(lake, "trips_daily")
            == {"2024-01-01": 1, "2024-01-05": 1, "2024-01-07": 1}
        )
    )

    requested = lf.read_events(Lake(lake), kinds=["run_requested"])
    origins = requested["message"].to_list()
    assert origins[0] == "start:missing_or_stale"
    assert json.loads(requested["detail"][0])["trigger"]["kind"] == "start"
    assert origins[1:] and all(o.startswith("commit:trips@") for o in origins[1:])
    trigger = json.loads(requested["detail"][1])["trigger"]
    assert trigger["kind"] == "commit" and "trips" in trigger["tables"]
    # status shows the engine's cursor in memory, moved before a commit's keys are requested;
    # waiting costs nothing should a later commit still be in hand
    version = DeltaTable(source).version()
    eventually(lambda: service.status()["cursors"]["trips"] == version)
    assert_status_agrees(pipeline)


def test_an_unpartitioned_consumer_runs_on_each_commit(ray_session, lake, service_stopper):
    """Its one partition (key '') is asked for as the whole asset: a request naming partitions
    of an unpartitioned asset is refused, so it never ran after the start."""
    source = f"{lake}/trips"
    write_trips(source, "2024-01-01", [1, 2, 3])
    lf.up(trips_total_pipeline(lake))
    service_stopper.append(lake)

    def total() -> tuple[int, float] | None:
        url = f"{lake}/trips_total"
        if not DeltaTable.is_deltatable(url):
            return None
        return pl.read_delta(url).select("trips", "fares").row(0)

    def whole() -> tuple[int, float]:
        return pl.read_delta(source).select(pl.len(), pl.col("fare").sum()).row(0)

    eventually(lambda: total() == whole())
    write_trips(source, "2024-01-05", [10, 11])
    eventually(lambda: total() == whole() == (5, 1 % 7 + 2 % 7 + 3 % 7 + 10 % 7 + 11 % 7 + 12.5))
    assert lf.read_events(Lake(lake), kinds=["trigger_failed"]).is_empty()
    assert DeltaTable(f"{lake}/trips_total").version() == 1  # the start, then the commit
    eventually(lambda: published(lake, "trips_total").height == 2)  # events follow commits


def test_with_on_start_none_history_before_the_first_up_is_not_news(
    ray_session, lake, service_stopper
):
    pipeline = trips_pipeline(lake, on_start="none")
    source = f"{lake}/trips"
    write_trips(source, "2024-01-01", [1, 2, 3])
    lf.up(pipeline)
    service_stopper.append(lake)
    write_trips(source, "2024-01-05", [10, 11])
    eventually(lambda: set(consumer(lake)) == {"2024-01-05"})
    time.sleep(0.5)
    assert set(consumer(lake)) == {"2024-01-05"}
    origins = lf.read_events(Lake(lake), kinds=["run_requested"])["message"].to_list()
    assert origins and all(o.startswith("commit:trips@") for o in origins)
    rows = {r["asset"]: r for r in lf.status(pipeline).iter_rows(named=True)}
    assert rows["trips_daily"]["missing"] == len(DAYS) - 1  # 2024-01-01 waits for a backfill


def test_a_burst_of_50_commits_loses_none_and_doubles_none(ray_session, lake, service_stopper):
    pipeline = trips_pipeline(lake, debounce=3.0)  # a quiet period longer than any gap in the burst
    source = f"{lake}/trips"
    write_trips(source, "2024-02-01", [0])
    lf.up(pipeline, poll=0.05)
    service_stopper.append(lake)

    days = [f"2024-02-{d:02d}" for d in range(2, 27)]  # 25 days, each touched by two commits
    for i in range(50):
        write_trips(source, days[i % 25], [1000 + i])
    version = DeltaTable(source).version()
    state_url = f"{lake}/{STATE_URL}"

    def caught_up():
        state = json.loads(Path(state_url).read_text())
        return state["cursors"]["trips"] == version and not any(state["pending"].values())

    eventually(caught_up)
    eventually(lambda: set(consumer(lake)) == {"2024-02-01", *days})
    expected = expected_from_source(lake)
    assert consumer(lake) == {d: expected[d] for d in ["2024-02-01", *days]}
    # the debounced burst built each day once (events follow their commits)
    eventually(
        lambda: publish_counts(lake, "trips_daily") == dict.fromkeys(["2024-02-01", *days], 1)
    )


def test_a_killed_controller_resumes_from_its_cursors(ray_session, lake, service_stopper):
    from lakeflow.control.client import NAMESPACE, controller_name

    pipeline = TRIPS_ON_START.with_lake(lake)  # module-level: the restart imports it again
    source = f"{lake}/trips"
    write_trips(source, "2024-03-01", [1])
    lf.up(pipeline)
    service_stopper.append(lake)
    write_trips(source, "2024-03-02", [2])
    eventually(lambda: "2024-03-02" in consumer(lake))

    actor = ray_session.get_actor(controller_name(Lake(lake)), namespace=NAMESPACE)
    ray_session.kill(actor, no_restart=False)  # a crash: Ray restarts it
    for day, ids in (("2024-03-03", [3]), ("2024-03-04", [4, 5]), ("2024-03-05", [6])):
        write_trips(source, day, ids)  # while it is down

    # 2024-03-01 (history before `up`) was built on the first start; the restarted controller's
    # start-up request finds it fresh and builds it no second time
    want = {"2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"}
    eventually(lambda: set(consumer(lake)) == want, timeout=90)
    assert consumer(lake)["2024-03-04"] == (2, 4 % 7 + 2.5 + 5 % 7 + 2.5)
    eventually(lambda: len(lf.read_events(Lake(lake), kinds=["triggers_started"])) >= 2, timeout=60)
    time.sleep(1.0)
    # nothing missed, nothing repeated (events follow their commits)
    eventually(lambda: publish_counts(lake, "trips_daily") == dict.fromkeys(want, 1))
    assert_status_agrees(pipeline)


def test_a_failed_table_check_holds_the_consumers(ray_session, lake, service_stopper):
    pipeline = held_pipeline(lake)
    source = f"{lake}/trips"
    write_trips(source, "2024-01-01", [1])
    lf.up(pipeline)
    service_stopper.append(lake)

    write_trips(source, "2024-01-02", [2, 3])
    eventually(lambda: "2024-01-02" in partitions_of(f"{lake}/trips_report"))

    write_trips(source, "2024-01-03", [2])  # id 2 again: trips_checked's table check fails
    failed = lambda: lf.read_events(Lake(lake), kinds=["unit_check_failed"], asset="trips_checked")  # noqa: E731
    eventually(lambda: failed()["partition"].to_list() == ["2024-01-03"])
    time.sleep(1.0)
    assert "2024-01-03" not in partitions_of(f"{lake}/trips_checked")  # checked before commit
    assert "2024-01-03" not in partitions_of(f"{lake}/trips_report")
    # 01-01 on start, 01-02 on its commit; never 01-03 (events follow their commits)
    eventually(lambda: publish_counts(lake, "trips_report") == {"2024-01-01": 1, "2024-01-02": 1})


def test_schedules_fire_and_catch_up_after_downtime(ray_session, lake, service_stopper):
    pipeline = ticking_pipeline(lake)
    missed_from = time.time() - 8
    Path(f"{lake}/{STATE_URL}").parent.mkdir(parents=True)
    Path(f"{lake}/{STATE_URL}").write_text(json.dumps({"ticks": {"every-second": missed_from}}))
    started = time.time()
    lf.up(pipeline)
    service_stopper.append(lake)

    def seconds_built() -> set[str]:
        return set(partitions_of(f"{lake}/ticks", column="second"))

    missed = {time.strftime("%H%M%S", time.gmtime(missed_from + k)) for k in range(1, 8)}
    eventually(lambda: missed <= seconds_built(), timeout=60)
    later = time.strftime("%H%M%S", time.gmtime(started + 3))
    eventually(lambda: later in seconds_built(), timeout=60)  # and it goes on ticking
    lf.down(lake=lake)
    origins = lf.read_events(Lake(lake), kinds=["run_requested"])["message"].to_list()
    assert all(o.startswith("schedule:every-second@") for o in origins)
    ticks = [o.split("@", 1)[1] for o in origins]
    assert len(ticks) == len(set(ticks))  # each tick fired once


def test_catch_up_latest_fires_only_the_newest_missed_tick(ray_session, lake, service_stopper):
    pipeline = ticking_pipeline(lake, catch_up="latest")
    missed_from = time.time() - 30
    Path(f"{lake}/{STATE_URL}").parent.mkdir(parents=True)
    Path(f"{lake}/{STATE_URL}").write_text(json.dumps({"ticks": {"every-second": missed_from}}))
    lf.up(pipeline)
    service_stopper.append(lake)
    eventually(lambda: partitions_of(f"{lake}/ticks", column="second"))
    lf.down(lake=lake)
    built = sorted(partitions_of(f"{lake}/ticks", column="second"))
    oldest_missed = time.strftime("%H%M%S", time.gmtime(missed_from + 1))
    assert oldest_missed not in built and len(built) < 10


def test_a_bounded_catch_up_after_an_hour_down_runs_only_the_newest_ticks(
    ray_session, lake, service_stopper
):
    pipeline = minutes_pipeline(lake, max_catch_up=10)
    down_since = time.time() - 3600
    Path(f"{lake}/{STATE_URL}").parent.mkdir(parents=True)
    Path(f"{lake}/{STATE_URL}").write_text(json.dumps({"ticks": {"every-minute": down_since}}))
    started = time.time()
    lf.up(pipeline)
    service_stopper.append(lake)
    every_minute = pipeline.triggers[0]
    newest = {minute_key(t) for t in every_minute.ticks(down_since, started)[-10:]}
    built = lambda: set(partitions_of(f"{lake}/minutes", column="tick"))  # noqa: E731
    eventually(lambda: len(built()) >= 10, timeout=120)
    lf.down(lake=lake)
    stopped = time.time()
    missed = every_minute.ticks(down_since, stopped)
    fired = [t for t in missed if minute_key(t) in built()]
    assert len(missed) >= 60 and fired == missed[-len(fired) :]  # the newest, none older
    after_up = len(every_minute.ticks(started, stopped))  # a minute may turn during the test
    assert 10 <= len(fired) <= 10 + after_up
    if not after_up:
        assert {minute_key(t) for t in fired} == newest
    skipped = lf.read_events(Lake(lake), kinds=["schedule_ticks_skipped"])
    assert len(skipped) == 1
    assert json.loads(skipped["detail"][0])["skipped"] == len(missed) - len(fired)
    assert "every-minute: skipped" in skipped["message"][0]


def test_ticks_that_fall_while_the_first_up_starts_fire(tmp_path):
    """The first cursor is when `up` was asked: a controller that takes 5 s to start (the clock
    says) still fires the 5 ticks of those seconds, each once."""
    from lakeflow.triggers.engine import TriggerOptions, Triggers
    from tests.test_trigger_races import HeldController

    class Recorder(HeldController):
        async def submit(self, pipeline, request, origin, trigger=None, *, skip_empty=False):
            self.requests.append((origin,))
            return {"run_id": None}

    invoked = 1_700_000_000.0  # on the clock `up` was asked; the controller starts 5 s later
    lake_url = str(tmp_path / "lake")

    async def scenario() -> list[str]:
        controller = Recorder(Lake(lake_url))
        options = TriggerOptions(poll=0.01, clock=lambda: invoked + 5.5, invoked=invoked)
        triggers = Triggers(controller, ticking_pipeline(lake_url), options)  # type: ignore[arg-type]
        await triggers.start()
        try:
            while len(controller.requests) < 5:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # and nothing more comes
        finally:
            await triggers.stop()
        return [origin for (origin,) in controller.requests]

    origins = asyncio.run(scenario())
    seconds = [time.strftime("%H:%M:%S", time.gmtime(invoked + k)) for k in range(1, 6)]
    assert [o.rsplit("T", 1)[1][:8] for o in origins] == seconds


def test_the_first_lakeflow_up_fires_the_ticks_of_its_own_start(ray_session, lake, service_stopper):
    asked = time.time()
    lf.up(ticking_pipeline(lake))
    service_stopper.append(lake)
    # the second after the one `up` was asked in: it fell while Ray and the controller started
    first = time.strftime("%H%M%S", time.gmtime(int(asked) + 1))
    eventually(lambda: first in partitions_of(f"{lake}/ticks", column="second"), timeout=60)
    lf.down(lake=lake)


def test_files_arriving_in_a_local_directory_are_ingested_once(
    ray_session, lake, tmp_path, service_stopper
):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    write_csv(incoming, "orders-1.csv", 3)
    pipeline = files_pipeline(lake, str(incoming))
    lf.up(pipeline)
    service_stopper.append(lake)
    url = f"{lake}/raw_orders"
    eventually(lambda: partitions_of(url, column="file") == {"orders-1.csv": 3})
    write_csv(incoming, "orders-2.csv", 5)
    write_csv(incoming, "orders-3.csv", 1)
    eventually(lambda: len(partitions_of(url, column="file")) == 3)

    lf.down(lake=lake)  # a restart: the files it has seen are not news
    lf.up(pipeline)
    write_csv(incoming, "orders-4.csv", 2)
    eventually(lambda: len(partitions_of(url, column="file")) == 4)
    time.sleep(1.0)
    assert partitions_of(url, column="file") == {
        "orders-1.csv": 3, "orders-2.csv": 5, "orders-3.csv": 1, "orders-4.csv": 2
    }  # fmt: skip
    eventually(lambda: sorted(publish_counts(lake, "raw_orders").values()) == [1, 1, 1, 1])
    row = pl.read_delta(url).filter(pl.col("file") == "orders-2.csv").row(0, named=True)
    assert row["source_file"] == str(incoming / "orders-2.csv")


def test_files_arriving_in_s3_are_ingested_once(ray_session, s3_lake, moto_server, service_stopper):
    url, options = s3_lake
    bucket = url.split("/")[2]
    client = moto_server.client()
    client.put_object(Bucket=bucket, Key="incoming/a.csv", Body=b"order,amount\n1,2.5\n2,3.5\n")
    pipeline = files_pipeline(url, f"s3://{bucket}/incoming", storage_options=options)
    lf.up(pipeline)
    try:
        table = f"{url}/raw_orders"
        eventually(lambda: partitions_of(table, "file", options) == {"a.csv": 2})
        client.put_object(Bucket=bucket, Key="incoming/b.csv", Body=b"order,amount\n3,1.0\n")
        eventually(lambda: partitions_of(table, "file", options) == {"a.csv": 2, "b.csv": 1})
        lf.down(pipeline)
        lf.up(pipeline)  # restarted: a and b are not read again
        client.put_object(Bucket=bucket, Key="incoming/c.csv", Body=b"order,amount\n4,1.0\n")
        eventually(lambda: len(partitions_of(table, "file", options)) == 3)

        def published_files() -> list[str]:
            events = lf.read_events(
                Lake(url, options), kinds=["unit_published"], asset="raw_orders"
            )
            return sorted(events["partition"].to_list())

        eventually(lambda: len(published_files()) >= 3)  # the log is written in batches
        assert published_files() == ["a.csv", "b.csv", "c.csv"]
    finally:
        lf.down(pipeline)


def test_subscribers_receive_every_publish_in_order(ray_session, lake, service_stopper):
    seen: list[lf.Publish] = []
    source = f"{lake}/trips"
    write_trips(source, "2024-01-01", [1])
    subscription = lf.subscribe("trips", seen.append, lake=lake, poll=0.05)
    try:
        for day in ("2024-01-02", "2024-01-03", "2024-01-02"):
            write_trips(source, day, [7])
        eventually(lambda: len(seen) == 3)
    finally:
        subscription.stop()
    assert [p.version for p in seen] == [1, 2, 3]
    assert [p.partitions for p in seen] == [("2024-01-02",), ("2024-01-03",), ("2024-01-02",)]
    assert not any(p.by_lakeflow for p in seen)


def test_on_publish_callbacks_run_in_the_controller(ray_session, lake, tmp_path, service_stopper):
    log = tmp_path / "publishes.jsonl"

    def record(publish: lf.Publish) -> None:
        with open(log, "a") as handle:
            handle.write(
                json.dumps([publish.table, publish.version, list(publish.partitions)]) + "\n"
            )

    # commits only: 2024-01-01 (history) is not built on start, the first publish is 2024-01-09
    pipeline = trips_pipeline(
        lake, on_start="none", triggers=[lf.on_publish("trips_daily", record)]
    )
    write_trips(f"{lake}/trips", "2024-01-01", [1])
    lf.up(pipeline)
    service_stopper.append(lake)
    write_trips(f"{lake}/trips", "2024-01-09", [1, 2])
    eventually(lambda: log.exists() and log.read_text().strip())
    table, version, partitions = json.loads(log.read_text().splitlines()[0])
    assert (table, version, partitions) == ("trips_daily", 0, ["2024-01-09"])


def test_the_http_endpoint_needs_the_token(ray_session, lake, service_stopper):
    import socket
    import urllib.error
    import urllib.request

    from lakeflow.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_trips(f"{lake}/trips", "2024-01-01", [1, 2])
    outcome: dict = {}
    argv = [
        "up",
        "tests.trigger_pipelines:TRIPS",
        "--lake",
        lake,
        "--http",
        f"127.0.0.1:{port}",
        "--token",
        "s3cret",
    ]
    cli = threading.Thread(target=lambda: outcome.setdefault("code", main(argv)))
    service_stopper.append(lake)
    cli.start()

    def post(token: str | None, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/runs", data=json.dumps(body).encode(), method="POST"
        )
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def serving() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
            return True
        except OSError:
            return False

    eventually(serving, timeout=60)
    run = {"select": "trips_daily", "partitions": "2024-01-01"}
    assert post(None, run)[0] == 401
    assert post("wrong", run)[0] == 401
    assert not DeltaTable.is_deltatable(f"{lake}/trips_daily")
    code, reply = post("s3cret", {"select": "nope"})
    assert code == 400 and "unknown asset" in reply["error"]
    code, reply = post("s3cret", run)
    assert code == 202 and reply["run_id"]
    eventually(lambda: consumer(lake) == {"2024-01-01": (2, 1 % 7 + 2.5 + 2 % 7 + 2.5)})
    requested = lf.read_events(Lake(lake), run_id=reply["run_id"], kinds=["run_requested"])
    assert requested["message"].to_list() == ["http"]

    assert lf.down(lake=lake)
    cli.join(30)
    assert outcome == {"code": 0}


def test_consumer_partitions_follow_the_mapping():
    days = lf.DailyPartitions(start="2024-01-01", end="2024-02-01")
    months = lf.MonthlyPartitions(start="2024-01", end="2024-02")
    assert consumer_partitions(months, days, lf.rollup(), ["2024-01-05"]) == ["2024-01"]
    week = consumer_partitions(days, days, lf.lookback(3), ["2024-01-05"])
    assert week == ["2024-01-05", "2024-01-06", "2024-01-07"]
    assert consumer_partitions(days, days, lf.identity(), ["1999-01-01"]) == []


def test_a_source_cannot_be_selected_or_built():
    pipeline = trips_pipeline("./nowhere")
    with pytest.raises(lf.SelectionError, match="trips is a source"):
        pipeline.select("trips")
    assert pipeline.select("*") == ["trips_daily"]
    assert pipeline.select("+trips_daily") == ["trips_daily"]
    with pytest.raises(lf.DefinitionError, match="cron"):
        lf.schedule("every day")


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except OSError:
        return False


def test_lakeflow_up_detached_and_down_from_a_shell(tmp_path):
    """The commands as a user types them: `up --detach` returns and leaves a background process
    (its own embedded Ray) running the triggers; `down` from another shell stops it."""
    import re

    from tests.conftest import ROOT
    from tests.test_cli import _cli

    lake = str(tmp_path / "lake")
    env = {"PYTHONPATH": str(ROOT)}
    write_trips(f"{lake}/trips", "2024-01-01", [1])
    args = ("tests.trigger_pipelines:TRIPS", "--lake", lake)
    done = _cli("up", *args, "--detach", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    pid = int(re.search(r"pid (\d+)", done.stdout).group(1))
    try:
        eventually(lambda: Path(f"{lake}/_lakeflow/triggers/pipeline.json").exists(), timeout=180)
        write_trips(f"{lake}/trips", "2024-01-02", [5, 6])
        eventually(lambda: consumer(lake) == {"2024-01-02": (2, 5 % 7 + 6 % 7 + 5.0)}, timeout=60)

        done = _cli("down", *args, cwd=tmp_path, env_extra=env)
        assert done.returncode == 0, done.stderr
        assert "the triggers stopped" in done.stdout
        eventually(lambda: not _alive(pid), timeout=60)
        log = (tmp_path / "lakeflow-up-trips.log").read_text()
        assert "watching 1 tables" in log and "stopped by `lakeflow down`" in log
        assert _cli("down", *args, cwd=tmp_path, env_extra=env).returncode == 1  # nothing is up
    finally:
        if _alive(pid):
            os.kill(pid, 9)


def test_require_all_waits_for_every_upstream(ray_session, lake, service_stopper):
    from tests.trigger_pipelines import both_pipeline

    write_trips(f"{lake}/trips", "2024-01-01", [1])
    write_trips(f"{lake}/fares", "2024-01-01", [1])
    lf.up(both_pipeline(lake))
    service_stopper.append(lake)
    eventually(lambda: partitions_of(f"{lake}/matched") == {"2024-01-01": 1})  # on start
    write_trips(f"{lake}/trips", "2024-01-02", [1, 2])
    state = Path(f"{lake}/{STATE_URL}")
    eventually(lambda: json.loads(state.read_text())["pending"].get("matched"))
    time.sleep(0.5)
    assert "2024-01-02" not in partitions_of(f"{lake}/matched")  # fares has not changed it yet
    write_trips(f"{lake}/fares", "2024-01-02", [2])
    eventually(lambda: partitions_of(f"{lake}/matched") == {"2024-01-01": 1, "2024-01-02": 1})
    # the fire loop saves the emptied pending keys after its request returns: the run may land first
    eventually(lambda: not json.loads(state.read_text())["pending"].get("matched"))


def test_manual_runs_record_who_asked(ray_session, lake):
    import getpass

    write_trips(f"{lake}/trips", "2024-01-01", [1])
    lf.materialize(trips_pipeline(lake), partitions="2024-01-01")
    detail = json.loads(lf.read_events(Lake(lake), kinds=["run_requested"])["detail"][0])
    assert detail["trigger"] == {"kind": "manual", "user": getpass.getuser()}


def test_lakeflow_subscribe_prints_and_posts_each_publish(tmp_path):
    """`lakeflow subscribe` as a user types it, with a webhook receiving the same JSON."""
    import http.server
    import subprocess
    import sys

    from tests.conftest import ROOT

    received: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    lake = str(tmp_path / "lake")
    write_trips(f"{lake}/trips", "2024-01-01", [1])
    lakeflow = Path(sys.executable).parent / "lakeflow"
    follower = subprocess.Popen(
        [str(lakeflow), "subscribe", "tests.trigger_pipelines:TRIPS", "trips", "--lake", lake,
         "--webhook", f"http://127.0.0.1:{hook.server_address[1]}/publish", "--from-version", "1"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        write_trips(f"{lake}/trips", "2024-01-04", [2])
        write_trips(f"{lake}/trips", "2024-01-05", [3])
        eventually(lambda: len(received) == 2, timeout=60)
        lines = [json.loads(follower.stdout.readline()) for _ in range(2)]
    finally:
        follower.send_signal(2)
        follower.wait(30)
        hook.shutdown()
    assert lines == received
    assert [(p["table"], p["version"], p["partitions"]) for p in lines] == [
        ("trips", 1, ["2024-01-04"]), ("trips", 2, ["2024-01-05"])
    ]  # fmt: skip
    assert follower.returncode == 0


def test_lakeflow_up_in_the_foreground_stops_on_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    lake = str(tmp_path / "lake")
    write_trips(f"{lake}/trips", "2024-01-01", [1])
    lakeflow = Path(sys.executable).parent / "lakeflow"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    foreground = subprocess.Popen(
        [str(lakeflow), "up", "tests.trigger_pipelines:TRIPS", "--lake", lake],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "watching 1 tables" in foreground.stdout.readline()
        write_trips(f"{lake}/trips", "2024-01-03", [4])
        assert "run " in foreground.stdout.readline()  # it says what it started, and why
        eventually(lambda: "2024-01-03" in consumer(lake), timeout=60)
        foreground.send_signal(signal.SIGINT)
        assert foreground.wait(60) == 0
        assert "stopped" in foreground.stdout.read()
        assert not Path(f"{lake}/_lakeflow/triggers/pipeline.json").exists()  # nothing left up
    finally:
        if foreground.poll() is None:
            foreground.kill()


def test_a_schedule_names_the_window_that_just_closed_in_its_timezone():
    from datetime import UTC, datetime, timedelta

    days = lf.DailyPartitions(start="2024-01-01", end="2025-01-01")
    hours = lf.HourlyPartitions(start="2024-01-01T00", end="2025-01-01T00")

    @lf.asset(partitions=days)
    def daily(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    @lf.asset(partitions=hours)
    def hourly(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    pipeline = lf.Pipeline([daily, hourly], lake="./nowhere")
    midnight = datetime(2024, 3, 2, tzinfo=UTC).timestamp()
    assert lf.schedule("0 0 * * *", select="daily").spec(pipeline, midnight) == "2024-03-01"
    assert lf.schedule("0 * * * *", select="hourly").spec(pipeline, midnight) == "2024-03-01T23"
    paris = lf.schedule("0 0 * * *", select="daily", tz="Europe/Paris")
    ticks = paris.ticks(midnight - 86400 * 2, midnight)
    assert [datetime.fromtimestamp(t, UTC).hour for t in ticks] == [23, 23]  # midnight in Paris
    every_minute = lf.schedule("* * * * *", select="daily")
    assert len(every_minute.ticks(midnight - 600, midnight)) == 10
    with pytest.raises(lf.DefinitionError, match="timezone"):
        lf.schedule("0 0 * * *", tz="Mars/Olympus")
    for bad in (0, -3, 2.5, timedelta(0), "10"):
        with pytest.raises(lf.DefinitionError, match="max_catch_up"):
            lf.schedule("* * * * *", max_catch_up=bad)
    with pytest.raises(lf.DefinitionError, match="max_catch_up bounds catch_up='all'"):
        lf.schedule("* * * * *", catch_up="latest", max_catch_up=10)
    hour_down = midnight - 3600
    window = lf.schedule("* * * * *", max_catch_up=timedelta(minutes=5)).due(hour_down, midnight)
    assert [midnight - t for t in window.ticks] == [240, 180, 120, 60, 0]
    assert (window.skipped, window.skipped_until) == (55, midnight - 300)
    count = lf.schedule("* * * * *", max_catch_up=3).due(hour_down, midnight)
    assert (len(count.ticks), count.skipped) == (3, 57)
    assert lf.schedule("* * * * *").due(hour_down, midnight).skipped == 0
    with pytest.raises(lf.SelectionError):
        lf.Pipeline([daily], lake="./nowhere", triggers=[lf.schedule("0 0 * * *", select="nope")])
