"""Files arriving under a `FilePartitions` glob while `lakeflow up` runs, with the session's local
Ray and real Delta tables: a file is read only once it has settled, in-progress names are never
read, a changed file is re-run (or refused), a failing file is set aside across restarts until it
is retried by hand. Each test compares the lake's rows with the files on disk (or in moto S3)."""

from __future__ import annotations

import textwrap
import time
import uuid
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.lake import Lake
from lakeflow.lake.log import TableState
from tests.conftest import eventually
from tests.trigger_pipelines import files_pipeline, write_csv


def lake_rows(url: str, storage_options=None) -> dict[str, int]:
    """file key -> rows, in the table's current version."""
    if not DeltaTable.is_deltatable(url, storage_options=storage_options):
        return {}
    frame = pl.read_delta(url, storage_options=storage_options)
    return dict(frame.group_by("file").len().iter_rows()) if len(frame) else {}


def disk_rows(directory: Path, names: list[str]) -> dict[str, int]:
    """file name -> rows of the CSVs on disk, as the lake should hold them."""
    return {name: len(pl.read_csv(directory / name)) for name in names}


def events(lake: str, kind: str, storage_options=None) -> pl.DataFrame:
    return lf.read_events(Lake(lake, storage_options or {}), kinds=[kind], asset="raw_orders")


def wait_events(lake: str, kind: str, count: int = 1, storage_options=None) -> pl.DataFrame:
    """The asset's events of `kind` once there are `count` (the log is written in batches)."""
    eventually(lambda: events(lake, kind, storage_options).height >= count)
    return events(lake, kind, storage_options)


def csv_text(first: int, count: int) -> str:
    return "".join(f"{i},1.5\n" for i in range(first, first + count))


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    path = tmp_path / "incoming"
    path.mkdir()
    return path


@pytest.fixture
def up(lake):
    """lf.up, and lf.down at the end of the test whatever happened."""
    started: list[lf.Pipeline] = []

    def start(pipeline: lf.Pipeline) -> None:
        lf.up(pipeline)
        started.append(pipeline)

    yield start
    for pipeline in started[-1:]:
        try:
            lf.down(pipeline, timeout=10)
        except lf.LakeflowError:
            pass


def test_a_slow_writer_pausing_less_than_settle_is_read_once_whole(ray_session, lake, incoming, up):
    up(files_pipeline(lake, str(incoming), poll=0.1, settle=3.0))
    path = incoming / "orders.csv"
    with path.open("w") as out:
        out.write("order,amount\n" + csv_text(0, 1000))
        out.flush()
        # the writer's pause: many polls, and long enough for a unit to read the half, but
        # shorter than `settle`
        time.sleep(1.5)
        out.write(csv_text(1000, 1000))
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["orders.csv"]))
    assert lake_rows(url) == {"orders.csv": 2000}
    assert wait_events(lake, "unit_published")["rows"].to_list() == [2000]  # never the first half


def test_a_file_that_grows_after_it_was_read_is_read_again(ray_session, lake, incoming, up):
    up(files_pipeline(lake, str(incoming), poll=0.1, settle=0.3))
    path = incoming / "orders.csv"
    path.write_text("order,amount\n" + csv_text(0, 1000))
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == {"orders.csv": 1000})  # the pause outlasted `settle`
    with path.open("a") as out:
        out.write(csv_text(1000, 1000))
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["orders.csv"]))
    assert lake_rows(url) == {"orders.csv": 2000}
    changed = wait_events(lake, "file_changed")
    assert changed["partition"].to_list() == ["orders.csv"]
    assert lf.file_status(files_pipeline(lake, str(incoming))).is_empty()  # built from it as it is
    table = TableState.load(Lake(lake), url, column="file")
    recorded = table.published["orders.csv"].inputs  # what the commit says it was built from
    assert recorded["@size"] == path.stat().st_size
    assert recorded["@mtime"] == int(path.stat().st_mtime * 1_000_000)


def test_slow_writers_on_s3(ray_session, s3_lake, moto_server, up):
    """An object store has no half-written objects, but a producer that puts an object twice
    (a first part, then all of it) looks the same: a second put within `settle` is the only
    one read; a second put after it was read re-runs it."""
    url, options = s3_lake
    bucket = url.split("/")[2]
    client = moto_server.client()
    pipeline = files_pipeline(
        url, f"s3://{bucket}/incoming", storage_options=options, poll=0.1, settle=3.0
    )
    table = f"{url}/raw_orders"
    head = "order,amount\n" + csv_text(0, 500)
    client.put_object(Bucket=bucket, Key="incoming/quick.csv", Body=head.encode())
    up(pipeline)
    time.sleep(1.5)  # the producer's pause: many polls, shorter than `settle`
    client.put_object(
        Bucket=bucket, Key="incoming/quick.csv", Body=(head + csv_text(500, 500)).encode()
    )
    eventually(lambda: lake_rows(table, options) == {"quick.csv": 1000})

    client.put_object(Bucket=bucket, Key="incoming/slow.csv", Body=head.encode())
    eventually(lambda: lake_rows(table, options) == {"quick.csv": 1000, "slow.csv": 500})
    client.put_object(
        Bucket=bucket, Key="incoming/slow.csv", Body=(head + csv_text(500, 700)).encode()
    )
    eventually(lambda: lake_rows(table, options) == {"quick.csv": 1000, "slow.csv": 1200})

    published = wait_events(url, "unit_published", 3, options).sort("partition", "rows")
    assert published.select("partition", "rows").rows() == [
        ("quick.csv", 1000),
        ("slow.csv", 500),
        ("slow.csv", 1200),
    ]


def test_a_file_replaced_in_place_is_rerun(ray_session, lake, incoming, up):
    up(files_pipeline(lake, str(incoming), poll=0.1, settle=0.2))
    write_csv(incoming, "a.csv", 3)
    write_csv(incoming, "b.csv", 4)
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == {"a.csv": 3, "b.csv": 4})
    write_csv(incoming, "a.csv", 7)  # a new file renamed over the old one
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["a.csv", "b.csv"]))
    assert lake_rows(url) == {"a.csv": 7, "b.csv": 4}


def test_with_on_change_refuse_a_replaced_file_keeps_its_data(
    ray_session, lake, incoming, up, capsys
):
    pipeline = files_pipeline(lake, str(incoming), poll=0.1, settle=0.2, on_change="refuse")
    up(pipeline)
    write_csv(incoming, "a.csv", 3)
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == {"a.csv": 3})
    write_csv(incoming, "a.csv", 7)
    changed = wait_events(lake, "file_changed")
    assert "refused" in changed["message"][0]
    write_csv(incoming, "b.csv", 2)  # read after the change was seen: the sensor went on
    eventually(lambda: lake_rows(url) == {"a.csv": 3, "b.csv": 2})
    files = lf.file_status(pipeline)
    assert files.select("file", "state").rows() == [("a.csv", "changed")]
    assert "the file changed since" in files["message"][0] and "refused" in files["message"][0]
    assert lf.status(pipeline).row(0, named=True)["stale"] == 0  # refused: not to be re-run


def test_in_progress_names_are_never_read(ray_session, lake, incoming, up):
    """`*.tmp`, `*_COPYING_*`, '.' and '_' prefixed names are what writers use until a file is
    whole; the glob here matches every name."""
    up(files_pipeline(lake, str(incoming), pattern="*", poll=0.1, settle=0.2))
    (incoming / "orders.csv.tmp").write_text("order,amount\n" + csv_text(0, 10))
    (incoming / "more.csv._COPYING_").write_text("order,amount\n" + csv_text(0, 2))
    (incoming / ".hidden.csv").write_text("order,amount\n" + csv_text(0, 2))
    (incoming / "_SUCCESS").write_text("")
    write_csv(incoming, "first.csv", 1)
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == {"first.csv": 1})  # listed with the others, and settled
    (incoming / "orders.csv.tmp").rename(incoming / "orders.csv")
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["first.csv", "orders.csv"]))
    assert lake_rows(url) == {"first.csv": 1, "orders.csv": 10}


def test_fifty_files_at_once_are_each_read_once(ray_session, lake, incoming, up):
    up(files_pipeline(lake, str(incoming), poll=0.1, settle=0.3))
    names = [f"orders-{i:02d}.csv" for i in range(50)]
    for i, name in enumerate(names):
        (incoming / name).write_text("order,amount\n" + csv_text(0, i + 1))
    url = f"{lake}/raw_orders"
    expected = disk_rows(incoming, names)
    eventually(lambda: lake_rows(url) == expected)
    published = wait_events(lake, "unit_published", 50)
    assert sorted(published["partition"].to_list()) == names  # each once


FLAKY = """
from pathlib import Path

import polars as pl

import lakeflow as lf

INCOMING = Path({incoming!r})


@lf.asset(
    partitions=lf.FilePartitions(
        f"{{INCOMING}}/*.csv", poll=0.1, settle=0.2, on_change={on_change!r}
    ),
    retry=lf.RetryPolicy(attempts=2, backoff=0.05),
)
def raw_orders(ctx: lf.Context) -> pl.DataFrame:
    if ctx.partition.key.startswith("flaky") and (INCOMING.parent / "outage").exists():
        raise ConnectionError("the orders API is down")
    return pl.read_csv(ctx.partition.url)


PIPELINE = lf.Pipeline([raw_orders], lake={lake!r}, name="flaky")
"""


def flaky_pipeline(
    tmp_path: Path, incoming: Path, lake: str, on_change: str = "rerun"
) -> tuple[Path, lf.Pipeline]:
    """The FLAKY pipeline in a module of its own name (Ray's workers keep modules by name)."""
    source = tmp_path / f"flaky_{uuid.uuid4().hex[:8]}.py"
    text = FLAKY.format(incoming=str(incoming), lake=lake, on_change=on_change)
    source.write_text(textwrap.dedent(text))
    return source, lf.load_pipeline(str(source))


def test_a_failing_file_is_set_aside_across_restarts_until_retried(
    ray_session, lake, incoming, tmp_path, up, capsys
):
    source, pipeline = flaky_pipeline(tmp_path, incoming, lake)
    (tmp_path / "outage").touch()
    write_csv(incoming, "flaky.csv", 4)
    write_csv(incoming, "good-0.csv", 2)
    url = f"{lake}/raw_orders"
    up(pipeline)
    eventually(lambda: lake_rows(url) == {"good-0.csv": 2})
    wait_events(lake, "unit_failed")  # after its 2 attempts
    tries = events(lake, "unit_started").filter(pl.col("partition") == "flaky.csv").height
    assert tries == 2

    for restart in (1, 2):  # `up` again: the failed file is not run again
        lf.down(pipeline, timeout=30)
        up(pipeline)
        write_csv(incoming, f"good-{restart}.csv", 1)
        eventually(lambda r=restart: f"good-{r}.csv" in lake_rows(url))
    lf.down(pipeline, timeout=30)
    started = events(lake, "unit_started").filter(pl.col("partition") == "flaky.csv")
    assert started.height == tries
    assert lake_rows(url) == disk_rows(incoming, ["good-0.csv", "good-1.csv", "good-2.csv"])

    capsys.readouterr()
    assert main(["status", str(source)]) == 0
    out = capsys.readouterr().out
    assert "flaky.csv" in out and "the orders API is down" in out
    assert "--partitions flaky.csv" in out

    (tmp_path / "outage").unlink()  # fixed: retried by hand
    argv = ["materialize", str(source), "--select", "raw_orders", "--partitions", "flaky.csv"]
    assert main([*argv, "--no-progress"]) == 0
    names = ["flaky.csv", "good-0.csv", "good-1.csv", "good-2.csv"]
    assert lake_rows(url) == disk_rows(incoming, names)
    capsys.readouterr()
    assert main(["status", str(source), "--files", "--json"]) == 0
    assert capsys.readouterr().out.strip() in ("[]", "")


def test_a_failed_file_runs_again_once_it_changes(ray_session, lake, incoming, tmp_path, up):
    _, pipeline = flaky_pipeline(tmp_path, incoming, lake)
    (tmp_path / "outage").touch()
    write_csv(incoming, "flaky.csv", 4)
    up(pipeline)
    wait_events(lake, "unit_failed")
    assert lf.file_status(pipeline).select("file", "state").rows() == [("flaky.csv", "failed")]
    (tmp_path / "outage").unlink()
    write_csv(incoming, "flaky.csv", 5)  # the producer delivers it again
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["flaky.csv"]))
    assert lake_rows(url) == {"flaky.csv": 5}
    # the file's unit_published event follows its commit; until it lands the last event is
    # the earlier failure
    eventually(lambda: lf.file_status(pipeline).is_empty())


def test_with_on_change_refuse_a_failed_file_that_changes_is_taken(
    ray_session, lake, incoming, tmp_path, up
):
    """`refuse` keeps a file's published data; a file whose run failed has none to keep."""
    _, pipeline = flaky_pipeline(tmp_path, incoming, lake, on_change="refuse")
    (tmp_path / "outage").touch()
    write_csv(incoming, "flaky.csv", 4)
    up(pipeline)
    wait_events(lake, "unit_failed")
    (tmp_path / "outage").unlink()
    write_csv(incoming, "flaky.csv", 6)
    url = f"{lake}/raw_orders"
    eventually(lambda: lake_rows(url) == disk_rows(incoming, ["flaky.csv"]))
    assert lake_rows(url) == {"flaky.csv": 6}


def test_a_change_seen_after_a_failure_clears_it_for_the_next_start(lake):
    """The sensor saw the failed file change (and registered it) but lakeflow stopped before
    the new run's outcome: at the next start the file is tried again, not set aside."""
    from lakeflow.lake import Lake
    from lakeflow.lake.events import Event, EventLog
    from lakeflow.plan.status import held_partitions

    log = EventLog(Lake(lake))
    log.emit(Event("run-1", "unit_failed", asset="raw_orders", partition="flaky.csv"))
    log.emit(Event("run-1", "unit_failed", asset="raw_orders", partition="other.csv"))
    log.emit(Event("", "file_changed", asset="raw_orders", partition="flaky.csv"))
    log.flush()
    held = held_partitions(Lake(lake), "raw_orders", cleared_by=("file_changed",))
    assert held == {"raw_orders": {"failed": ["other.csv"]}}
    assert held_partitions(Lake(lake), "raw_orders")["raw_orders"]["failed"] == [
        "flaky.csv",
        "other.csv",
    ]  # status still says what failed last


def test_resuming_a_file_run_logs_the_publishes_a_dead_controller_never_wrote_down(
    ray_session, lake, incoming, tmp_path, up
):
    """A controller that died after a file's commit but before its events reached the log: the
    one that resumes the run finds the file among the registered ones and logs the publish.
    (A fresh controller knows no files until it reads the registry: the publish was skipped as
    "a partition the definition no longer has", found by the stress.)"""
    import shutil

    _, pipeline = flaky_pipeline(tmp_path, incoming, lake)  # importable: a module of its own
    write_csv(incoming, "late.csv", 3)
    up(pipeline)
    eventually(lambda: lake_rows(f"{lake}/raw_orders") == {"late.csv": 3})
    run_id = wait_events(lake, "unit_published")["run_id"][0]
    lf.down(pipeline, timeout=30)
    lf.stop(lake)  # its controller is gone ...
    shutil.rmtree(Path(lake, "_lakeflow", "events"))  # ... and so is every event of the run

    assert lf.resume(run_id, lake=lake).ok
    published = events(lake, "unit_published")
    assert published.select("run_id", "partition").rows() == [(run_id, "late.csv")]
    assert '"repaired": true' in published["detail"][0]
