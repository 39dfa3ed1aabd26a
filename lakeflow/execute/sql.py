"""A SQL asset's unit in the worker: each upstream a DuckDB view over its pinned Parquet files.

The controller pins every input the same way for SQL as for Python (`InputSpec`: the files of
the mapped partitions at the planned version), and the worker opens them the same way for both
(`worker.pin_input`). Here each becomes one pyarrow dataset registered under the upstream
asset's view and scanned by DuckDB through Arrow's C interface: columns and row groups it does
not need are never read, nothing passes through Python objects, and a filter on the partition
column skips the other partitions' files.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from lakeflow.define.assets import AssetDef
from lakeflow.define.partitions import Partition
from lakeflow.define.sql import Connection, connect

__all__ = ["interrupt", "run_sql_unit"]


def run_sql_unit(
    definition: AssetDef, datasets: Mapping[str, Any], partition: Partition
) -> pa.Table:
    """Run the asset's SQL for `partition` over `datasets` (one per upstream); an Arrow table."""
    with connect(threads=definition.resources.num_cpus, memory=definition.resources.memory) as con:
        for name, dataset in datasets.items():
            con.register(definition.sql.view(name), dataset)
        thread = threading.get_ident()
        _RUNNING[thread] = con
        try:
            return definition.sql.run(con, partition)
        finally:
            del _RUNNING[thread]


_RUNNING: dict[int, Connection] = {}  # thread -> the connection its unit's SQL runs on


def interrupt(thread: int | None) -> None:
    """Stop the SQL that `thread` runs, if it runs one: a unit past its timeout on the local
    executor, whose thread cannot be killed, would otherwise keep its query running (and its
    cores and memory) to the end."""
    con = _RUNNING.get(thread) if thread is not None else None
    if con is not None:
        con.interrupt()
