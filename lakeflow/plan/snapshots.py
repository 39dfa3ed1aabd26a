"""What the tables hold, read the one way the controller, `status` and dry runs all read it: each
asset's table where `AssetDef.table_url` puts it (a source's own URL included), keyed by its
partition column, with the files its sensor has registered as its partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions
from lakeflow.errors import SchemaError
from lakeflow.lake import Lake
from lakeflow.lake.log import TableState
from lakeflow.lake.registry import load_registry
from lakeflow.plan.planner import AssetSnapshot, snapshot

__all__ = ["check_column", "needed", "open_table", "read_snapshots"]


def needed(pipeline: Pipeline, selected: Iterable[str]) -> list[str]:
    """The selected assets and every table they read, in order, each once."""
    out: dict[str, None] = {}
    for name in selected:
        out[name] = None
        out.update(dict.fromkeys(e.up for e in pipeline.upstream(name)))
    return list(out)


def open_table(lake: Lake, pipeline: Pipeline, name: str) -> TableState:
    """The table of asset `name` as it is now (not there yet: an empty state with its column)."""
    column = pipeline[name].partitions.column
    state = TableState.load(lake, pipeline[name].table_url(lake), column=column)
    if not state.exists:
        state.column = column
    return check_column(state, pipeline, name)


def check_column(state: TableState, pipeline: Pipeline, name: str) -> TableState:
    column = pipeline[name].partitions.column
    if state.exists and state.column != column:
        raise SchemaError(
            f"table {name} is partitioned by {state.column!r} but the asset by {column!r}",
            hint="keep the partitioning, or drop the table to rebuild it",
        )
    return state


def read_snapshots(
    lake: Lake,
    pipeline: Pipeline,
    names: Iterable[str],
    *,
    states: Mapping[str, TableState] | None = None,
    table: Callable[[str], TableState] | None = None,
) -> dict[str, AssetSnapshot]:
    """The snapshots of `names` that planning and status work on. A file sensor's partitions are
    the files its registry holds; tables come from `states` (a controller's open tables), else
    `table(name)`, else are read now. I/O: call it off an event loop."""
    out: dict[str, AssetSnapshot] = {}
    for name in names:
        parts = pipeline[name].partitions
        if isinstance(parts, FilePartitions):  # the files its sensor has seen so far
            parts.load(load_registry(lake, name))
        if states is not None and name in states:
            state = states[name]
        else:
            state = table(name) if table is not None else open_table(lake, pipeline, name)
        out[name] = snapshot(state, parts, [e.up for e in pipeline.upstream(name)])
    return out
