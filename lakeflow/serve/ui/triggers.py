"""The web UI's triggers page: what the lake's trigger state stores (a cursor per watched table,
the consumer partitions pending, each schedule's last tick) beside the pipeline's declared
triggers (schedules with their next tick) and the runs triggers fired. Read-only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
from croniter import croniter

from lakeflow.define.automation import OnPublish, Schedule
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.serve.ui.pages import PREFIX, e, table
from lakeflow.triggers.follow import TriggerState

__all__ = ["next_tick", "triggers_body"]

_TRIGGERED = ("schedule", "commit", "file", "sensor", "trigger")


def next_tick(item: Schedule, now: float) -> datetime:
    """The schedule's first tick after `now`, in UTC."""
    tick = croniter(item.cron, datetime.fromtimestamp(now, ZoneInfo(item.tz))).get_next(float)
    return datetime.fromtimestamp(tick, UTC)


def _when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def triggers_body(pipeline: Any, lake: Lake) -> str:
    state = TriggerState.load(lake)
    now = datetime.now(UTC).timestamp()
    schedules = [t for t in pipeline.triggers if isinstance(t, Schedule)]
    callbacks = [t for t in pipeline.triggers if isinstance(t, OnPublish)]
    out = ["<h2>watched tables</h2>" + table(
        ["table", "cursor (last version handled)"], sorted(state.cursors.items()), cls="cursors"
    )]  # fmt: skip
    pending = [
        (consumer, len(keys), ", ".join(sorted(keys)[:10]) + (" ..." if len(keys) > 10 else ""))
        for consumer, keys in sorted(state.pending.items()) if keys
    ]  # fmt: skip
    out.append("<h2>pending partitions</h2>" + table(["consumer", "partitions", "first"], pending,
                                                     cls="pending"))  # fmt: skip
    rows = [
        (s.name, s.cron, s.tz, s.select, s.describe_catch_up(), _when(state.ticks.get(s.name)),
         next_tick(s, now).isoformat(timespec="seconds"))
        for s in schedules
    ]  # fmt: skip
    out.append("<h2>schedules</h2>" + table(
        ["name", "cron", "tz", "select", "catch up", "last tick", "next tick"], rows, cls="schedules"
    ))  # fmt: skip
    if callbacks:
        out.append("<h2>publish callbacks</h2><ul>"
                   + "".join(f"<li>{e(c.asset)}</li>" for c in callbacks) + "</ul>")  # fmt: skip
    runs = read_events(lake, kinds=["run_requested"])
    fired = (
        runs.filter(pl.col("message").fill_null("").str.contains("^(" + "|".join(_TRIGGERED) + ")"))
        .reverse()
        .head(20)
    )
    out.append("<h2>last fires</h2>" + table(
        ["run", "origin", "at"],
        [(f'<a href="{PREFIX}/runs/{e(r)}">{e(r)}</a>', e(m), e(ts))
         for r, m, ts in fired.select("run_id", "message", "ts").iter_rows()],
        raw=True, cls="fires",
    ))  # fmt: skip
    return "".join(out)
