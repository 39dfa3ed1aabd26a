"""When staged units of a table are committed: cheap commits every `linger` or every
`max_units`; a table whose commits grew dear (a big Delta table) in bigger, rarer groups."""

import json

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.control.group_commit import GroupCommits, Staged
from lakeflow.errors import RequestError
from lakeflow.lake import Lake


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def group_commits(
    clock: Clock, *, linger: float = 1.0, max_units: int = 3, longest: float = 300.0
) -> GroupCommits:
    """A run's group commits, for what `ready` decides (nothing here is committed)."""
    return GroupCommits(
        run_id="r", pipeline=None, handle=None, lake=None, tables={}, table_lock=None,
        executor=None, fence=None, emit=None, committed=None, released=None, superseded=None,
        linger=linger, max_units=max_units, share=0.1, longest=longest, clock=clock,
    )  # fmt: skip


def stage(commits: GroupCommits, asset: str, count: int) -> None:
    for unit in range(count):
        commits.stage(asset, Staged(unit, record=None))


def sizes(ready: list[tuple[str, list[Staged]]]) -> list[tuple[str, int]]:
    return [(asset, len(batch)) for asset, batch in ready]


def test_cheap_commits_go_when_full_or_after_the_linger():
    clock = Clock()
    commits = group_commits(clock)
    stage(commits, "a", 4)
    assert sizes(commits.ready({"a": 2})) == [("a", 3)]  # a full commit does not wait
    commits.committing.clear()
    assert commits.ready({"a": 2}) == []  # one left: more are on their way
    clock.now += 1.0
    assert sizes(commits.ready({"a": 2})) == [("a", 1)]


def test_a_table_whose_commits_are_dear_is_committed_in_bigger_rarer_groups():
    clock = Clock()
    commits = group_commits(clock)
    commits.cost["a"] = 0.5  # half a second: more than a tenth of the linger
    assert commits.linger_of("a") == pytest.approx(5.0)
    assert commits.linger_of("b") == 1.0  # other tables keep the run's linger
    stage(commits, "a", 7)
    stage(commits, "b", 2)
    clock.now += 4.9
    assert sizes(commits.ready({"a": 1, "b": 1})) == [("b", 2)]  # "a" waits, past max_units
    clock.now += 0.1
    assert sizes(commits.ready({"a": 1})) == [("a", 7)]  # then goes whole


def test_one_slow_commit_holds_its_table_back_five_minutes_at_most():
    commits = group_commits(Clock())
    commits.cost["a"] = 120.0
    assert commits.linger_of("a") == 300.0


def test_a_run_that_is_no_backfill_holds_a_dear_table_back_seconds_not_minutes():
    """Its consumers wait on each commit (a triggered run into a million-file table)."""
    commits = group_commits(Clock(), linger=0.05, longest=5.0)
    commits.cost["a"] = 10.0
    assert commits.linger_of("a") == 5.0


def test_a_dear_table_is_committed_at_once_when_none_of_its_units_runs():
    commits = group_commits(Clock())
    commits.cost["a"] = 10.0
    stage(commits, "a", 2)
    assert sizes(commits.ready({})) == [("a", 2)]


def test_commit_share_must_be_a_share():
    with pytest.raises(RequestError, match="commit_share"):
        lf.ControllerOptions(commit_share=0.0)


def test_each_group_commit_is_recorded_with_its_seconds(tmp_path):
    days = lf.DailyPartitions(start="2024-01-01", end="2024-01-11")

    @lf.asset(partitions=days)
    def daily() -> pl.DataFrame:
        return pl.DataFrame({"x": [1]})

    lake = str(tmp_path / "lake")
    options = lf.ControllerOptions(backfill_commit_linger=0.0, max_task_units=1)
    result = lf.backfill([daily], lake=lake, executor="local", options=options)
    assert result.ok
    events = lf.read_events(Lake(lake), kinds=["table_committed"])
    published = lf.read_events(Lake(lake), kinds=["unit_published"])
    assert set(events["asset"]) == {"daily"}
    assert sorted(events["version"]) == sorted(set(published["version"]))
    assert sum(json.loads(d)["units"] for d in events["detail"]) == 10
    assert all(s > 0 for s in events["seconds"])
