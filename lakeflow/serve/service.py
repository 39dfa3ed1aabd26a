"""The long-running side of lakeflow: `up` starts a pipeline's triggers in the lake's controller,
`down` stops them (from any process: a marker in the lake), `subscribe` follows a table's publishes
from this process.

>>> service = lf.up(pipeline)                    # commits, schedules and file arrivals now run work
>>> service.status()["pending"]
>>> sub = lf.subscribe("daily_revenue", print, lake="./lake")
>>> lf.down(lake="./lake")
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from lakeflow.control.client import controller_client
from lakeflow.control.controller import LEGACY_UP_BLOB, UP_RECORD, ControllerOptions
from lakeflow.define.assets import AssetDef
from lakeflow.define.automation import Publish
from lakeflow.define.definition import reference
from lakeflow.errors import SelectionError
from lakeflow.lake import Lake
from lakeflow.plan.status import as_pipeline
from lakeflow.triggers.engine import TriggerOptions
from lakeflow.triggers.follow import DOWN_MARKER, TableFollower, as_publish, is_publish

__all__ = ["Service", "Subscription", "down", "subscribe", "up"]


class Service:
    """A pipeline's triggers running in its lake's controller."""

    def __init__(self, client: Any, lake: Lake, pipeline: Any) -> None:
        self._client = client
        self.lake = lake
        self.pipeline = pipeline

    def status(self) -> dict[str, Any] | None:
        """Cursors, waiting consumer partitions, schedules and counts; None once it is down."""
        return self._client.call("trigger_status")

    @property
    def running(self) -> bool:
        return self.status() is not None

    def down(self) -> bool:
        """Stop the triggers (runs in flight carry on)."""
        return bool(self._client.call("down"))

    def __repr__(self) -> str:
        info = self.status()
        return f"<lakeflow up {self.pipeline.name}: {'running' if info else 'down'}>"


def up(
    target: Any,
    *,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    executor: str = "ray",
    address: str | None = None,
    options: ControllerOptions | None = None,
    poll: float = 0.1,
) -> Service:
    """Start `target`'s triggers in the lake's controller and return at once; they run until
    `down` (or `Service.down`), also across controller restarts.

    - poll: seconds between looks for outside commits; lakeflow's own publishes need no poll.
    """
    invoked = time.time()  # before Ray starts: the schedules' ticks from here on fire
    pipeline = as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    reference(pipeline)  # where it is defined, for a restarted controller to import it again
    client = controller_client(where, executor, options, address)
    client.call("up", pipeline, TriggerOptions(poll=poll, invoked=invoked))
    return Service(client, where, pipeline)


def down(
    target: Any = None,
    *,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> bool:
    """Stop the triggers running on a lake, from any process (no Ray connection needed): a
    marker in the lake tells the controller. True once they stopped; False if none were up (or
    the process running them died without stopping them: its marks are cleared)."""
    where = _lake(target, lake, storage_options)
    if not any(where.exists(f"{where.url}/{blob}") for blob in (UP_RECORD, LEGACY_UP_BLOB)):
        return False
    where.write_bytes(f"{where.url}/{DOWN_MARKER}", b"down")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(where.exists(f"{where.url}/{b}") for b in (UP_RECORD, LEGACY_UP_BLOB)):
            return True
        time.sleep(0.1)
    # nobody answered: the process that ran them died without stopping them; clear its marks
    for stale in (UP_RECORD, LEGACY_UP_BLOB, DOWN_MARKER):
        if where.exists(f"{where.url}/{stale}"):
            where.filesystem().delete_file(where.path(f"{where.url}/{stale}"))
    return False


def _lake(target: Any, lake: str | None, storage_options: Mapping[str, str] | None) -> Lake:
    if target is None:
        if lake is None:
            raise SelectionError("name a pipeline or a lake")
        return Lake(lake, dict(storage_options or {}))
    pipeline = as_pipeline(target, lake, storage_options)
    return Lake(pipeline.lake, pipeline.storage_options)


class Subscription:
    """Calls `callback(Publish)` for every new version of a table, in order, from a thread of
    this process. Stop it with `stop()` (or use it as a context manager)."""

    def __init__(
        self,
        lake: Lake,
        table: str,
        url: str,
        column: str | None,
        callback: Callable[[Publish], Any],
        cursor: int,
        poll: float,
    ) -> None:
        self.table = table
        self.callback = callback
        self.poll = poll
        self.errors: list[BaseException] = []
        self._follower = TableFollower(lake, url, column, cursor)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"lakeflow-subscribe-{table}", daemon=True
        )
        self._thread.start()

    @property
    def cursor(self) -> int:
        """The last version delivered."""
        return self._follower.cursor

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for commit in self._follower.poll():
                    if self._stop.is_set():
                        return
                    if is_publish(commit):
                        self.callback(as_publish(self.table, commit))
                    self._follower.cursor = commit.version  # after delivery: at least once
            except Exception as error:  # keep following; the caller can look at .errors
                self.errors.append(error)
            self._stop.wait(self.poll)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def subscribe(
    table: str | AssetDef,
    callback: Callable[[Publish], Any],
    *,
    lake: str | None = None,
    pipeline: Any = None,
    storage_options: Mapping[str, str] | None = None,
    from_version: int | None = None,
    poll: float = 0.2,
) -> Subscription:
    """Follow the publishes of a table (an asset or a source) and call `callback` with each:
    table, version, the partitions it changed, who wrote it. Producer and subscriber know
    nothing of each other; the lake is all they share.

    >>> sub = lf.subscribe("daily_revenue", lambda p: print(p.version, p.partitions), lake="./lake")

    - from_version: the first version to deliver (default: only versions after now).
    """
    if pipeline is not None:
        resolved = as_pipeline(pipeline, lake, storage_options)
        where = Lake(resolved.lake, resolved.storage_options)
        item = resolved[table.name if isinstance(table, AssetDef) else table]
        url, column, name = item.table_url(where), item.partitions.column, item.name
    else:
        if lake is None:
            raise SelectionError("subscribe needs lake= (or pipeline=)")
        where = Lake(lake, dict(storage_options or {}))
        if isinstance(table, AssetDef):
            url, column, name = table.table_url(where), table.partitions.column, table.name
        else:
            url, column, name = where.table_url(table), None, table
    if column is None and TableFollower.current_version(where, url) >= 0:
        from deltalake import DeltaTable

        columns = (
            DeltaTable(url, storage_options=where.delta_options()).metadata().partition_columns
        )
        column = columns[0] if columns else None
    cursor = (
        from_version - 1 if from_version is not None else TableFollower.current_version(where, url)
    )
    return Subscription(where, name, url, column, callback, cursor, poll)
