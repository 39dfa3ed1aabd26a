"""What the tables hold, read the one way the controller, `status` and dry runs all read it: each
asset's table where `AssetDef.table_url` puts it (a source's own URL included), keyed by its
partition column, with the files its sensor has registered as its partitions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import STAMP_KEYS, FilePartitions, Partitions
from lakeflow.errors import SchemaError
from lakeflow.lake import Lake
from lakeflow.lake.log import TableState
from lakeflow.lake.registry import load_registry

__all__ = [
    "AssetSnapshot",
    "check_column",
    "needed",
    "open_table",
    "read_snapshots",
    "snapshot",
]


@dataclass(frozen=True)
class AssetSnapshot:
    """An asset table's state as arrays over its partition indices."""

    version: int
    present: np.ndarray  # bool: the partition holds data
    touched: np.ndarray  # int64: version of the last commit touching it, -1 never
    code: np.ndarray  # object: code version recorded at its last publish ("" if not ours)
    run: np.ndarray  # object: run id of its last publish ("" if not ours)
    # upstream -> int64 version recorded at publish, -1 absent; for a file sensor's asset also
    # the parts of the file's stamp the publish recorded (`STAMP_KEYS`)
    inputs: Mapping[str, np.ndarray]

    @classmethod
    def empty(cls, count: int) -> AssetSnapshot:
        return cls(
            -1,
            np.zeros(count, bool),
            np.full(count, -1, np.int64),
            np.full(count, "", object),
            np.full(count, "", object),
            {},
        )


def snapshot(state: TableState, partitions: Partitions, upstream: Sequence[str]) -> AssetSnapshot:
    """Arrays of `state` over `partitions`; keys outside the definition are left out."""
    count = len(partitions)
    if not state.exists:
        return AssetSnapshot.empty(count)
    snap = AssetSnapshot.empty(count)
    with state.lock:
        return _snapshot(state, partitions, upstream, snap)


def _snapshot(
    state: TableState, partitions: Partitions, upstream: Sequence[str], snap: AssetSnapshot
) -> AssetSnapshot:
    count = len(snap.present)
    keys = list(state.touched)
    index = partitions.indices(keys) if partitions.is_partitioned else np.zeros(len(keys), np.int64)
    ours = index >= 0
    where = index[ours]
    kept = [k for k, keep in zip(keys, ours.tolist(), strict=True) if keep]
    snap.touched[where] = np.fromiter((state.touched[k] for k in kept), np.int64, len(kept))
    snap.present[where] = np.fromiter((bool(state.files.get(k)) for k in kept), bool, len(kept))
    inputs = {name: np.full(count, -1, np.int64) for name in upstream}
    infos = [state.published.get(k) for k in kept]
    # publishes come in groups sharing one record: fill the arrays group by group
    groups: dict[int, tuple[Any, list[int]]] = {}
    for i, info in zip(where.tolist(), infos, strict=True):
        if info is not None:
            groups.setdefault(id(info), (info, []))[1].append(i)
    for info, members in groups.values():
        snap.code[members] = info.code_version
        snap.run[members] = info.run_id
        for name, version in info.inputs.items():
            if name in inputs:
                inputs[name][members] = version
    return AssetSnapshot(state.version, snap.present, snap.touched, snap.code, snap.run, inputs)


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
        upstream = [e.up for e in pipeline.upstream(name)]
        if isinstance(parts, FilePartitions):  # the files its sensor has seen so far
            parts.load(load_registry(lake, name))
            upstream += STAMP_KEYS
        if states is not None and name in states:
            state = states[name]
        else:
            state = table(name) if table is not None else open_table(lake, pipeline, name)
        out[name] = snapshot(state, parts, upstream)
    return out
