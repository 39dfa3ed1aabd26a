"""What the CLI, a notebook and the web endpoint call: materialize, backfill, status, connect.

>>> import lakeflow as lf
>>> result = lf.materialize(pipeline, select="delays+", partitions="2013-01-01..2013-01-31")
>>> result            # a table of units in a notebook
>>> lf.status(pipeline)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from .assets import AssetDef
from .client import connect, controller_client, stop
from .controller import ControllerOptions
from .graph import Pipeline
from .lake import Lake
from .planner import Request
from .results import RunResult, events_result
from .status import as_pipeline, check_results, status

__all__ = ["RunResult", "check_results", "connect", "materialize", "status", "stop"]


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
    pipeline = as_pipeline(target, lake, storage_options)
    terms = (
        ("*",)
        if select is None
        else (tuple(select.split(",")) if isinstance(select, str) else tuple(select))
    )
    pipeline.select(list(terms))  # a bad selection fails here, before any controller starts
    request = Request(select=terms, partitions=_spec(partitions), force=force, order=order)
    client = controller_client(
        Lake(pipeline.lake, pipeline.storage_options), executor, options, address
    )
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
