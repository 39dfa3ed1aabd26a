"""Lineage read from the lake: the exact upstream partition versions a partition version read
(recursively), and forward, what a partition version fed; through the API and the CLI."""

import json

import polars as pl
import pytest
from deltalake import write_deltalake

import lakeflow as lf
from lakeflow.cli import main
from tests.conftest import lake_fingerprint
from tests.pipelines import PIPELINE

SPEND = "tests.pipelines:PIPELINE"
DAYS = "2024-01-01..2024-01-05"
SELECT = "events,spend,spend_3d"


def _units(found: lf.Lineage) -> set[tuple[int, str, str, int | None, str]]:
    rows = found.rows().select("depth", "asset", "partition", "version", "kind")
    return set(rows.iter_rows())


@pytest.fixture
def built(lake):
    """Five days of events -> spend -> spend_3d, then day 4 of events rebuilt and its consumers
    brought up to date: every table has a version 0 and spend/spend_3d/events a version 1."""
    pipeline = PIPELINE.with_lake(lake)
    first = lf.materialize(pipeline, select=SELECT, partitions=DAYS, executor="local")
    assert first.ok
    again = lf.materialize(
        pipeline, select="events", partitions="2024-01-04", force=True, executor="local"
    )
    assert again.ok
    rest = lf.materialize(pipeline, select="spend+", partitions=DAYS, executor="local")
    assert rest.ok
    return pipeline, first.run_id, rest.run_id


def test_upstream_names_the_partition_versions_each_commit_read(built):
    pipeline, first, rest = built
    now = lf.lineage(pipeline, "spend_3d", "2024-01-05")
    assert now.root.unit.version == 1 and now.root.unit.run_id == rest
    assert _units(now) == {
        (0, "spend_3d", "2024-01-05", 1, "lakeflow"),
        (1, "spend", "2024-01-03", 0, "lakeflow"),  # untouched since the first run
        (2, "events", "2024-01-03", 0, "lakeflow"),
        (1, "spend", "2024-01-04", 1, "lakeflow"),  # rebuilt after events 2024-01-04 changed
        (2, "events", "2024-01-04", 1, "lakeflow"),
        (1, "spend", "2024-01-05", 0, "lakeflow"),
        (2, "events", "2024-01-05", 0, "lakeflow"),
    }
    rows = now.rows()
    assert set(rows.filter(pl.col("version") == 0)["run_id"]) == {first}
    assert set(rows.filter(pl.col("depth") == 1)["via"]) == {"lookback(3)"}
    # as the first run left it: every input at version 0
    then = lf.lineage(pipeline, "spend_3d", "2024-01-05", version=0)
    assert {(a, p, v) for _, a, p, v, _ in _units(then)} == {
        ("spend_3d", "2024-01-05", 0),
        *{("spend", f"2024-01-0{d}", 0) for d in (3, 4, 5)},
        *{("events", f"2024-01-0{d}", 0) for d in (3, 4, 5)},
    }
    assert pipeline.lineage("spend_3d", "2024-01-05", depth=1).rows()["depth"].max() == 1


def test_downstream_names_what_each_version_fed(built):
    pipeline, _, _ = built
    old = lf.lineage(pipeline, "events", "2024-01-04", version=0, downstream=True)
    assert _units(old) == {
        (0, "events", "2024-01-04", 0, "lakeflow"),
        (1, "spend", "2024-01-04", 0, "lakeflow"),
        *{(2, "spend_3d", f"2024-01-0{d}", 0, "lakeflow") for d in (4, 5)},
    }
    new = lf.lineage(pipeline, "events", "2024-01-04", downstream=True)
    assert _units(new) == {
        (0, "events", "2024-01-04", 1, "lakeflow"),
        (1, "spend", "2024-01-04", 1, "lakeflow"),
        *{(2, "spend_3d", f"2024-01-0{d}", 1, "lakeflow") for d in (4, 5)},
        (2, "users", "", 0, "lakeflow"),  # built by `spend+` only after the rebuild
    }
    # spend 2024-01-03 was not rebuilt: its one version fed both versions of spend_3d 01-05
    fed = lf.lineage(pipeline, "spend", "2024-01-03", downstream=True)
    assert {(p, v) for _, a, p, v, _ in _units(fed) if a == "spend_3d"} == {
        ("2024-01-03", 0), ("2024-01-04", 0), ("2024-01-05", 0),
        ("2024-01-04", 1), ("2024-01-05", 1),
    }  # fmt: skip


def test_an_outside_commit_and_a_missing_partition(lake):
    pipeline = PIPELINE.with_lake(lake)
    assert lf.materialize(pipeline, select="events", partitions=DAYS, executor="local").ok
    outside = pl.DataFrame({"user": ["x"], "amount": [1], "date": ["2024-01-02"]})
    write_deltalake(f"{lake}/events", outside.to_arrow(), mode="append", partition_by=["date"])
    assert lf.materialize(pipeline, select="spend", partitions="2024-01-02", executor="local").ok
    found = lf.lineage(pipeline, "spend", "2024-01-02")
    assert _units(found) == {
        (0, "spend", "2024-01-02", 0, "lakeflow"),
        (1, "events", "2024-01-02", 1, "outside"),  # another producer's commit: no run, no code
    }
    assert found.rows().filter(pl.col("asset") == "events")["run_id"].to_list() == [None]
    never = lf.lineage(pipeline, "spend", "2024-01-09")
    assert _units(never) == {(0, "spend", "2024-01-09", None, "missing")}


def test_the_cli_prints_the_tree_and_json(built, capsys):
    pipeline, _, rest = built
    base = ["lineage", SPEND, "--lake", pipeline.lake]
    assert main([*base, "spend_3d", "2024-01-05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"spend_3d 2024-01-05 @ v1 run {rest}")
    assert any(line.startswith("    events 2024-01-04 @ v1") for line in lines)
    assert main([*base, "events", "2024-01-04", "--version", "0", "--downstream", "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["direction"] == "downstream"
    assert tree["root"]["version"] == 0
    assert [e["asset"] for e in tree["root"]["edges"]] == ["spend"]
    assert tree["root"]["edges"][0]["inputs"] == {"events": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "2024-01-01"], "nope"),
        (["spend", "2024-13-01"], "2024-13-01"),
        (["spend"], "name one of its partitions"),
        (["users", "2024-01-01"], "not partitioned"),
        (["spend", "2024-01-01", "--version", "7"], "no version 7"),
        (["spend", "2024-01-01", "--version", "x"], "invalid int value"),
    ],
)
def test_bad_lineage_requests_exit_2_and_change_nothing(built, capsys, args, message):
    pipeline, _, _ = built
    before = lake_fingerprint(pipeline.lake)
    assert main(["lineage", SPEND, "--lake", pipeline.lake, *args]) == 2
    assert message in capsys.readouterr().err
    assert lake_fingerprint(pipeline.lake) == before
