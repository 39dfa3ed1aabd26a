"""What the CLI, a notebook and the web endpoint call: connect, materialize, status, stop.

>>> import lakeflow as lf
>>> result = lf.materialize(pipeline, select="delays+", partitions="2013-01-01..2013-01-31")
>>> result            # a table of units in a notebook
>>> lf.status(pipeline)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from .assets import AssetDef
from .controller import Controller, ControllerOptions, actor_class
from .errors import DefinitionError, LakeflowError, RunError
from .events import read_events
from .executors import LocalExecutor
from .graph import Pipeline
from .lake import Lake
from .lake.log import TableState
from .planner import FRESH, STALE, Request, partition_status, snapshot
from .runs import RESULT_SCHEMA

__all__ = ["RunResult", "check_results", "connect", "materialize", "status", "stop"]

NAMESPACE = "lakeflow"


# -- Ray -------------------------------------------------------------------------------------
def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
) -> None:
    """Attach this process to Ray: one already initialized, a cluster at `address`
    (`"auto"`, `"ray://host:10001"`, `"host:6379"`), or — by default — a local Ray started for
    this process. A plain local start never joins another cluster on the machine by accident.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address in (None, "local"):
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=object_store_memory or 256 * 2**20,
            log_to_driver=log_to_driver,
            namespace=NAMESPACE,
        )
    else:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=log_to_driver)


def controller_name(lake: Lake) -> str:
    return "lakeflow-" + hashlib.sha1(lake.url.encode()).hexdigest()[:12]


class _RayClient:
    """Talks to the lake's controller actor, creating it if absent."""

    def __init__(self, lake: Lake, options: ControllerOptions) -> None:
        import ray

        self._ray = ray
        self.actor = (
            actor_class()
            .options(
                name=controller_name(lake),
                namespace=NAMESPACE,
                lifetime="detached",
                get_if_exists=True,
            )
            .remote(lake.url, dict(lake.storage_options), options)
        )

    def call(self, method: str, *args: Any) -> Any:
        try:
            return self._ray.get(getattr(self.actor, method).remote(*args))
        except self._ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, LakeflowError):  # our own error, without Ray's wrapping
                raise error.cause from None
            raise


class _LocalClient:
    """A controller in this process, on its own event loop thread: no Ray needed."""

    _instances: dict[str, _LocalClient] = {}
    _lock = threading.Lock()

    def __init__(self, lake: Lake, options: ControllerOptions) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(
            target=self.loop.run_forever, name="lakeflow-controller", daemon=True
        ).start()
        self.controller = Controller(lake, LocalExecutor(options.max_in_flight), options)

    @classmethod
    def get(cls, lake: Lake, options: ControllerOptions) -> _LocalClient:
        with cls._lock:
            if lake.url not in cls._instances:
                cls._instances[lake.url] = cls(lake, options)
            return cls._instances[lake.url]

    def call(self, method: str, *args: Any) -> Any:
        async def invoke() -> Any:
            result = getattr(self.controller, method)(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result()

    @classmethod
    def close(cls, lake: Lake) -> bool:
        """Stop the in-process controller of `lake`, if this process has one."""
        with cls._lock:
            client = cls._instances.pop(lake.url, None)
        if client is None:
            return False
        asyncio.run_coroutine_threadsafe(client.controller.close(), client.loop).result(timeout=60)
        client.loop.call_soon_threadsafe(client.loop.stop)
        return True


def _client(
    lake: Lake, executor: str, options: ControllerOptions | None, address: str | None
) -> Any:
    options = options or ControllerOptions()
    if executor == "local":
        return _LocalClient.get(lake, options)
    connect(address)
    return _RayClient(lake, options)


# -- results ---------------------------------------------------------------------------------
class RunResult:
    """The outcome of a run: one row per unit, with rows, bytes, seconds, Delta version, error."""

    def __init__(self, data: Mapping[str, Any], lake: Lake | None = None) -> None:
        self.lake = lake
        self.run_id: str = data["run_id"]
        self.status: str = data["status"]
        self.started: float | None = data.get("started")
        self.finished: float | None = data.get("finished")
        self.units: pl.DataFrame = pl.from_arrow(data["units"])  # type: ignore[assignment]
        self.errors: dict[str, str] = dict(data.get("errors") or {})

    @property
    def ok(self) -> bool:
        """Every requested unit was published or was already fresh."""
        return (
            self.status == "succeeded"
            and self.units.filter(~pl.col("outcome").is_in(["published", "fresh"])).is_empty()
        )

    def counts(self) -> dict[str, int]:
        return dict(self.units.group_by("outcome").len().sort("outcome").iter_rows())

    def failures(self) -> pl.DataFrame:
        return self.units.filter(~pl.col("outcome").is_in(["published", "fresh"]))

    def checks(self, *, failed: bool = False) -> pl.DataFrame:
        """This run's check results, one row per check per unit (read from the event log)."""
        if self.lake is None:
            raise RunError("this result does not know its lake")
        events = read_events(
            self.lake, run_id=self.run_id, kinds=["check_result", "unit_check_failed"]
        )
        results = _check_frame(events)
        return results.filter(pl.col("status") != "passed") if failed else results

    def raise_on_failure(self) -> RunResult:
        if not self.ok:
            first = self.failures().head(5)
            lines = [
                f"{a} {p}: {e or o}"
                for a, p, o, e in first.select("asset", "partition", "outcome", "error").iter_rows()
            ]
            raise RunError(f"run {self.run_id} {self.status}: " + "; ".join(lines))
        return self

    def summary(self) -> str:
        seconds = (self.finished or time.time()) - (self.started or time.time())
        parts = ", ".join(f"{n} {o}" for o, n in self.counts().items())
        return f"run {self.run_id} {self.status} in {seconds:.1f}s: {parts or 'nothing to do'}"

    def __repr__(self) -> str:
        return f"{self.summary()}\n{self.units}"

    def _repr_html_(self) -> str:
        return f"<p><b>{self.summary()}</b></p>" + self.units._repr_html_()


# -- materialize ------------------------------------------------------------------------------
def _as_pipeline(
    target: Pipeline | Iterable[AssetDef],
    lake: str | None,
    storage_options: Mapping[str, str] | None,
) -> Pipeline:
    if isinstance(target, Pipeline):
        if lake is None and storage_options is None:
            return target
        return Pipeline(
            target.assets.values(),
            lake=lake or target.lake,
            storage_options=storage_options or target.storage_options,
            name=target.name,
        )
    assets = list(target)
    if not assets:
        raise DefinitionError("nothing to materialize: no assets given")
    return Pipeline(assets, lake=lake or "./lake", storage_options=storage_options)


def _spec(partitions: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    if partitions is None or isinstance(partitions, str):
        return partitions
    return tuple(partitions)


def materialize(
    target: Pipeline | Iterable[AssetDef],
    select: str | Sequence[str] | None = None,
    partitions: str | Sequence[str] | None = None,
    *,
    force: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
    order: Literal["oldest", "newest"] = "oldest",
    executor: Literal["ray", "local"] = "ray",
    address: str | None = None,
    options: ControllerOptions | None = None,
    progress: bool | Callable[[Mapping[str, Any]], None] = False,
    raise_on_failure: bool = False,
    origin: str = "api",
) -> RunResult:
    """Bring the selected assets' partitions up to date and return the run's result.

    >>> lf.materialize(pipeline, select="delays+", partitions="2013-01-01..2013-01-31")

    - select: names, `name+` (and downstream), `+name` (and upstream), `*`, comma lists
    - partitions: a key, `a..b`, a comma list, or None for every partition
    - force: rerun units that are already fresh
    - executor: "ray" (the lake's controller actor; local Ray is started if needed) or "local"
      (threads in this process)
    - progress: True for a live bar, or a callable receiving progress dicts
    """
    pipeline = _as_pipeline(target, lake, storage_options)
    terms = (
        ("*",)
        if select is None
        else (tuple(select.split(",")) if isinstance(select, str) else tuple(select))
    )
    pipeline.select(list(terms))  # a bad selection fails here, before any controller starts
    request = Request(select=terms, partitions=_spec(partitions), force=force, order=order)
    client = _client(Lake(pipeline.lake, pipeline.storage_options), executor, options, address)
    summary = client.call("submit", pipeline, request, origin)
    follow(client, summary["run_id"], progress)
    where = Lake(pipeline.lake, pipeline.storage_options)
    data = client.call("result", summary["run_id"])
    result = RunResult(data, where) if data is not None else events_result(where, summary["run_id"])
    if raise_on_failure:
        result.raise_on_failure()
    return result


def follow(client: Any, run_id: str, progress: bool | Callable[[Mapping[str, Any]], None]) -> None:
    """Wait for the run, showing a live bar (units done/failed/total, rate, ETA) if asked."""
    if callable(progress):
        while True:
            done = client.call("wait", run_id, 0.25)
            info = client.call("progress", run_id)
            progress(info)
            if done or info["done"]:
                return
    if not progress:
        while not client.call("wait", run_id, 1.0):
            pass
        return
    from .progress import ProgressBar

    with ProgressBar(run_id) as bar:
        while True:
            done = client.call("wait", run_id, 0.25)
            info = client.call("progress", run_id)
            bar.update(info)
            if done or info["done"]:
                return


def events_result(lake: Lake, run_id: str) -> RunResult:
    """A finished run's result rebuilt from the event log (its controller no longer holds it)."""
    events = read_events(lake, run_id=run_id)
    units = (
        events.filter(
            pl.col("kind").is_in(
                ["unit_published", "unit_failed", "unit_upstream_failed", "unit_cancelled"]
            )
        )
        .group_by("asset", "partition", maintain_order=True)
        .last()
        .select(
            "asset",
            "partition",
            pl.col("kind").str.strip_prefix("unit_").alias("outcome"),
            "rows",
            "bytes",
            "seconds",
            "version",
            pl.col("attempt").alias("attempts"),
            pl.col("message").alias("error"),
        )
    )
    finished = events.filter(pl.col("kind") == "run_finished")
    status_ = finished["message"][-1] if len(finished) else "running"
    data = {"run_id": run_id, "status": status_, "units": units.to_arrow().cast(RESULT_SCHEMA)}
    return RunResult(data, lake)


def stop(lake: str | Lake, *, storage_options: Mapping[str, str] | None = None) -> bool:
    """Stop the lake's controllers: one in this process (executor="local") and the actor in the
    connected Ray. True if one was running."""
    import ray

    where = lake if isinstance(lake, Lake) else Lake(lake, storage_options or {})
    stopped = _LocalClient.close(where)
    if not ray.is_initialized():
        return stopped
    try:
        actor = ray.get_actor(controller_name(where), namespace=NAMESPACE)
    except ValueError:
        return stopped
    ray.kill(actor, no_restart=True)
    return True


# -- status ----------------------------------------------------------------------------------
_HELD = {"unit_failed": "failed", "unit_check_failed": "check_failed", "unit_blocked": "blocked"}


def status(
    target: Pipeline | Iterable[AssetDef],
    *,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Per asset, each partition counted once: published (fresh), stale, failed, check_failed
    (a blocking check failed), blocked (held behind a failed check), missing; with the table
    version and the last publish time. Reads the tables and the event log only."""
    pipeline = _as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    states = {
        n: TableState.load(where, where.table_url(n), column=pipeline[n].partitions.column)
        for n in pipeline.assets
    }
    snapshots = {
        n: snapshot(s, pipeline[n].partitions, [e.up for e in pipeline.upstream(n)])
        for n, s in states.items()
    }
    flags = partition_status(pipeline, snapshots)
    held = _held_partitions(where)
    rows = []
    for name, codes in flags.items():
        parts = pipeline[name].partitions
        category = np.where(
            codes == FRESH, "published", np.where(codes == STALE, "stale", "missing")
        ).astype(object)
        for kind, keys in held.get(name, {}).items():
            index = parts.indices(keys) if parts.is_partitioned else np.zeros(len(keys), np.int64)
            index = index[index >= 0]
            if kind == "check_failed":
                category[index] = kind  # held even if its data was published (a table check)
            else:
                category[index[codes[index] != FRESH]] = kind
        published = [info.timestamp_ms for info in states[name].published.values()]
        counts = {
            k: int((category == k).sum())
            for k in ("published", "stale", "failed", "check_failed", "blocked", "missing")
        }
        rows.append({
            "asset": name, "partitions": len(codes), **counts,
            "version": states[name].version if states[name].exists else None,
            "last_publish": datetime.fromtimestamp(max(published) / 1000, UTC) if published else None,
        })  # fmt: skip
    counts_schema = dict.fromkeys(
        ("partitions", "published", "stale", "failed", "check_failed", "blocked", "missing"),
        pl.Int64,
    )
    return pl.DataFrame(
        rows,
        schema={
            "asset": pl.String,
            **counts_schema,
            "version": pl.Int64,
            "last_publish": pl.Datetime("us", "UTC"),
        },
    )


def _held_partitions(lake: Lake) -> dict[str, dict[str, list[str]]]:
    """asset -> {failed|check_failed|blocked: partitions} whose latest unit outcome is that."""
    events = read_events(lake, kinds=["unit_published", *_HELD])
    if events.is_empty():
        return {}
    last = (
        events.group_by("asset", "partition", maintain_order=True)
        .last()
        .filter(pl.col("kind") != "unit_published")
    )
    out: dict[str, dict[str, list[str]]] = {}
    for asset, partition, kind in last.select("asset", "partition", "kind").iter_rows():
        out.setdefault(asset, {}).setdefault(_HELD[kind], []).append(partition or "")
    return out


def check_results(
    target: Pipeline | Iterable[AssetDef],
    *,
    asset: str | None = None,
    failed: bool = False,
    history: bool = False,
    lake: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Check outcomes per unit from the event log: the latest result of each check on each
    partition (every result with `history`), only the ones that did not pass with `failed`.
    Units whose output was quarantined show where the files went.

    >>> lf.check_results(pipeline, asset="raw_flights", failed=True)
    """
    pipeline = _as_pipeline(target, lake, storage_options)
    where = Lake(pipeline.lake, pipeline.storage_options)
    events = read_events(where, kinds=["check_result", "unit_check_failed"], asset=asset)
    if asset is not None:
        pipeline[asset]  # an unknown asset is an error, not an empty table
    results = _check_frame(events)
    if not history:
        results = results.group_by("asset", "partition", "check", maintain_order=True).last()
    if failed:
        results = results.filter(pl.col("status") != "passed")
    return results.sort("ts")


def _check_frame(events: pl.DataFrame) -> pl.DataFrame:
    """check_result events as rows, with the quarantine folder of units whose gate failed."""
    fields = {
        "check": pl.String, "severity": pl.String, "status": pl.String, "failing": pl.Int64,
        "scope": pl.String, "quarantine": pl.String,
    }  # fmt: skip
    decoded = pl.col("detail").str.json_decode(dtype=pl.Struct(fields)).alias("d")
    frame = events.with_columns(decoded).unnest("d")
    columns = [
        "ts",
        "run_id",
        "asset",
        "partition",
        "version",
        "check",
        "scope",
        "severity",
        "status",
        "failing",
        "rows",
        "message",
    ]
    results = frame.filter(pl.col("kind") == "check_result").select(columns)
    quarantined = frame.filter(pl.col("kind") == "unit_check_failed").select(
        "run_id", "asset", "partition", "quarantine"
    )
    return results.join(
        quarantined, on=["run_id", "asset", "partition"], how="left", nulls_equal=True
    )
