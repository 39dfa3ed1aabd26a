"""A SQL asset's unit in the worker: each upstream a DuckDB view over its pinned Parquet files.

The controller pins every input the same way for SQL as for Python (`InputSpec`: the files of
the mapped partitions at the planned version). Here each becomes one pyarrow dataset registered
under the upstream asset's name and scanned by DuckDB through Arrow's C interface: columns and
row groups it does not need are never read, nothing passes through Python objects, and a filter
on the partition column skips the other partitions' files. Each file carries its partition key
as an expression of the dataset, so the partition column is there as a Python asset's LazyFrame
has it (a string). Inputs that span most of a table are scanned through deltalake's dataset at
the pinned version instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from lakeflow.define.assets import AssetDef
from lakeflow.define.partitions import Partition
from lakeflow.define.sql import connect
from lakeflow.lake import Lake

__all__ = ["run_sql_unit"]


def run_sql_unit(
    lake: Lake, definition: AssetDef, inputs: Sequence[Any], partition: Partition
) -> pa.Table:
    """Run the asset's SQL for `partition` over `inputs` (`InputSpec`s); an Arrow table back."""
    con = connect(threads=definition.resources.num_cpus, memory=definition.resources.memory)
    try:
        for spec in inputs:
            con.register(definition.sql.view(spec.name), _dataset(lake, spec))
        return definition.sql.run(con, partition)
    finally:
        con.close()


def _dataset(lake: Lake, spec: Any) -> ds.Dataset:
    """The upstream's mapped partitions as one dataset, partition column included."""
    if spec.whole_table:
        from deltalake import DeltaTable

        table = DeltaTable(
            spec.table_url, version=spec.version, storage_options=lake.delta_options()
        )
        dataset = table.to_pyarrow_dataset()
        if spec.keys is not None and spec.column:
            dataset = dataset.filter(pc.field(spec.column).isin(list(spec.keys)))
        return dataset
    # every file read with the table's schema at the pinned version: files written before a
    # schema-merging commit get its new columns as nulls
    schema = spec.schema if spec.schema is not None else pa.schema([])
    if spec.column:
        if spec.column in schema.names:
            schema = schema.remove(schema.get_field_index(spec.column))
        schema = schema.append(pa.field(spec.column, pa.string()))
    return ds.FileSystemDataset.from_paths(
        [lake.path(lake.uri(spec.table_url, path)) for _, path in spec.files],
        schema=schema,
        format=ds.ParquetFileFormat(),
        filesystem=lake.filesystem(),
        partitions=[
            pc.field(spec.column) == key if spec.column else pc.scalar(True)
            for key, _ in spec.files
        ],
    )
