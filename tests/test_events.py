"""The event log on a real Delta table: batched appends, and compaction that keeps it fast to
read under a controller that runs for months."""

import shutil

import pytest
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakeflow.lake import Lake
from lakeflow.lake.events import Event, EventLog, read_events


def flush_events(log: EventLog, count: int, start: int = 0) -> None:
    """Flush one event at a time and compact when due, as the controller's flush loop does."""
    for i in range(start, start + count):
        log.emit(Event("run-1", "unit_published", asset="a", partition=f"p{i:03d}", version=i))
        assert log.flush() == 1
        if log.compact_due():
            log.compact()


def test_a_flush_never_compacts(tmp_path):
    """Compaction takes hundreds of milliseconds and a flush is on the path of every run's
    start: the flush only appends, and says when a compaction is due."""
    lake = Lake(str(tmp_path / "lake"))
    log = EventLog(lake, compact_after=3)
    for i in range(5):
        log.emit(Event("run-1", "unit_started", partition=f"p{i}"))
        log.flush()
    assert len(DeltaTable(log.url).file_uris()) == 5 and log.compact_due()
    log.compact()
    assert len(DeltaTable(log.url).file_uris()) == 1 and not log.compact_due()


def test_the_log_is_compacted_without_losing_or_reordering_events(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    log = EventLog(lake, compact_after=5)
    flush_events(log, 12)
    files = DeltaTable(log.url).file_uris()
    assert len(files) == 3  # two compactions (after 5 and 10 flushes), then 2 new small files
    events = read_events(lake)
    assert events["partition"].to_list() == [f"p{i:03d}" for i in range(12)]
    assert events["version"].to_list() == list(range(12))


def test_a_new_controllers_log_compacts_what_an_earlier_one_left(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    flush_events(EventLog(lake, compact_after=1000), 8)
    assert len(DeltaTable(lake.table_url("_lakeflow/events")).file_uris()) == 8
    log = EventLog(lake, compact_after=5)
    flush_events(log, 1, start=8)  # the 9 files it finds count: it compacts at once
    assert len(DeltaTable(log.url).file_uris()) == 1
    assert read_events(lake, kinds=["unit_published"]).height == 9


def test_a_log_that_fails_to_append_reopens_its_table_and_keeps_its_events(tmp_path):
    """A failed flush keeps the batch, and the next flush opens the table afresh: a log whose
    table was deleted (or replaced) under it starts a new one instead of failing forever."""
    lake = Lake(str(tmp_path / "lake"))
    log = EventLog(lake)
    flush_events(log, 2)
    shutil.rmtree(tmp_path / "lake" / "_lakeflow" / "events")
    log.emit(Event("run-2", "run_requested"))
    with pytest.raises(DeltaError):
        log.flush()  # the open handle points at a table that is gone
    assert log.pending() == 1
    assert log.flush() == 1
    assert read_events(lake)["run_id"].to_list() == ["run-2"]
