"""Staging, group commits and log reading on real Delta tables in tmp_path."""

import datetime as dt
import json
import threading

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakeflow.errors import LakeError, SchemaError
from lakeflow.lake import Lake, log
from lakeflow.lake import publish as publish_module
from lakeflow.lake.log import APP_ID, TableState
from lakeflow.lake.publish import UnitOutput, publish, split_by_schema
from lakeflow.lake.staging import (
    check_schema,
    normalize_output,
    polars_to_arrow_schema,
    schema_id,
    stage_output,
)


def stage(lake, url, key, frame, column="date", tag="run-1"):
    frame = normalize_output(frame, where="test", column=column, key=key)
    schema = polars_to_arrow_schema(frame.collect_schema())
    staged = stage_output(frame, lake=lake, table_url=url, column=column, key=key, tag=tag)
    return UnitOutput(key, (staged,), {"up": 3}, schema_id(schema, column), schema)


def day_frame(key, n=3, offset=0):
    return pl.DataFrame(
        {"id": [offset + i for i in range(n)], "label": [f"{key}-{i}" for i in range(n)]}
    )


@pytest.fixture
def table(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    url = lake.table_url("orders")
    return lake, url


def commit(lake, url, units, run_id="run-1", state=None):
    state = state or TableState.load(lake, url, column="date")
    if not state.exists:
        state.column = "date"
    return publish(
        lake, state, asset="orders", column="date", run_id=run_id, code_version="c1", units=units
    ), state


def test_staged_files_are_invisible_until_committed(table):
    lake, url = table
    first = [stage(lake, url, k, day_frame(k)) for k in ("2024-01-01", "2024-01-02")]
    commit(lake, url, first)
    staged = stage(lake, url, "2024-01-01", day_frame("2024-01-01", n=5, offset=100))
    assert pl.read_delta(url).height == 6  # the staged file is not part of any version
    commit(lake, url, [staged])
    data = pl.read_delta(url)
    assert data.height == 8
    assert sorted(data.filter(pl.col("date") == "2024-01-01")["id"].to_list()) == [
        100,
        101,
        102,
        103,
        104,
    ]


def test_one_commit_replaces_exactly_the_units_partitions(table):
    lake, url = table
    commit(
        lake,
        url,
        [stage(lake, url, k, day_frame(k)) for k in ("2024-01-01", "2024-01-02", "2024-01-03")],
    )
    before = DeltaTable(url).version()
    landed, state = commit(
        lake,
        url,
        [stage(lake, url, k, day_frame(k, n=1, offset=50)) for k in ("2024-01-01", "2024-01-03")],
        run_id="run-2",
    )
    table_now = DeltaTable(url)
    assert table_now.version() == before + 1 == landed.version
    counts = dict(pl.read_delta(url).group_by("date").len().sort("date").iter_rows())
    assert counts == {"2024-01-01": 1, "2024-01-02": 3, "2024-01-03": 1}
    info = table_now.history(1)[0]["lakeflow"]
    assert info["run"] == "run-2" and info["code"] == "c1"
    assert info["groups"] == [{"in": {"up": 3}, "keys": ["2024-01-01", "2024-01-03"]}]
    assert table_now.transaction_version(APP_ID) == 2
    assert state.touched == {"2024-01-01": 1, "2024-01-02": 0, "2024-01-03": 1}
    assert state.published["2024-01-02"].run_id == "run-1"
    assert state.published["2024-01-03"].inputs == {"up": 3}


def test_a_commit_replaces_what_landed_after_its_state_was_read(table):
    """New and existing partitions in one commit; one of them written by an outside writer after
    our state was read: the commit still replaces exactly its partitions."""
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    outside = pa.table({"id": [7], "label": ["outside"], "date": ["2024-01-02"]})
    write_deltalake(url, outside, mode="append")
    untouched = pa.table({"id": [8], "label": ["outside"], "date": ["2024-01-09"]})
    write_deltalake(url, untouched, mode="append")
    units = [
        stage(lake, url, "2024-01-01", day_frame("2024-01-01", n=1, offset=50)),
        stage(lake, url, "2024-01-02", day_frame("2024-01-02", n=2)),
        stage(lake, url, "2024-01-03", day_frame("2024-01-03", n=2)),
    ]
    landed, state = commit(lake, url, units, run_id="run-2", state=state)
    assert landed.version == 3
    counts = dict(pl.read_delta(url).group_by("date").len().sort("date").iter_rows())
    assert counts == {"2024-01-01": 1, "2024-01-02": 2, "2024-01-03": 2, "2024-01-09": 1}
    assert "outside" not in pl.read_delta(url).filter(pl.col("date") == "2024-01-02")["label"]
    assert state.version == 3 and len(state.files["2024-01-02"]) == 1


def test_statistics_let_readers_skip_files_and_are_exact(table):
    lake, url = table
    frame = pl.DataFrame({
        "n": [3, -1, None],
        "when": [dt.datetime(2024, 1, 1, 1, 2, 3, 456789), dt.datetime(2024, 1, 1), None],
        "long": ["z" + "a" * 100, "a", "c"],
        "day": [dt.date(2024, 1, 5), dt.date(2023, 12, 31), dt.date(2024, 1, 1)],
    })  # fmt: skip
    commit(lake, url, [stage(lake, url, "2024-01-01", frame)])
    raw = (lake.read_bytes(f"{url}/_delta_log/{0:020d}.json") or b"").decode()
    add = next(json.loads(line)["add"] for line in raw.splitlines() if '"add"' in line)
    stats = json.loads(add["stats"])
    assert stats["numRecords"] == 3
    assert stats["minValues"]["n"] == -1 and stats["maxValues"]["n"] == 3
    assert stats["nullCount"] == {"n": 1, "when": 1, "long": 0, "day": 0}
    assert stats["minValues"]["when"] == "2024-01-01 00:00:00.000"
    assert stats["maxValues"]["when"] == "2024-01-01 01:02:03.457"  # rounded up: still a bound
    assert "long" not in stats["maxValues"]  # the writer truncated it: no bound at all
    assert stats["minValues"]["day"] == "2023-12-31"
    skipped = pl.scan_delta(url).filter(pl.col("n") > 100).collect()
    assert skipped.is_empty()
    assert pl.scan_delta(url).filter(pl.col("n") == 3).collect().height == 1


def test_output_types_are_normalized_for_delta():
    frame = pl.DataFrame({
        "u": pl.Series([4_000_000_000], dtype=pl.UInt32),
        "ns": pl.Series([dt.datetime(2024, 1, 1)], dtype=pl.Datetime("ns")),
        "ny": pl.Series([dt.datetime(2024, 1, 1, 12)], dtype=pl.Datetime("us", "America/New_York")),
        "cat": pl.Series(["a"], dtype=pl.Categorical),
    })  # fmt: skip
    out = normalize_output(frame, where="asset x", column=None, key="").lazy().collect()
    assert out.schema == {
        "u": pl.Int64,
        "ns": pl.Datetime("us"),
        "ny": pl.Datetime("us", "UTC"),
        "cat": pl.String,
    }
    assert out["u"][0] == 4_000_000_000
    with pytest.raises(SchemaError, match="column 't' has type Time"):
        normalize_output(pl.DataFrame({"t": [dt.time(1)]}), where="asset x", column=None, key="")
    with pytest.raises(SchemaError, match="asset x returned builtins.dict"):
        normalize_output({"a": 1}, where="asset x", column=None, key="")


def test_partition_column_in_the_output_must_hold_the_key():
    same = pl.DataFrame({"date": ["2024-01-01"], "x": [1]})
    assert normalize_output(same, where="a", column="date", key="2024-01-01").columns == ["x"]
    lazy = normalize_output(same.lazy(), where="a", column="date", key="2024-01-01")
    assert isinstance(lazy, pl.LazyFrame) and lazy.collect().columns == ["x"]  # lazy stays lazy
    with pytest.raises(SchemaError, match="holds nulls or values other than '2024-01-02'"):
        normalize_output(same, where="a", column="date", key="2024-01-02")
    with_null = pl.DataFrame({"date": ["2024-01-01", None], "x": [1, 2]})
    with pytest.raises(SchemaError, match="column 'date' is the partition column but holds null"):
        normalize_output(with_null, where="a", column="date", key="2024-01-01")


def test_schema_conflicts_name_the_columns():
    table = pa.schema([("id", pa.int64()), ("label", pa.string()), ("date", pa.string())])
    output = pa.schema([("id", pa.string()), ("extra", pa.float64())])
    with pytest.raises(SchemaError) as error:
        check_schema(output, table, where="asset orders partition 2024-01-01", column="date")
    text = str(error.value)
    assert "missing columns label" in text and "extra columns extra" in text
    assert "column id: table has long, output has string" in text
    assert check_schema(
        pa.schema([("label", pa.large_string()), ("id", pa.int64())]),
        table,
        where="x",
        column="date",
    ) == ["id", "label"]


def test_misfit_units_are_split_out_before_a_commit(table):
    lake, url = table
    commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    state = TableState.load(lake, url)
    good = stage(lake, url, "2024-01-02", day_frame("2024-01-02"))
    bad = stage(lake, url, "2024-01-03", pl.DataFrame({"id": ["x"], "label": ["y"]}))
    fits, misfits = split_by_schema(state, [good, bad])
    assert fits == [good] and misfits[0][0] is bad


def test_missing_staged_files_are_never_committed(table, tmp_path):
    lake, url = table
    unit = stage(lake, url, "2024-01-01", day_frame("2024-01-01"))
    (tmp_path / "lake" / "orders" / unit.files[0].path).unlink()
    with pytest.raises(LakeError, match="staged files are missing"):
        commit(lake, url, [unit])
    assert not DeltaTable.is_deltatable(url)


def test_a_commit_whose_reply_was_lost_is_not_applied_twice(table, monkeypatch):
    lake, url = table
    commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    real = publish_module._commit_once

    def landed_then_lost(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError("connection reset after the commit was written")

    monkeypatch.setattr(publish_module, "_commit_once", landed_then_lost)
    landed, _ = commit(
        lake, url, [stage(lake, url, "2024-01-02", day_frame("2024-01-02"))], run_id="run-2"
    )
    table_now = DeltaTable(url)
    assert table_now.version() == landed.version == 1
    assert [h.get("lakeflow", {}).get("run") for h in table_now.history()] == ["run-2", "run-1"]


@pytest.mark.parametrize("fault", ["none", "lost_reply", "conflict"])
def test_a_commit_another_refresh_consumed_is_still_recognized_as_ours(table, monkeypatch, fault):
    """The controller refreshes a table's state from more than one thread (planning, publish):
    a refresh that applies our commit before `publish` looks for it must not make the commit
    look lost, or its units retry and publish the same partition twice. The transaction id says
    whether the commit landed; the log says which version it is."""
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    real = publish_module._commit_once

    def commit_then_someone_refreshes(*args, **kwargs):
        real(*args, **kwargs)
        state.refresh(lake)  # what a concurrent plan does: it moves the shared state on
        if fault == "lost_reply":
            raise OSError("connection reset after the commit was written")
        if fault == "conflict":  # deltalake's answer to a race it lost... after it won
            from deltalake.exceptions import CommitFailedError

            raise CommitFailedError("version already exists")

    monkeypatch.setattr(publish_module, "_commit_once", commit_then_someone_refreshes)
    landed, _ = commit(
        lake,
        url,
        [stage(lake, url, "2024-01-02", day_frame("2024-01-02"))],
        run_id="run-2",
        state=state,
    )
    table_now = DeltaTable(url)
    assert table_now.version() == landed.version == 1
    assert [h.get("lakeflow", {}).get("run") for h in table_now.history()] == ["run-2", "run-1"]
    assert state.version == 1 and state.txn_version == table_now.transaction_version(APP_ID)


def test_concurrent_refreshes_of_one_state_apply_each_commit_once(table):
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    other = TableState.load(lake, url, column="date")
    for i in range(30):
        key = f"2024-02-{i + 1:02d}"
        commit(lake, url, [stage(lake, url, key, day_frame(key, n=1))], state=other)
    errors: list[BaseException] = []

    def refresh():
        try:
            state.refresh(lake)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    fresh = TableState.load(lake, url, column="date")
    assert state.version == fresh.version == 30
    assert state.files == fresh.files and state.touched == fresh.touched


def test_commits_survive_concurrent_outside_writers(table):
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    stop = threading.Event()

    def outside_writer():
        n = 0
        while not stop.is_set() and n < 40:
            frame = pa.table({"id": [n], "label": ["outside"], "date": ["2024-02-01"]})
            try:
                write_deltalake(url, frame, mode="append")
            except Exception:
                pass
            n += 1

    thread = threading.Thread(target=outside_writer)
    thread.start()
    versions = []
    for i in range(10):
        key = f"2024-01-{i + 2:02d}"
        landed, state = commit(
            lake, url, [stage(lake, url, key, day_frame(key, n=2))], run_id=f"run-{i}", state=state
        )
        versions.append(landed.version)
    stop.set()
    thread.join()
    ours = [h for h in DeltaTable(url).history() if "lakeflow" in h]
    assert len(ours) == 11  # the first commit and each of the ten, once
    data = pl.read_delta(url)
    assert data.filter(pl.col("label") != "outside").height == 3 + 10 * 2
    assert len(set(versions)) == 10


def test_table_state_follows_outside_commits(table):
    lake, url = table
    _, state = commit(
        lake, url, [stage(lake, url, k, day_frame(k)) for k in ("2024-01-01", "2024-01-02")]
    )
    write_deltalake(
        url,
        pa.table({"id": [9], "label": ["x"], "date": ["2024-01-02"]}),
        mode="overwrite",
        predicate="date = '2024-01-02'",
    )
    commits = state.refresh(lake)
    assert [c.version for c in commits] == [1]
    assert commits[0].touched == {"2024-01-02"} and commits[0].metadata is None
    assert state.touched["2024-01-02"] == 1 and "2024-01-02" not in state.published
    assert len(state.files["2024-01-02"]) == 1
    reloaded = TableState.load(lake, url)
    assert reloaded.touched == state.touched and reloaded.files == state.files
    assert reloaded.published.keys() == state.published.keys()


@pytest.mark.parametrize("named", ["by path", "nowhere"])
def test_a_remove_without_partition_values_is_followed(table, named):
    """The protocol lets a writer leave a remove's partitionValues out: the file must still go
    from its partition (else a consumer reads it and the new file both: rows doubled)."""
    lake, url = table
    _, state = commit(
        lake, url, [stage(lake, url, k, day_frame(k)) for k in ("2024-01-01", "2024-01-02")]
    )
    (old,) = state.files["2024-01-02"]
    new = (
        "date=2024-01-02/replacement.parquet" if named == "by path" else "flat-replacement.parquet"
    )
    pl.DataFrame({"id": [9], "label": ["x"]}).write_parquet(f"{url}/{new}")
    moved = old if named == "by path" else "flat-old.parquet"
    if named == "nowhere":  # a writer that keeps files flat: the path names no partition
        state.files["2024-01-02"][moved] = state.files["2024-01-02"].pop(old)
    lines = [
        {"remove": {"path": moved, "deletionTimestamp": 1, "dataChange": True}},
        {"add": {"path": new, "size": 10, "partitionValues": {"date": "2024-01-02"},
                 "modificationTime": 1, "dataChange": True}},
        {"commitInfo": {"timestamp": 1, "operation": "WRITE"}},
    ]  # fmt: skip
    path = f"{url}/_delta_log/{state.version + 1:020d}.json"
    with open(path, "w") as out:
        out.write("\n".join(json.dumps(line) for line in lines) + "\n")
    (applied,) = state.refresh(lake)
    assert list(state.files["2024-01-02"]) == [new]
    assert len(state.files["2024-01-01"]) == 1
    if named == "by path":
        assert applied.touched == {"2024-01-02"}
        assert state.touched["2024-01-02"] == applied.version


def test_a_table_that_appears_later_is_followed_from_its_first_version(table):
    lake, url = table
    state = TableState.load(lake, url, column="date")
    assert not state.exists and state.refresh(lake) == []
    write_deltalake(url, pa.table({"id": [1], "date": ["2024-01-01"]}), partition_by=["date"])
    commits = state.refresh(lake)
    assert [c.version for c in commits] == [0] and state.exists and state.column == "date"
    assert state.schema is not None and state.schema.names == ["id", "date"]
    # learned from the commit file alone: no second read that an outage could cut in between,
    # leaving a table that exists without a schema (a CI run once failed every unit that way)
    assert state.handle is None


def test_a_schema_changed_by_another_writer_is_followed(table):
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    wider = pa.table({"id": [9], "label": ["x"], "note": ["new"], "date": ["2024-01-02"]})
    write_deltalake(url, wider, mode="append", schema_mode="merge")
    assert [c.version for c in state.refresh(lake)] == [1]
    assert state.schema == pa.schema(DeltaTable(url).schema().to_arrow())
    assert "note" in state.schema.names


def test_another_writers_commit_with_our_transaction_number_is_not_taken_for_ours(
    table, monkeypatch
):
    """Two controllers of one lake (say, one outliving its killed driver) both number their
    commits (lakeflow, n): a conflict must not make us believe their commit was ours."""
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import CommitFailedError

    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, "2024-01-01", day_frame("2024-01-01"))])
    real = publish_module._commit_once
    calls = []

    def someone_else_first(handle, actions, *args):
        if not calls:
            calls.append(1)
            other = stage(lake, url, "2024-01-09", day_frame("2024-01-09"))
            twin = DeltaTable(url)
            twin.create_write_transaction(
                publish_module._actions("date", [other]), mode="overwrite", schema=state.schema,
                partition_by=["date"], partition_filters=[("date", "in", ["2024-01-09"])],
                commit_properties=CommitProperties(app_transactions=[Transaction(APP_ID, state.txn_version + 1)]),
            )  # fmt: skip
            raise CommitFailedError("a concurrent transaction deleted data this operation read")
        return real(handle, actions, *args)

    monkeypatch.setattr(publish_module, "_commit_once", someone_else_first)
    ours = stage(lake, url, "2024-01-02", day_frame("2024-01-02"))
    landed, _ = commit(lake, url, [ours], run_id="run-2", state=state)
    assert landed.version == 2 and ours.files[0].path in dict(landed.added["2024-01-02"])
    assert sorted(pl.read_delta(url)["date"].unique().to_list()) == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-09",
    ]


def test_a_commit_of_many_files_reads_as_one_of_few(tmp_path, monkeypatch):
    """A group commit of hundreds of partitions (parsed in bulk) gives the state, keys, paths,
    sizes and removes that reading it line by line gives."""
    url = str(tmp_path / "wide")
    days = [f"d{i:04d}" for i in range(600)]
    write_deltalake(url, pa.table({"day": days, "x": list(range(600))}), partition_by=["day"])
    redo = pa.table({"day": days[:300], "x": [-1] * 300})
    write_deltalake(url, redo, partition_by=["day"], mode="overwrite", predicate="day < 'd0300'")
    raws = [(tmp_path / "wide" / "_delta_log" / f"{v:020d}.json").read_bytes() for v in (0, 1)]
    bulk = [log.parse_commit(raw, v, "day") for v, raw in enumerate(raws)]
    state = TableState.load(Lake(str(tmp_path)), url, column="day")
    monkeypatch.setattr(log, "BULK", 10**9)  # every line through json.loads
    assert bulk == [log.parse_commit(raw, v, "day") for v, raw in enumerate(raws)]
    assert len(bulk[0].added) == 600 and not bulk[0].removed
    assert set(bulk[1].removed) == set(days[:300]) == set(bulk[1].added)
    assert all(size > 0 for files in bulk[1].added.values() for _, size in files)
    assert state.touched == {d: (1 if d < "d0300" else 0) for d in days}
    assert state.files == TableState.load(Lake(str(tmp_path)), url, column="day").files
