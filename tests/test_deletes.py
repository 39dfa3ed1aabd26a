"""A partition deleted upstream: its identity-mapped consumers delete it too, one commit per table
with a `unit_deleted` event; roll-ups and lookbacks re-run on what remains; afterwards nothing is
left to do. With triggers (an outside `DeltaTable.delete` while `lf.up` runs) and without."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

import lakeflow as lf
from lakeflow.lake import Lake
from lakeflow.lake.log import parse_commit
from tests.conftest import eventually
from tests.trigger_pipelines import deletes_pipeline, february_trips

GONE = "2024-02-03"


def rows(lake: str, asset: str, column: str = "day") -> dict[str, tuple]:
    url = f"{lake}/{asset}"
    frame = pl.read_delta(url).sort(column)
    return {r[0]: r[1:] for r in frame.select(column, pl.exclude(column)).iter_rows()}


def model(lake: str) -> dict[str, dict[str, tuple]]:
    """What every asset should hold, computed from the source's rows as they are now."""
    source = pl.read_delta(f"{lake}/trips")
    per_day = source.group_by("day").agg(
        pl.len().cast(pl.UInt32).alias("trips"), pl.col("fare").sum().alias("fares")
    )
    daily = {d: (t, f) for d, t, f in per_day.sort("day").iter_rows()}
    trips = {d: t for d, (t, _) in daily.items()}
    month = (len(daily), sum(trips.values()), sum(f for _, f in daily.values()))
    last3 = {}
    days = [f"2024-02-{i:02d}" for i in range(1, 30)]
    for i, day in enumerate(days):
        window = [d for d in days[max(0, i - 2) : i + 1] if d in trips]
        if window:
            last3[day] = (len(window), sum(trips[d] for d in window))
    return {"daily": daily, "daily_copy": daily, "monthly": {"2024-02": month}, "last3": last3}


def holdings(lake: str) -> dict[str, dict[str, tuple]]:
    out = {a: rows(lake, a) for a in ("daily", "daily_copy", "last3")}
    out["monthly"] = rows(lake, "monthly", "month")
    # sums may differ in the last bits with the order of addition
    out["monthly"] = {k: (v[0], v[1], pytest.approx(v[2])) for k, v in out["monthly"].items()}
    return out


def commits_after(url: str, version: int):
    dt = DeltaTable(url)
    return [
        parse_commit(Path(f"{url}/_delta_log/{v:020d}.json").read_bytes(), v, "day")
        for v in range(version + 1, dt.version() + 1)
    ]


def assert_deleted_once(lake: str, asset: str, before: int) -> None:
    """`asset` lost GONE in exactly one commit after `before`: a lakeflow commit that removed its
    files, added none and touched nothing else; a `unit_deleted` event names that version."""
    url = f"{lake}/{asset}"
    touching = [c for c in commits_after(url, before) if GONE in c.touched]
    assert len(touching) == 1, touching
    commit = touching[0]
    assert commit.touched == {GONE} and not commit.added and commit.removed[GONE]
    assert commit.metadata is not None and commit.metadata["deleted"] == [GONE]
    assert commit.published()[GONE].inputs  # the input versions it saw: fresh-as-absent
    events = lf.read_events(Lake(lake), kinds=["unit_deleted"], asset=asset)
    assert events.select("partition", "version").rows() == [(GONE, commit.version)]


def assert_nothing_left_to_do(pipeline: lf.Pipeline, executor: str) -> None:
    again = lf.materialize(pipeline, executor=executor)
    assert again.ok and set(again.counts()) == {"fresh"}, again
    status = {r["asset"]: r for r in lf.status(pipeline).iter_rows(named=True)}
    for asset in ("daily", "daily_copy"):
        row = status[asset]
        assert (row["published"], row["deleted"], row["missing"], row["stale"]) == (28, 1, 0, 0)
    assert status["trips"]["deleted"] == 1
    assert status["last3"]["published"] == 29 and status["monthly"]["published"] == 1


def test_a_partition_deleted_upstream_is_deleted_downstream_by_plain_runs(lake):
    pipeline = deletes_pipeline(lake)
    source = f"{lake}/trips"
    february_trips(source)
    assert lf.materialize(pipeline, executor="local").ok
    assert holdings(lake) == model(lake)
    before = {a: DeltaTable(f"{lake}/{a}").version() for a in ("daily", "daily_copy")}

    DeltaTable(source).delete(f"day = '{GONE}'")
    result = lf.materialize(pipeline, executor="local")
    assert result.ok, result
    outcome = dict(
        result.units.filter(pl.col("partition") == GONE)
        .select(pl.concat_str("asset", pl.lit(" "), "outcome"), "version")
        .iter_rows()
    )
    assert set(outcome) == {"daily deleted", "daily_copy deleted", "last3 published"}
    assert GONE not in rows(lake, "daily") and GONE not in rows(lake, "daily_copy")
    assert holdings(lake) == model(lake)
    for asset in ("daily", "daily_copy"):
        assert_deleted_once(lake, asset, before[asset])
    assert_nothing_left_to_do(pipeline, "local")
    # lineage follows the deletes back to the outside commit that started them
    trace = lf.lineage(pipeline, "daily_copy", GONE).rows()
    assert trace.select("depth", "asset", "kind").rows() == [
        (0, "daily_copy", "deleted"), (1, "daily", "deleted"), (2, "trips", "deleted"),
    ]  # fmt: skip
    assert trace["run_id"].to_list()[:2] == [result.run_id] * 2


def test_an_outside_delete_cascades_through_the_triggers(ray_session, lake):
    pipeline = deletes_pipeline(lake)
    source = f"{lake}/trips"
    february_trips(source)
    assert lf.materialize(pipeline).ok
    before = {a: DeltaTable(f"{lake}/{a}").version() for a in ("daily", "daily_copy")}
    lf.up(pipeline, poll=0.05)
    try:
        DeltaTable(source).delete(f"day = '{GONE}'")

        def settled():
            """every asset holds what the remaining source rows give"""
            try:
                return holdings(lake) == model(lake)
            except Exception:
                return False

        eventually(settled, timeout=90)
        for asset in ("daily", "daily_copy"):
            eventually(
                lambda a=asset: len(lf.read_events(Lake(lake), kinds=["unit_deleted"], asset=a))
            )
            assert_deleted_once(lake, asset, before[asset])
        failed = lf.read_events(
            Lake(lake), kinds=["unit_failed", "unit_upstream_failed", "trigger_failed"]
        )
        assert failed.is_empty(), failed
    finally:
        lf.down(lake=lake, timeout=10)
    assert holdings(lake) == model(lake)
    assert_nothing_left_to_do(pipeline, "ray")


def _snapshots(pipeline: lf.Pipeline, *, source_present: bool) -> dict:
    """Every asset built and fresh; the source's partitions all touched at version 5, holding data
    or (source_present=False) emptied by that commit."""
    import numpy as np

    from lakeflow.plan.planner import AssetSnapshot

    out = {}
    for name, item in pipeline.assets.items():
        n = len(item.partitions)
        ups = [e.up for e in pipeline.upstream(name)]
        present = np.full(n, source_present if item.source else True)
        touched = np.full(n, 5 if item.source else 1, np.int64)
        code = np.full(n, item.code_version, object)
        inputs = {u: np.full(n, 5 if pipeline[u].source else 1, np.int64) for u in ups}
        out[name] = AssetSnapshot(6, present, touched, code, np.full(n, "r", object), inputs)
    if not source_present:  # the whole month emptied after everything was built from it
        for name in ("daily", "daily_copy", "monthly", "last3"):
            snap = out[name]
            for up in snap.inputs:
                if pipeline[up].source:
                    snap.inputs[up][:] = 4
    return out


@pytest.mark.parametrize("force", [False, True])
def test_a_window_deleted_whole_deletes_its_roll_up_and_lookbacks(lake, force):
    from lakeflow.plan.planner import DELETED, Request, build_plan, partition_status

    pipeline = deletes_pipeline(lake)
    snapshots = _snapshots(pipeline, source_present=False)
    plan = build_plan(pipeline, Request(select=("*",), force=force), snapshots)
    assert plan.counts() == {"daily": 29, "daily_copy": 29, "monthly": 1, "last3": 29}
    assert plan.deletes is not None and plan.deletes.all() and not plan.missing
    # once deleted, nothing is left to do, whatever the mode
    for name in ("daily", "daily_copy", "monthly", "last3"):
        snap = snapshots[name]
        snap.present[:] = False
        snap.touched[:] = 7
    again = build_plan(pipeline, Request(select=("*",), force=force), snapshots)
    assert again.size == 0 and not again.missing
    assert {n: set(c.tolist()) for n, c in partition_status(pipeline, snapshots).items()} == {
        n: {DELETED} for n in pipeline.assets
    }


def test_a_source_partition_never_written_is_reported_as_such(lake):
    pipeline = deletes_pipeline(lake)
    from tests.trigger_pipelines import write_trips

    write_trips(f"{lake}/trips", "2024-02-01", [1])
    result = lf.materialize(pipeline, select="daily", partitions="2024-02-02", executor="local")
    (error,) = result.units["error"].to_list()
    assert error.endswith(
        "input trips partition 2024-02-02 has no data (a source: its producer writes it)"
    )
    assert "select +" not in error
