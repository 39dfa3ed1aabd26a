"""`lakeflow optimize` and `lf.Compaction`: compaction and z-order commits move rows between files
and change nothing else. Partitions keep what they were published with (status, lineage), no
consumer goes stale, no trigger or subscriber fires, a later publish replaces an optimized
partition whole, and optimize and publishes racing on one table both end correct. Real Delta
tables, the local executor.

lakeflow stages one file per unit; a partition with many small files is built here the way such a
unit would publish it: lakeflow's own group commit of a unit whose output is several files."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.errors import DefinitionError, LakeError
from lakeflow.execute.worker import InputSpec, read_input
from lakeflow.lake import Lake
from lakeflow.lake import publish as publish_module
from lakeflow.lake.compaction import Lease, compact
from lakeflow.lake.log import TableState, parse_commit
from lakeflow.lake.publish import UnitOutput, publish
from lakeflow.lake.staging import normalize_output, polars_to_arrow_schema, schema_id, stage_output
from tests.conftest import assert_status_agrees, eventually, lake_fingerprint

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")
ROWS = 12
FIRST_DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def raw_rows(day: str) -> pl.DataFrame:
    n = int(day[-2:])
    return pl.DataFrame(
        {
            "x": [(n * 7 + i * 5) % 13 for i in range(ROWS)],
            "y": [f"{day}/{i}" for i in range(ROWS)],
            "amount": [n + i / 4 for i in range(ROWS)],
        }
    )


@lf.asset(partitions=DAYS)
def raw(ctx: lf.Context) -> pl.DataFrame:
    return raw_rows(ctx.partition.key)


@lf.asset(partitions=DAYS)
def daily(raw: pl.LazyFrame) -> pl.LazyFrame:
    return raw.select(pl.len().alias("rows"), pl.col("amount").sum().alias("amount"))


PIPELINE = lf.Pipeline([raw, daily])
CLI_PIPELINE = "tests.test_optimize:PIPELINE"


def publish_in_pieces(lake: str, keys: list[str], pieces: int = 4, options=None) -> int:
    """Publish raw's partitions `keys` through lakeflow's group commit, each unit's rows in
    `pieces` files; returns the commit's version."""
    where = Lake(lake, options or {})
    state = TableState.load(where, where.table_url("raw"), column="date")
    units = []
    for key in keys:
        frame = normalize_output(raw_rows(key), where="raw", column="date", key=key)
        schema = polars_to_arrow_schema(frame.collect_schema())
        size = ROWS // pieces
        files = tuple(
            stage_output(frame.slice(i * size, size), lake=where, table_url=state.url,
                         column="date", key=key, tag=f"pieces-{i}")
            for i in range(pieces)
        )  # fmt: skip
        units.append(UnitOutput(key, files, {}, schema_id(schema, "date"), schema))
    commit = publish(
        where, state, asset="raw", column="date", run_id="pieces", code_version=raw.code_version,
        units=units,
    )  # fmt: skip
    return commit.version


def table_rows(lake: str, name: str) -> pl.DataFrame:
    return pl.read_delta(f"{lake}/{name}").sort(pl.all())


def files_per_partition(lake: str, name: str = "raw") -> dict[str, int]:
    state = TableState.load(Lake(lake), f"{lake}/{name}")
    return {key: len(files) for key, files in state.files.items() if files}


def expected_raw(keys: list[str]) -> pl.DataFrame:
    frames = [raw_rows(k).with_columns(pl.lit(k).alias("date")) for k in keys]
    return pl.concat(frames).sort(pl.all())


def operations(lake: str, name: str = "raw") -> list[str]:
    return [h["operation"] for h in reversed(DeltaTable(f"{lake}/{name}").history())]


def test_compaction_moves_files_and_changes_nothing_else(lake):
    publish_in_pieces(lake, FIRST_DAYS)
    built = lf.materialize(PIPELINE, "daily", FIRST_DAYS, lake=lake, executor="local")
    assert built.counts() == {"published": 3}
    assert files_per_partition(lake) == dict.fromkeys(FIRST_DAYS, 4)
    rows = table_rows(lake, "raw")
    status = lf.status(PIPELINE, lake=lake).drop("version").to_dicts()  # all but the version
    trace = lf.lineage(PIPELINE, "daily", "2024-01-02", lake=lake).to_dict()
    state = TableState.load(Lake(lake), f"{lake}/raw")

    (done,) = lf.optimize(PIPELINE, select="raw", lake=lake).to_dicts()

    assert done == {
        "asset": "raw", "partitions": 3, "files_before": 12, "files_after": 3,
        "version_before": state.version, "version_after": state.version + 1, "retries": 0,
        "properties": False,
    }  # fmt: skip
    assert operations(lake)[-1] == "OPTIMIZE"
    assert files_per_partition(lake) == dict.fromkeys(FIRST_DAYS, 1)
    assert table_rows(lake, "raw").equals(rows)  # every row, equal
    after = TableState.load(Lake(lake), f"{lake}/raw")
    assert after.published == state.published and after.touched == state.touched
    assert lf.status(PIPELINE, lake=lake).drop("version").to_dicts() == status
    assert lf.lineage(PIPELINE, "daily", "2024-01-02", lake=lake).to_dict() == trace
    again = lf.materialize(PIPELINE, "raw+", FIRST_DAYS, lake=lake, executor="local")
    assert again.counts() == {"fresh": 6}  # nothing stale, upstream or down
    assert_status_agrees(PIPELINE, lake=lake)

    # the planner reads the compacted files: with the replaced ones gone, a rebuild still reads all
    DeltaTable(f"{lake}/raw").vacuum(0, dry_run=False, enforce_retention_duration=False)
    sums = table_rows(lake, "daily")
    rebuilt = lf.materialize(PIPELINE, "daily", FIRST_DAYS, force=True, lake=lake, executor="local")
    assert rebuilt.counts() == {"published": 3}
    assert table_rows(lake, "daily").equals(sums)


def test_a_run_pinned_before_an_optimize_still_reads_its_files(lake):
    version = publish_in_pieces(lake, FIRST_DAYS)
    where = Lake(lake)
    state = TableState.load(where, f"{lake}/raw")
    pinned = InputSpec(
        name="raw", table_url=state.url, column="date", version=version,
        files=tuple((k, p) for k, p, _ in state.file_list(["2024-01-02"])), schema=state.schema,
    )  # fmt: skip
    lf.optimize(PIPELINE, select="raw", lake=lake)
    tidy = lf.vacuum(PIPELINE, select="raw", lake=lake, retain_hours=1)
    assert tidy["files"].to_list() == [0]  # replaced a moment ago: inside the retention window
    read = read_input(where, pinned).collect().sort(pl.all())
    assert read.equals(expected_raw(["2024-01-02"]).select(read.columns))


def test_republishing_an_optimized_partition_replaces_it_whole(lake):
    publish_in_pieces(lake, FIRST_DAYS)
    lf.optimize(PIPELINE, select="raw", lake=lake)
    redone = lf.materialize(PIPELINE, "raw", FIRST_DAYS, force=True, lake=lake, executor="local")
    assert redone.counts() == {"published": 3}
    assert table_rows(lake, "raw").equals(expected_raw(FIRST_DAYS))  # no compacted file left
    assert files_per_partition(lake) == dict.fromkeys(FIRST_DAYS, 1)
    assert_status_agrees(PIPELINE, lake=lake)


def test_a_publish_that_an_optimize_overtakes_reads_again_and_replaces_it(lake, monkeypatch):
    """The race made deterministic: an optimize lands between the moment a publish read the
    table and its commit. Deltalake would let the publish rebase over it and keep the compacted
    file beside the new one (rows doubled); lakeflow's publish commits only on the version it
    read, so it reads again and replaces the compacted file."""
    publish_in_pieces(lake, FIRST_DAYS)
    real = publish_module._commit_once
    overtaken = []

    def optimize_first(*args, **kwargs):
        if not overtaken:
            rival = TableState.load(Lake(lake), f"{lake}/raw")
            overtaken.append(compact(Lake(lake), rival, min_files=2).version_after)
        return real(*args, **kwargs)

    monkeypatch.setattr(publish_module, "_commit_once", optimize_first)
    redone = lf.materialize(PIPELINE, "raw", FIRST_DAYS, force=True, lake=lake, executor="local")
    assert redone.counts() == {"published": 3}
    assert operations(lake)[-2:] == ["OPTIMIZE", "WRITE"]
    assert DeltaTable(f"{lake}/raw").version() == overtaken[0] + 1
    assert table_rows(lake, "raw").equals(expected_raw(FIRST_DAYS))
    assert_status_agrees(PIPELINE, lake=lake)


def test_optimize_in_a_loop_while_a_backfill_rewrites_the_table(lake):
    days = DAYS.keys()
    one_per_commit = lf.ControllerOptions(max_commit_units=1, backfill_commit_linger=0.0)
    first = lf.materialize(PIPELINE, "raw", lake=lake, executor="local", options=one_per_commit)
    assert first.ok
    stop = threading.Event()
    outcomes: list[str] = []

    def optimize_until_stopped() -> None:
        while not stop.is_set():
            try:
                frame = lf.optimize(PIPELINE, select="raw", zorder=["x"], min_files=1, lake=lake)
                outcomes.append(f"committed {frame['retries'][0]} retries")
            except LakeError as error:  # refused cleanly: it kept conflicting
                outcomes.append(f"refused: {error.message}")

    optimizer = threading.Thread(target=optimize_until_stopped)
    optimizer.start()
    landed = False
    try:
        # every partition replaced, one commit each, round after round: at least three rounds,
        # and one more after an optimize has landed (so that publishes follow it)
        for rounds in range(1, 21):
            landed = any(o.startswith("committed") for o in outcomes)
            run = lf.backfill(PIPELINE, "raw", only="all", lake=lake, executor="local")
            assert run.counts() == {"published": len(days)}
            if rounds >= 3 and landed:
                break
    finally:
        stop.set()
        optimizer.join()
    assert landed, outcomes

    assert table_rows(lake, "raw").equals(expected_raw(days))  # none lost, none doubled
    assert files_per_partition(lake) == dict.fromkeys(days, 1)
    assert_status_agrees(PIPELINE, lake=lake)
    committed = [o for o in outcomes if o.startswith("committed")]
    refused = [o for o in outcomes if o.startswith("refused")]
    assert committed and len(committed) + len(refused) == len(outcomes)
    assert all("kept conflicting" in o for o in refused), refused
    ops = operations(lake)
    assert "OPTIMIZE" in ops[: len(ops) - ops[::-1].index("WRITE")]  # publishes followed it


def test_an_optimize_fires_no_trigger_and_no_subscriber(lake):
    seen: list[int] = []
    automated = lf.asset(
        daily.fn, name="daily", partitions=DAYS, automation=lf.on_upstream_commit()
    )
    pipeline = lf.Pipeline(
        [raw, automated],
        lake=lake,
        triggers=[lf.on_publish("raw", lambda p: seen.append(p.version))],
    )
    built = publish_in_pieces(lake, FIRST_DAYS)
    service = lf.up(pipeline, executor="local", poll=0.05)
    try:
        eventually(lambda: service.status()["cursors"].get("raw") == built)
        eventually(lambda: len(lf.read_events(Lake(lake), kinds=["unit_published"])) == 3)
        requested = len(lf.read_events(Lake(lake), kinds=["run_requested"]))
        (done,) = lf.optimize(pipeline, select="raw").to_dicts()
        eventually(lambda: service.status()["cursors"].get("raw") == done["version_after"])
        fresh = lf.materialize(pipeline, "raw", "2024-01-04", executor="local")
        published = fresh.units["version"].to_list()  # a publish after it: delivered, alone
        eventually(lambda: seen == published)
    finally:
        lf.down(pipeline)
    runs = lf.read_events(Lake(lake), kinds=["run_requested"])["message"].to_list()
    assert not any(f"raw@{done['version_after']}" in m for m in runs[requested:]), runs
    assert_status_agrees(pipeline)


def test_a_compaction_policy_z_orders_what_a_publish_leaves(lake):
    ordered = lf.asset(
        raw.fn, name="raw", partitions=DAYS, optimize=lf.Compaction(min_files=1, zorder=["x"])
    )
    pipeline = lf.Pipeline([ordered, daily], lake=lake)
    assert pipeline.compaction_of("daily") is None
    run = lf.materialize(pipeline, "raw+", FIRST_DAYS, executor="local")
    assert run.counts() == {"published": 6}
    ops = operations(lake)  # one group commit, or more if the units came apart
    publishes = [op for op in ops if op != "OPTIMIZE"]
    assert ops == [op for publish in publishes for op in (publish, "OPTIMIZE")]
    assert "OPTIMIZE" not in operations(lake, "daily")
    events = lf.read_events(Lake(lake), kinds=["table_optimized"])
    assert events["asset"].to_list() == ["raw"] * len(publishes)
    counts = events["message"].str.extract_groups(r"^(\d+) partitions: (\d+) -> (\d+) files$")
    counts = counts.struct.unnest().cast(pl.Int64)
    assert counts.sum().row(0) == (3, 3, 3)  # every partition z-ordered, a file each
    assert table_rows(lake, "raw").equals(expected_raw(FIRST_DAYS))
    again = lf.materialize(pipeline, "raw+", FIRST_DAYS, executor="local")
    assert again.counts() == {"fresh": 6}
    # a policy that asks for 16 small files finds one per partition: nothing to do
    calm = lf.Pipeline([raw, daily], lake=lake, optimize=lf.Compaction(min_files=16))
    assert calm.compaction_of("raw") == lf.Compaction(min_files=16)
    lf.materialize(calm, "raw", FIRST_DAYS, force=True, executor="local")
    assert operations(lake)[-1] == "WRITE"
    assert_status_agrees(pipeline)


def test_retention_lands_on_new_tables_and_optimize_applies_changes(lake):
    own = lf.Retention(checkpoint_interval=2, log=dt.timedelta(days=3))
    kept = lf.Retention(deleted_files=dt.timedelta(hours=36))
    pipeline = lf.Pipeline(
        [lf.asset(raw.fn, name="raw", partitions=DAYS, retention=own), daily],
        lake=lake, retention=kept,
    )  # fmt: skip
    for day in FIRST_DAYS:  # one commit each: checkpoints every second commit
        lf.materialize(pipeline, "raw+", day, executor="local")
    config = DeltaTable(f"{lake}/raw").metadata().configuration
    assert config == {
        "delta.checkpointInterval": "2",
        "delta.logRetentionDuration": "interval 3 days",
    }
    assert DeltaTable(f"{lake}/daily").metadata().configuration == {
        "delta.deletedFileRetentionDuration": "interval 36 hours"
    }
    assert list(Path(lake, "raw", "_delta_log").glob("*.checkpoint.parquet"))

    changed = pipeline.with_lake(lake)
    changed.retention = lf.Retention(checkpoint_interval=50)
    first = lf.optimize(changed, lake=lake).select("asset", "properties").rows()
    assert first == [("raw", False), ("daily", True)]  # raw keeps its own, daily gets the new
    assert DeltaTable(f"{lake}/daily").metadata().configuration == {
        "delta.deletedFileRetentionDuration": "interval 36 hours",
        "delta.checkpointInterval": "50",
    }
    assert lf.optimize(changed, lake=lake)["properties"].to_list() == [False, False]
    assert lf.materialize(changed, "raw+", FIRST_DAYS, executor="local").counts() == {"fresh": 6}


def test_one_optimizer_of_a_table_at_a_time(lake):
    publish_in_pieces(lake, FIRST_DAYS)
    where = Lake(lake)
    holder, rival = Lease(where, "optimize-raw"), Lease(where, "optimize-raw")
    holder.acquire(wait=0)
    with pytest.raises(
        LakeError, match=f"optimize-raw is running elsewhere .holder {holder.holder}"
    ):
        rival.acquire(wait=0)
    before = lake_fingerprint(lake)
    with pytest.raises(LakeError, match="an optimize of raw is running elsewhere"):
        lf.optimize(PIPELINE, lake=lake, wait=0.3)
    assert lake_fingerprint(lake) == before
    holder.release()
    rival.acquire(wait=0)
    rival.release()

    # a holder that died: its claim expires
    dead = Lease(where, "optimize-raw", ttl=0.5)
    dead.acquire(wait=0)
    rival.acquire(wait=10)
    rival.release()

    # claimers in threads: the lease's log shows each claim made only while no other was held
    def take_turns() -> None:
        lease = Lease(where, "turns")
        for _ in range(4):
            lease.acquire(wait=30)
            lease.release()

    workers = [threading.Thread(target=take_turns) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    held_by, claims = None, 0
    for info in DeltaTable(f"{lake}/_lakeflow/leases/turns").history()[::-1]:
        claim = info.get("lakeflow_lease")
        if claim is None:
            continue
        if claim["until"] > 0:  # a claim: the lease was free, or already this holder's
            assert held_by in (None, claim["holder"]), (held_by, claim)
            held_by, claims = claim["holder"], claims + 1
        elif held_by == claim["holder"]:  # its release
            held_by = None
    assert claims == 12 and held_by is None


def test_optimize_from_the_shell(lake, capsys):
    publish_in_pieces(lake, FIRST_DAYS)
    argv = ["optimize", CLI_PIPELINE, "--lake", lake, "--select", "raw", "--partitions"]
    assert main([*argv, "2024-01-01..2024-01-02", "--zorder", "x,amount", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["asset"], row["partitions"], row["files_before"], row["files_after"]) == (
        "raw", 2, 8, 2,
    )  # fmt: skip
    assert files_per_partition(lake) == {"2024-01-01": 1, "2024-01-02": 1, "2024-01-03": 4}
    assert main(["optimize", CLI_PIPELINE, "--lake", lake]) == 0
    assert "raw" in capsys.readouterr().out
    assert files_per_partition(lake) == dict.fromkeys(FIRST_DAYS, 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--select", "nope"), "unknown asset 'nope'"),
        (("--partitions", "2024-13-01"), "2024-13-01"),
        (("--partitions", "2030-01-01"), "after the last partition"),
        (("--zorder", "z"), "cannot z-order"),
        (("--zorder", "date"), "it is the partition column"),
        (("--min-files", "0"), "min_files must be at least 1"),
    ],
)
def test_bad_optimize_requests_change_nothing(lake, capsys, argv, message):
    publish_in_pieces(lake, FIRST_DAYS)
    before = lake_fingerprint(lake)
    assert main(["optimize", CLI_PIPELINE, "--lake", lake, *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert lake_fingerprint(lake) == before


def test_policies_are_checked_where_they_are_declared():
    with pytest.raises(DefinitionError, match="min_files must be at least 1"):
        lf.Compaction(min_files=0)
    with pytest.raises(DefinitionError, match="target_size must be a positive int"):
        lf.Compaction(target_size=-5)
    with pytest.raises(DefinitionError, match="asset raw: optimize must be lf.Compaction"):
        lf.asset(raw.fn, name="raw", optimize={"min_files": 2})
    with pytest.raises(DefinitionError, match="pipeline: retention must be lf.Retention"):
        lf.Pipeline([raw], retention=30)
    with pytest.raises(DefinitionError, match="log must be a timedelta"):
        lf.Retention(log=30)
    assert lf.Compaction(zorder="x").zorder == ("x",)
    assert lf.Retention(log=dt.timedelta(days=30), deleted_files=dt.timedelta(seconds=90),
                        checkpoint_interval=10).properties() == {
        "delta.checkpointInterval": "10",
        "delta.logRetentionDuration": "interval 30 days",
        "delta.deletedFileRetentionDuration": "interval 90 seconds",
    }  # fmt: skip


def test_optimize_and_its_lease_on_s3(s3_lake):
    url, options = s3_lake
    publish_in_pieces(url, FIRST_DAYS, options=options)
    where = Lake(url, options)
    holder = Lease(where, "optimize-raw")
    holder.acquire(wait=0)
    with pytest.raises(LakeError, match="an optimize of raw is running elsewhere"):
        lf.optimize(PIPELINE, lake=url, storage_options=options, wait=0)
    holder.release()
    done = lf.optimize(PIPELINE, lake=url, storage_options=options, zorder=["x"])
    assert done.select("asset", "partitions", "files_before", "files_after").rows() == [
        ("raw", 3, 12, 3)
    ]
    frame = pl.read_delta(f"{url}/raw", storage_options=options).sort(pl.all())
    assert frame.equals(expected_raw(FIRST_DAYS).select(frame.columns))
    assert lf.status(PIPELINE, lake=url, storage_options=options)["published"].to_list() == [3, 0]


def _log_lines(kind: str, count: int, data_change: bool) -> list[dict]:
    return [
        {kind: {"path": f"date=2024-01-0{i % 3 + 1}/f{i}.parquet", "size": 10,
                "partitionValues": {"date": f"2024-01-0{i % 3 + 1}"}, "dataChange": data_change}}
        for i in range(count)
    ]  # fmt: skip


@pytest.mark.parametrize("count", [3, 300])  # line by line, and the bulk parser from 256 actions
def test_a_commit_that_only_moves_rows_touches_no_partition(count):
    info = {"commitInfo": {"timestamp": 1, "operation": "OPTIMIZE"}}
    moved = [info, *_log_lines("remove", count, False), *_log_lines("add", 1, False)]
    raw_log = "\n".join(json.dumps(line) for line in moved).encode()
    commit = parse_commit(raw_log, 7, "date")
    assert not commit.data_change and commit.touched == set()
    assert sum(len(paths) for paths in commit.removed.values()) == count  # the files still move
    changed = [info, *_log_lines("remove", count, False), *_log_lines("add", 1, True)]
    commit = parse_commit("\n".join(json.dumps(line) for line in changed).encode(), 7, "date")
    assert commit.data_change and commit.touched == {"2024-01-01", "2024-01-02", "2024-01-03"}
