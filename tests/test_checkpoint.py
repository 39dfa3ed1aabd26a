"""A table read from its newest checkpoint: Delta's for the files, lakeflow's for what its
partitions were built from, and the JSON commits after them, each once; the same state as
following the table commit by commit, also once Delta has cleaned its old commits up."""

import os
import shutil

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.transaction import PostCommitHookProperties

from lakeflow.errors import LakeError
from lakeflow.lake import Lake
from lakeflow.lake import log as log_module
from lakeflow.lake.checkpoint import CHECKPOINTS_DIR
from lakeflow.lake.compaction import compact
from lakeflow.lake.log import TableState
from lakeflow.lake.publish import UnitOutput
from lakeflow.triggers.follow import TableFollower
from tests.test_lake import commit, day_frame, stage


@pytest.fixture
def table(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    return lake, lake.table_url("orders")


def build(lake, url, properties):
    """A table of lakeflow commits (replacing and deleting partitions), outside commits and an
    outside OPTIMIZE (data-neutral), with Delta checkpoints every two versions; returns the
    state that followed every commit."""
    _, state = commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in ("a", "b", "c")])
    return build_on(lake, url, state, properties)


def build_on(lake, url, state, properties, outside_cleans=False, optimize=True):
    """`build`'s commits after the first, following them with `state`. The outside writer
    cleans up expired commits when it checkpoints only with `outside_cleans` (deltalake's
    default); the OPTIMIZE is then the outside writer's, else lakeflow's (`compact`:
    deltalake's optimize cleans up whatever it is told)."""
    hooks = PostCommitHookProperties(cleanup_expired_logs=None if outside_cleans else False)
    DeltaTable(url).alter.set_table_properties(
        {"delta.checkpointInterval": "2", **properties}, post_commithook_properties=hooks
    )
    state.refresh(lake)
    for run, keys in enumerate([("b",), ("d", "e"), ("a", "f")], start=2):
        units = [stage(lake, url, k, day_frame(k, n=run)) for k in keys]
        commit(lake, url, units, run_id=f"run-{run}", state=state)
    commit(lake, url, [UnitOutput("c", (), {"up": 4}, "", delete=True)], "run-5", state)
    for n, label in ((9, "x"), (10, "y")):
        frame = pa.table({"id": [n], "label": [label], "date": ["g"]})
        write_deltalake(url, frame, mode="append", post_commithook_properties=hooks)
    if optimize and outside_cleans:  # moves g's rows, changes no partition's data
        DeltaTable(url).optimize.compact()
    elif optimize:
        state.refresh(lake)
        compact(lake, state, keys=["g"])
    commit(lake, url, [stage(lake, url, "e", day_frame("e", n=7))], run_id="run-6", state=state)
    state.refresh(lake)
    return state


def held(state):
    """Partition key -> its files, of the partitions that hold any."""
    return {key: paths for key, paths in state.files.items() if paths}


def same(loaded, followed):
    assert loaded.version == followed.version
    assert held(loaded) == held(followed)
    assert loaded.touched == followed.touched
    assert loaded.published == followed.published
    assert (loaded.txn_version, loaded.column, loaded.table_id) == (
        followed.txn_version, followed.column, followed.table_id,
    )  # fmt: skip
    assert loaded.schema == followed.schema


def reads_of(lake, monkeypatch):
    """The commit files a load reads (our own Lake, spied on)."""
    read = []
    real = Lake.read_bytes

    def spy(self, url):
        if url.endswith(".json") and "/_delta_log/" in url:
            read.append(int(url.rsplit("/", 1)[1][:20]))
        return real(self, url)

    monkeypatch.setattr(Lake, "read_bytes", spy)
    return read


def checkpoints_of(url):
    """The versions of the table's Delta checkpoints."""
    return sorted(int(n[:20]) for n in os.listdir(f"{url}/_delta_log") if ".checkpoint." in n)


def checkpoints(url):
    delta = sorted(n for n in os.listdir(f"{url}/_delta_log") if ".checkpoint." in n)
    ours = sorted(os.listdir(f"{url}/{CHECKPOINTS_DIR}"))
    return [int(n[:20]) for n in delta], [int(n[:20]) for n in ours]


def test_a_table_loads_from_its_checkpoints_as_it_was_followed(table, monkeypatch):
    lake, url = table
    followed = build(lake, url, {})
    delta, ours = checkpoints(url)
    assert delta and ours and len(ours) <= 2  # lakeflow's beside Delta's, the newest two
    assert ours[-1] >= delta[-1]
    read = reads_of(lake, monkeypatch)
    loaded = TableState.load(lake, url)
    same(loaded, followed)
    assert loaded.published["a"].run_id == "run-4" and loaded.published["b"].run_id == "run-2"
    assert "c" not in loaded.files and loaded.touched["c"] == followed.touched["c"]
    assert "g" not in loaded.published  # the outside commit's
    assert read and min(read) > delta[-1]  # only the commits after the checkpoint ...
    assert len(read) == len(set(read))  # ... each once
    assert loaded.handle is None  # deltalake did not read the log


def test_what_partitions_were_built_from_outlives_the_commits_delta_cleans_up(table):
    lake, url = table
    followed = build(lake, url, {"delta.logRetentionDuration": "interval 0 seconds"})
    commits = sorted(int(n[:20]) for n in os.listdir(f"{url}/_delta_log") if n.endswith(".json"))
    assert commits[0] > 1  # the commit that built "a".."c" is gone
    loaded = TableState.load(lake, url)
    same(loaded, followed)
    assert loaded.published["b"].run_id == "run-2"


def test_lakeflows_own_commits_clean_up_only_behind_its_checkpoint(table, monkeypatch):
    """lakeflow's commits (publishes, optimize, table properties) leave Delta's cleanup off and
    clean up once lakeflow's checkpoint is written at the same version: a checkpoint that
    failed to be written loses nothing to a restart."""
    lake, url = table
    monkeypatch.setattr(log_module, "write_partition_checkpoint", broken_write)
    _, state = commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in ("a", "b", "c", "u")])
    follower = TableFollower(lake, url, "date", cursor=0)
    followed = build_on(
        lake, url, state, {"delta.logRetentionDuration": "interval 0 seconds"}, optimize=False
    )
    with pytest.raises(LakeError, match="could not checkpoint"):
        compact(lake, followed, keys=["g"])  # its commit would clean up: it does not start
    commits = sorted(int(n[:20]) for n in os.listdir(f"{url}/_delta_log") if n.endswith(".json"))
    assert commits[0] == 0  # nothing cleaned up behind a checkpoint lakeflow has not written
    monkeypatch.undo()
    same(TableState.load(lake, url), followed)
    compact(lake, followed, keys=["b"], min_files=1)  # an optimize writes it, then cleans up
    assert checkpoints(url)[1][-1] == followed.version == checkpoints(url)[0][-1]
    assert sorted(n for n in os.listdir(f"{url}/_delta_log") if n.endswith(".json"))[0][:20] == (
        f"{followed.version:020d}"
    )
    loaded = TableState.load(lake, url)
    same(loaded, followed)
    assert loaded.published["b"].run_id == "run-2" and loaded.published["u"].run_id == "run-1"
    gap = follower.poll()[0]  # behind the cleanup, bridged by lakeflow's checkpoint: exact
    assert gap.operation == "LAKEFLOW LOG GAP" and gap.touched == set("abcdefg")


def broken_write(*args, **kwargs):
    raise OSError("the store refused the write")


def test_an_outside_writers_cleanup_makes_what_it_hid_count_as_changed(table):
    """An outside writer that checkpoints and cleans up the commits lakeflow's checkpoint
    needs to be brought up to date: what those commits changed is unknown, so every partition
    counts as changed then (consumers rebuild) — never as built by lakeflow when it may not
    be."""
    lake, url = table
    followed = build_on(
        lake, url, commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in "abc"])[1],
        {"delta.logRetentionDuration": "interval 0 seconds"}, outside_cleans=True,
    )  # fmt: skip
    loaded = TableState.load(lake, url)
    same(loaded, followed)
    assert set(loaded.published) <= {"e"}  # only run-6's, after the gap
    assert all(loaded.touched[key] >= 5 for key in "abdf")  # changed after run-5, for all we know


def test_a_table_without_lakeflows_checkpoint_is_read_from_its_log(table):
    lake, url = table
    followed = build(lake, url, {})
    shutil.rmtree(f"{url}/{CHECKPOINTS_DIR}")
    same(TableState.load(lake, url), followed)


def test_a_checkpoint_of_another_table_at_the_same_place_is_not_taken(table, tmp_path):
    lake, url = table
    build(lake, url, {})
    kept = tmp_path / "kept"
    shutil.copytree(f"{url}/{CHECKPOINTS_DIR}", kept)
    shutil.rmtree(url)  # dropped, and made again by an outside writer
    write_deltalake(url, pa.table({"id": [1], "date": ["a"]}), partition_by=["date"])
    DeltaTable(url).alter.set_table_properties({"delta.checkpointInterval": "2"})
    write_deltalake(url, pa.table({"id": [2], "date": ["b"]}), mode="append")
    shutil.copytree(kept, f"{url}/{CHECKPOINTS_DIR}")
    loaded = TableState.load(lake, url)
    assert checkpoints(url)[0] and loaded.published == {}
    assert loaded.touched == {"a": 0, "b": 2}


def test_lakeflows_checkpoint_brought_up_to_date_by_the_commits_after_it(table):
    """Delta checkpointed a version after lakeflow's last checkpoint (an outside writer's
    commit made it): the JSON commits between the two fill the gap."""
    lake, url = table
    followed = build(lake, url, {})
    for n in range(2):  # outside commits until Delta checkpoints one of them
        frame = pa.table({"id": [n], "label": ["x"], "date": [f"h{n}"]})
        write_deltalake(url, frame, mode="append")
    followed.refresh(lake)
    delta, ours = checkpoints(url)
    assert delta[-1] > ours[-1]
    same(TableState.load(lake, url), followed)


def test_a_table_growing_in_big_commits_is_checkpointed_by_what_they_changed(table, monkeypatch):
    """Delta checkpoints every 100 versions: too seldom for a table that grows in big group
    commits. lakeflow adds one once the commits since the last changed half as many files as
    the table has partitions (100,000 at least; 4 here): each time a growing table doubled."""
    monkeypatch.setattr(log_module, "CHECKPOINT_ACTIONS", 4)
    lake, url = table
    _, state = commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in "abc"])
    assert checkpoints_of(url) == []
    for run, keys in enumerate(["def", "gh", "ijklmnop"], start=2):
        commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in keys], f"run-{run}", state)
    # 3 + 3 files changed by version 1 (6 partitions), then 2 (8) and 2 + 8 (16)
    assert checkpoints_of(url) == [1, 3]
    assert checkpoints(url)[1] == [1, 3]
    same(TableState.load(lake, url), state)


def test_a_follower_behind_the_logs_cleanup_reads_the_table_afresh(table):
    """Commits Delta cleaned up before a follower came to them (its log retention passed while
    lakeflow slept): a state refreshed, a trigger's follower and a publish from that old state
    all go on from the table as it is, and report one commit that touched every partition
    (lakeflow's checkpoint cannot bridge an outside writer's cleanup either), deleted ones
    included, instead of waiting for a commit that will never appear."""
    lake, url = table
    _, behind = commit(lake, url, [stage(lake, url, k, day_frame(k)) for k in ("a", "b", "c", "u")])
    follower = TableFollower(lake, url, "date", cursor=0)
    followed = build_on(lake, url, TableState.load(lake, url), {
        "delta.logRetentionDuration": "interval 0 seconds"}, outside_cleans=True)  # fmt: skip
    assert not os.path.exists(f"{url}/_delta_log/{1:020d}.json")

    commits = follower.poll()  # knows no files: every partition may have changed
    assert commits[0].operation == "LAKEFLOW LOG GAP"
    assert commits[0].version <= followed.version == commits[-1].version
    assert commits[0].touched == set("abcdefgu")  # lakeflow's checkpoint could not tell
    assert commits[0].removed.keys() == {"c"}  # deleted meanwhile
    applied = behind.refresh(lake, check_gap=True)  # the same: its own knowledge is as old
    assert applied[0].operation == "LAKEFLOW LOG GAP"
    assert set().union(*(c.touched for c in applied)) == set("abcdefgu")
    same(behind, followed)
    assert "u" not in behind.published  # unchanged, but nothing can tell
    assert TableFollower(lake, url, "date", cursor=followed.version).poll() == []

    stale = TableState.load(lake, url)  # a state left behind, then a publish from it
    build_on(lake, url, followed, {})
    newest = commit(lake, url, [stage(lake, url, "z", day_frame("z"))], "run-9", stale)[0]
    assert newest.version == stale.version and stale.published["z"].run_id == "run-9"


def test_a_table_made_again_by_lakeflow_keeps_its_own_checkpoints(table):
    """The dropped table's checkpoints, numbered past the new table's versions, neither hide
    the new table's (read past them) nor outlive its first (pruned as foreign)."""
    lake, url = table
    build(lake, url, {})
    old = checkpoints(url)[1]
    shutil.rmtree(f"{url}/_delta_log")  # dropped; its _lakeflow folder left behind
    shutil.rmtree(f"{url}/date=a", ignore_errors=True)
    _, state = commit(lake, url, [stage(lake, url, "x", day_frame("x"))], run_id="again-1")
    DeltaTable(url).alter.set_table_properties({"delta.checkpointInterval": "2"})
    state.refresh(lake)
    commit(lake, url, [stage(lake, url, "y", day_frame("y"))], run_id="again-2", state=state)
    ours = checkpoints(url)[1]
    assert ours and max(ours) < min(old)  # the old table's are gone
    loaded = TableState.load(lake, url)
    same(loaded, state)
    assert loaded.published["x"].run_id == "again-1"
