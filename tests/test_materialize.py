"""lakeflow.materialize as a notebook calls it, on the in-process executor (the same controller
code as on Ray, without a cluster), against real Delta tables."""

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

import lakeflow as lf
from tests.conftest import lake_fingerprint, status_agrees_after
from tests.pipelines import PIPELINE


@pytest.fixture(autouse=True)
def _status_agrees_with_the_dry_run(request, tmp_path):
    yield
    status_agrees_after(request, PIPELINE, tmp_path)


def run(lake, select=None, partitions=None, **options):
    return lf.materialize(
        PIPELINE, select=select, partitions=partitions, lake=lake, executor="local", **options
    )


def test_materialize_publishes_every_unit_with_its_record(lake, control):
    result = run(lake)
    assert result.ok, result
    assert result.counts() == {"published": 10 + 10 + 10 + 1 + 1}
    units = result.units
    row = units.filter((pl.col("asset") == "events") & (pl.col("partition") == "2024-01-03")).row(
        0, named=True
    )
    assert row["rows"] == 4 and row["bytes"] > 0 and row["version"] >= 0 and row["attempts"] == 1
    spend = pl.read_delta(f"{lake}/spend").filter(pl.col("date") == "2024-01-03").sort("user")
    assert spend["amount"].to_list() == [30, 31, 32, 33]
    three = pl.read_delta(f"{lake}/spend_3d").filter(pl.col("date") == "2024-01-03").sort("user")
    assert (
        three["amount"].to_list() == [10 + 20 + 30 + 3 * i for i in range(4)]
        and three["days"].to_list() == [3] * 4
    )
    monthly = pl.read_delta(f"{lake}/spend_monthly")
    assert monthly["days"].to_list() == [10] * 4 and monthly["month"].unique().to_list() == [
        "2024-01"
    ]
    assert pl.read_delta(f"{lake}/users")["user"].to_list() == ["u0", "u1", "u2", "u3"]


def test_fresh_units_are_skipped_and_force_reruns_them(lake, control):
    run(lake)
    again = run(lake)
    assert again.ok and again.counts() == {"fresh": 32}
    forced = run(lake, select="spend", partitions="2024-01-02", force=True)
    assert forced.counts() == {"published": 1}
    # the forced publish changed spend 2024-01-02: its consumers are now stale, and only them
    follow = run(lake, select="spend+")
    published = follow.units.filter(pl.col("outcome") == "published")
    assert sorted(published.select("asset", "partition").iter_rows()) == [
        ("spend_3d", "2024-01-02"), ("spend_3d", "2024-01-03"), ("spend_3d", "2024-01-04"),
        ("spend_monthly", "2024-01"), ("users", ""),
    ]  # fmt: skip


def test_an_outside_commit_makes_exactly_its_consumer_partitions_stale(lake, control):
    run(lake)
    frame = pa.table({"user": ["u9"], "amount": [1], "date": ["2024-01-07"]})
    write_deltalake(f"{lake}/events", frame, mode="overwrite", predicate="date = '2024-01-07'")
    result = run(lake, select="spend+")
    rerun = sorted(
        result.units.filter(pl.col("outcome") == "published")
        .select("asset", "partition")
        .iter_rows()
    )
    assert rerun == [
        ("spend", "2024-01-07"), ("spend_3d", "2024-01-07"), ("spend_3d", "2024-01-08"),
        ("spend_3d", "2024-01-09"), ("spend_monthly", "2024-01"), ("users", ""),
    ]  # fmt: skip
    assert pl.read_delta(f"{lake}/spend").filter(pl.col("date") == "2024-01-07")[
        "user"
    ].to_list() == ["u9"]


def test_a_failing_function_fails_its_unit_only_and_holds_its_consumers(lake, control):
    (control / "fail-spend-2024-01-04").touch()
    result = run(lake)
    assert not result.ok and result.status == "failed"
    outcome = {
        (a, p): o for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()
    }
    assert outcome[("spend", "2024-01-04")] == "failed"
    assert outcome[("spend", "2024-01-05")] == "published"
    assert outcome[("spend_3d", "2024-01-04")] == "upstream_failed"
    assert outcome[("spend_3d", "2024-01-07")] == "published"
    assert outcome[("spend_monthly", "2024-01")] == "upstream_failed"
    failed = result.units.filter(pl.col("outcome") == "failed").row(0, named=True)
    assert failed["attempts"] == 2  # the policy of spend: two attempts
    assert "ValueError: spend 2024-01-04: bad data" in failed["error"]
    traceback = result.errors["spend 2024-01-04"]
    assert "tests/pipelines.py" in traceback and "lakeflow/worker.py" not in traceback
    assert pl.read_delta(f"{lake}/spend").filter(pl.col("date") == "2024-01-04").is_empty()
    with pytest.raises(lf.RunError, match="spend 2024-01-04"):
        result.raise_on_failure()
    (control / "fail-spend-2024-01-04").unlink()
    fixed = run(lake)
    assert fixed.ok and fixed.counts()["published"] == 1 + 3 + 1 + 1


def test_retries_follow_the_policy(lake, control):
    (control / "flaky-events-2024-01-02").touch()
    result = run(lake, select="events")
    row = result.units.filter(pl.col("partition") == "2024-01-02").row(0, named=True)
    assert row["outcome"] == "published" and row["attempts"] == 2
    kinds = lf.read_events(lf.Lake(lake), run_id=result.run_id)["kind"].to_list()
    assert kinds.count("unit_retry") == 1 and kinds.count("unit_published") == 10


def test_errors_not_named_by_retry_on_are_not_retried(lake, control):
    @lf.asset(retry=lf.RetryPolicy(attempts=5, backoff=0.01, retry_on=(TimeoutError,)))
    def picky() -> pl.DataFrame:
        raise KeyError("no such column")

    result = lf.materialize([picky], lake=lake, executor="local")
    row = result.units.row(0, named=True)
    assert row["outcome"] == "failed" and row["attempts"] == 1 and "KeyError" in row["error"]


def test_wrong_return_type_is_a_clear_failure_that_is_not_retried(lake):
    @lf.asset(retry=3)
    def broken() -> dict:
        return {"a": [1]}

    result = lf.materialize([broken], lake=lake, executor="local")
    row = result.units.row(0, named=True)
    assert row["outcome"] == "failed" and row["attempts"] == 1
    assert "asset broken returned builtins.dict" in row["error"]
    assert lake_fingerprint(lake) == {}


def test_schema_conflict_with_the_existing_table_changes_nothing(lake):
    @lf.asset(name="prices", partitions=lf.StaticPartitions(["eu", "us"]))
    def prices_v1(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"sku": ["a"], "price": [1.5]})

    assert lf.materialize([prices_v1], lake=lake, executor="local").ok
    before = lake_fingerprint(lake)

    @lf.asset(name="prices", partitions=lf.StaticPartitions(["eu", "us"]))
    def prices_v2(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"sku": ["a"], "price": ["1.5"], "currency": ["EUR"]})

    result = lf.materialize([prices_v2], lake=lake, executor="local")
    errors = result.units["error"].to_list()
    assert result.counts() == {"failed": 2}
    assert (
        "extra columns currency" in errors[0]
        and "column price: table has double, output has string" in errors[0]
    )
    assert lake_fingerprint(lake) == before
    assert pl.read_delta(f"{lake}/prices")["price"].to_list() == [1.5, 1.5]


def test_a_unit_whose_input_is_missing_fails_before_running(lake, control):
    run(lake, select="events,spend", partitions="2024-01-01..2024-01-05")
    result = run(lake, select="spend_3d", partitions="2024-01-05..2024-01-06")
    outcome = dict(result.units.select("partition", "outcome").iter_rows())
    assert outcome == {"2024-01-05": "published", "2024-01-06": "failed"}
    error = result.units.filter(pl.col("partition") == "2024-01-06")["error"][0]
    assert "input spend partition 2024-01-06 is not materialized" in error


@pytest.mark.parametrize(
    ("select", "partitions", "error", "message"),
    [
        ("spnd", None, lf.SelectionError, "unknown asset 'spnd'.*did you mean 'spend'"),
        ("spend", "2023-12-31", lf.PartitionError, "before the first partition 2024-01-01"),
        ("spend", "2024-01-12", lf.PartitionError, "after the last partition 2024-01-10"),
        ("spend", "../x", lf.PartitionError, "malformed"),
        ("spend", "2024-02-30", lf.PartitionError, "not a real date"),
        ("users", "2024-01-01", lf.PartitionError, "no selected asset is partitioned"),
    ],
)
def test_bad_requests_raise_before_anything_changes(
    lake, control, select, partitions, error, message
):
    run(lake, select="events", partitions="2024-01-01")
    before = lake_fingerprint(lake)
    with pytest.raises(error, match=message):
        run(lake, select=select, partitions=partitions)
    assert lake_fingerprint(lake) == before


def test_inputs_are_the_mapped_partitions_pinned_to_a_version(lake, control):
    seen = {}

    @lf.asset(
        partitions=lf.DailyPartitions(start="2024-01-01", end="2024-01-11"),
        name="spend_3d",
        inputs={"spend": lf.lookback(3)},
    )
    def probe(ctx: lf.Context, spend: pl.LazyFrame) -> pl.DataFrame:
        seen[ctx.partition.key] = (
            sorted(spend.select("date").unique().collect()["date"].to_list()),
            dict(ctx.input_versions),
        )
        return pl.DataFrame({"n": [1]})

    run(lake, select="events,spend")
    version = DeltaTable(f"{lake}/spend").version()
    lf.materialize(
        lf.Pipeline([*(PIPELINE[n] for n in ("events", "spend")), probe]),
        select="spend_3d",
        partitions="2024-01-01..2024-01-04",
        lake=lake,
        executor="local",
    )
    assert seen["2024-01-01"][0] == ["2024-01-01"]
    assert seen["2024-01-04"] == (["2024-01-02", "2024-01-03", "2024-01-04"], {"spend": version})


def test_status_counts_published_stale_failed_and_missing(lake, control):
    (control / "fail-spend-2024-01-09").touch()
    run(lake, partitions="2024-01-01..2024-01-09")
    frame = lf.status(PIPELINE, lake=lake)
    rows = {r["asset"]: r for r in frame.iter_rows(named=True)}
    assert (rows["events"]["published"], rows["events"]["missing"]) == (9, 1)
    spend = rows["spend"]
    assert (spend["published"], spend["failed"], spend["missing"]) == (
        8,
        1,
        1,
    )  # each partition once
    # its input 2024-01-10 lies outside the request: the roll-up waited, it did not fail
    assert (rows["spend_monthly"]["failed"], rows["spend_monthly"]["missing"]) == (0, 1)
    assert rows["events"]["last_publish"] is not None
    write_deltalake(
        f"{lake}/events",
        pa.table({"user": ["x"], "amount": [1], "date": ["2024-01-02"]}),
        mode="overwrite",
        predicate="date = '2024-01-02'",
    )
    rows = {r["asset"]: r for r in lf.status(PIPELINE, lake=lake).iter_rows(named=True)}
    assert rows["events"]["stale"] == 1  # written by someone else: lakeflow would rebuild it
    assert rows["spend"]["stale"] == 1 and rows["spend_3d"]["stale"] == 3


def test_the_event_log_records_runs_and_units(lake, control):
    result = run(lake, select="events", partitions="2024-01-01..2024-01-02")
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id)
    assert (
        events["kind"].to_list()[0] == "run_requested"
        and events["kind"].to_list()[-1] == "run_finished"
    )
    published = events.filter(pl.col("kind") == "unit_published")
    assert sorted(published["partition"].to_list()) == ["2024-01-01", "2024-01-02"]
    assert set(events["schema_version"].to_list()) == {1}
    assert published["version"].to_list()[0] == DeltaTable(f"{lake}/events").version()


def test_group_commits_put_many_units_in_one_version(lake, control):
    result = run(lake, select="events")
    assert result.units["version"].n_unique() < 10
    history = DeltaTable(f"{lake}/events").history()
    units = sum(len(g["keys"]) for h in history if "lakeflow" in h for g in h["lakeflow"]["groups"])
    assert units == 10


def test_progress_reaches_a_callable_until_the_run_is_done(lake, control):
    seen = []
    result = run(lake, select="events", progress=seen.append)
    assert result.ok and seen and seen[-1]["done"]
    assert seen[-1]["total"] == 10 and seen[-1]["published"] == 10 and seen[-1]["failed"] == 0


def test_the_progress_bar_prints_plain_lines_off_a_terminal():
    import io

    from rich.console import Console

    from lakeflow.progress import ProgressBar

    out = io.StringIO()
    with ProgressBar("r1", console=Console(file=out, force_terminal=False)) as bar:
        bar.update({"published": 3, "failed": 1, "total": 10, "done": False})
        bar.update({"published": 9, "failed": 1, "total": 10, "done": True})
    assert "run r1: 10/10 units done, 1 failed" in out.getvalue()


def test_an_hourly_asset_reads_its_day(lake, control):
    hours = lf.HourlyPartitions(start="2024-01-01T00", end="2024-01-02T00")

    @lf.asset(partitions=hours)
    def hourly_share(events: pl.LazyFrame, ctx: lf.Context) -> pl.LazyFrame:
        return events.select(
            pl.col("amount").sum().alias("day_total"),
            pl.lit(ctx.partition.start.hour).alias("hour_of_day"),
        )

    pipeline = lf.Pipeline([PIPELINE["events"], hourly_share])
    result = lf.materialize(pipeline, partitions="2024-01-01", lake=lake, executor="local")
    assert result.counts() == {"published": 1 + 24}
    table = pl.read_delta(f"{lake}/hourly_share").sort("hour")
    assert table["hour"].to_list()[:2] == ["2024-01-01T00", "2024-01-01T01"]
    assert table["day_total"].unique().to_list() == [10 + 11 + 12 + 13]


def test_many_commits_leave_checkpoints_that_keep_the_log_short(tmp_path):
    from lakeflow.lake.log import TableState
    from tests.test_lake import commit, day_frame, stage

    where = lf.Lake(str(tmp_path / "lake"))
    url = where.table_url("orders")
    state = None
    for i in range(101):
        key = f"2024-01-{i % 28 + 1:02d}"
        _, state = commit(where, url, [stage(where, url, key, day_frame(key, n=1))], state=state)
    checkpoints = sorted((tmp_path / "lake" / "orders" / "_delta_log").glob("*.checkpoint.parquet"))
    assert [c.name[:20] for c in checkpoints] == [f"{99:020d}"]  # every 100 commits
    assert TableState.load(where, url).version == 100


def test_a_commit_that_fails_on_our_own_state_reloads_it_from_the_lake(lake, monkeypatch):
    """An error of ours (not the lake's) in a commit may mean the controller's view of the table
    went wrong; the retry must not meet the same wrong view (a CI run once failed every unit on a
    table state left without its schema)."""
    import lakeflow.control.group_commit as commits_module

    @lf.asset(
        partitions=lf.StaticPartitions(["eu", "us", "jp"]),
        retry=lf.RetryPolicy(attempts=3, backoff=0.01),
    )
    def prices(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"sku": [ctx.partition.key], "price": [1.5]})

    assert lf.materialize([prices], partitions="eu", lake=lake, executor="local").ok
    real, broken = commits_module.publish, []

    def publish_with_a_lost_schema(where, state, **kwargs):
        if not broken:
            broken.append(state.version)
            state.schema = None  # the view goes wrong; the commit trips over it
        return real(where, state, **kwargs)

    monkeypatch.setattr(commits_module, "publish", publish_with_a_lost_schema)
    result = lf.materialize([prices], partitions="us,jp", lake=lake, executor="local")
    assert broken == [0] and result.ok, result.units
    events = lf.read_events(lf.Lake(lake), run_id=result.run_id)
    assert events.filter(pl.col("kind") == "table_reloaded")["message"][0].startswith(
        "after AssertionError"
    )
    assert events.filter(pl.col("kind") == "unit_published").height == 2
    assert sorted(pl.read_delta(f"{lake}/prices")["sku"].to_list()) == ["eu", "jp", "us"]


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_an_input_whose_schema_grew_is_read_with_the_new_columns(lake, order):
    """A producer's schema-merging append adds a column: the files written before it lack the
    column, and a unit reading both kinds sees it, null where it was not written."""
    days = lf.DailyPartitions(start="2024-01-01", end="2024-01-03", column="day")
    trips = lf.source("trips", partitions=days)

    @lf.asset(partitions=days)
    def tipped(trips: pl.LazyFrame) -> pl.LazyFrame:
        return trips.select(
            pl.len().alias("trips"), pl.col("tip").sum().alias("tips"), pl.col("tip").null_count()
        )

    old = pa.table({"fare": [1.0, 2.0], "day": ["2024-01-01"] * 2})
    new = pa.table({"fare": [3.0], "tip": [0.5], "day": ["2024-01-01"]})
    source = f"{lake}/trips"
    first, second = (old, new) if order == "old_first" else (new, old)
    write_deltalake(source, first, partition_by=["day"])
    write_deltalake(source, second, mode="append", partition_by=["day"], schema_mode="merge")
    pipeline = lf.Pipeline([trips, tipped], lake=lake)
    result = lf.materialize(pipeline, partitions="2024-01-01", executor="local")
    assert result.ok, result.units["error"].to_list()
    row = pl.read_delta(f"{lake}/tipped").row(0, named=True)
    assert (row["trips"], row["tips"], row["tip"]) == (3, 0.5, 2)


def test_a_rollup_whose_window_reaches_past_the_request_is_waiting(lake, control):
    result = run(lake, partitions="2024-01-01..2024-01-03")
    assert result.ok, result
    waiting = result.units.filter(pl.col("outcome") == "waiting").row(0, named=True)
    assert (waiting["asset"], waiting["partition"]) == ("spend_monthly", "2024-01")
    assert "spend 2024-01-04" in waiting["error"] and "outside the requested" in waiting["error"]
    assert "select" not in waiting["error"]  # selecting more assets would not help
    assert "waiting" in result.summary()
    consumers = result.units.filter(pl.col("asset") == "users")  # reads spend, not the roll-up
    assert consumers["outcome"].to_list() == ["published"]
    assert not (Path(lake) / "spend_monthly").exists()
    # the same roll-up inside a request that covers its window runs
    whole = run(lake, select="events,spend,spend_monthly", partitions="2024-01-01..2024-01-10")
    assert whole.ok and "waiting" not in whole.counts()
    assert pl.read_delta(f"{lake}/spend_monthly").height == 4


def test_a_lookback_reaching_before_the_request_is_waiting_not_failed(lake, control):
    result = run(lake, select="events,spend,spend_3d", partitions="2024-01-05")
    outcome = {(a, p): o for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()}  # fmt: skip
    assert outcome[("spend_3d", "2024-01-05")] == "waiting" and result.ok
