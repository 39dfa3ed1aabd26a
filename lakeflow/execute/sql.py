"""A SQL asset's unit in the worker: each upstream a DuckDB view over its pinned Parquet files.

The controller pins every input the same way for SQL as for Python (`InputSpec`: the files of
the mapped partitions at the planned version). Here each becomes a view named after the upstream
asset: a pyarrow dataset per partition, scanned by DuckDB through Arrow's C interface (columns
and row groups it does not need are never read, nothing passes through Python objects), with
the partition column added as a constant, as a Python asset's LazyFrame has it. Inputs that span
most of a table are scanned through deltalake's dataset at the pinned version instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from lakeflow.define.assets import AssetDef
from lakeflow.define.partitions import Partition
from lakeflow.define.sql import connect, quote
from lakeflow.lake import Lake

__all__ = ["run_sql_unit"]


def run_sql_unit(
    lake: Lake, definition: AssetDef, inputs: Sequence[Any], partition: Partition
) -> pa.Table:
    """Run the asset's SQL for `partition` over `inputs` (`InputSpec`s); an Arrow table back."""
    con = connect(threads=definition.resources.num_cpus, memory=definition.resources.memory)
    try:
        for spec in inputs:
            _register(con, lake, spec)
        return definition.sql.run(con, partition)
    finally:
        con.close()


def _register(con: Any, lake: Lake, spec: Any) -> None:
    """The view `spec.name`: the upstream's mapped partitions, partition column included."""
    view = quote(spec.name)
    if spec.whole_table:
        from deltalake import DeltaTable

        table = DeltaTable(
            spec.table_url, version=spec.version, storage_options=lake.delta_options()
        )
        con.register(f"__lf_{spec.name}", table.to_pyarrow_dataset())
        where = ""
        if spec.keys is not None and spec.column:
            keys = ", ".join(_literal(k) for k in spec.keys) or "NULL"
            where = f" WHERE {quote(spec.column)} IN ({keys})"
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM {quote(f'__lf_{spec.name}')}{where}")
        return
    schema = spec.schema
    if schema is not None and spec.column and spec.column in schema.names:
        schema = schema.remove(schema.get_field_index(spec.column))
    by_key: dict[str, list[str]] = {}
    for key, path in spec.files:
        by_key.setdefault(key, []).append(lake.path(lake.uri(spec.table_url, path)))
    if not by_key:  # nothing published in the mapped partitions: an empty view of the right shape
        empty = (schema or pa.schema([])).empty_table()
        if spec.column:
            empty = empty.append_column(
                pa.field(spec.column, pa.string()), pa.array([], pa.string())
            )
        con.register(spec.name, empty)
        return
    selects = []
    filesystem = lake.filesystem()
    for number, (key, paths) in enumerate(by_key.items()):
        # every file read with the table's schema at the pinned version: files written before a
        # schema-merging commit get its new columns as nulls
        dataset = ds.dataset(paths, schema=schema, format="parquet", filesystem=filesystem)
        name = f"__lf_{spec.name}_{number}"
        con.register(name, dataset)
        constant = f", {_literal(key)} AS {quote(spec.column)}" if spec.column else ""
        selects.append(f"SELECT *{constant} FROM {quote(name)}")
    con.execute(f"CREATE VIEW {view} AS " + " UNION ALL BY NAME ".join(selects))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
