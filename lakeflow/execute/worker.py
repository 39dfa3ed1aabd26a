"""The body of a remote task: read inputs, compute, stage, and report a small record.

A task carries one or more units of one asset. For each it reads the mapped upstream partitions
straight from the Parquet files of the pinned table versions (the controller knows them; opening
each table again would cost more than a small unit's data work), calls the asset function inside
the user-code boundary, writes the output uncommitted into the table's directory, and returns a
`UnitRecord` of kilobytes: staged files with their statistics, rows, bytes, timings, or the error.
Data never goes back through Ray.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakeflow.define.assets import Context
from lakeflow.define.checks import CheckEnv, CheckResult, run_checks
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import Partition
from lakeflow.errors import (
    ErrorInfo,
    LakeError,
    LakeflowError,
    SchemaError,
    UserCodeError,
    user_code_boundary,
)
from lakeflow.execute.capture import capture
from lakeflow.execute.sql import run_sql_unit
from lakeflow.lake import Lake
from lakeflow.lake.staging import (
    StagedFile,
    check_schema,
    normalize_output,
    polars_to_arrow_schema,
    quarantine_files,
    schema_id,
    stage_output,
)

__all__ = ["WHOLE_TABLE_FILES", "InputSpec", "UnitRecord", "UnitSpec", "execute_units"]

WHOLE_TABLE_FILES = 512  # reads of more files than this are scanned through deltalake


@dataclass(frozen=True, slots=True)
class InputSpec:
    """Where one upstream's mapped partitions are, pinned at `version`.

    `files` lists (partition key, path relative to the table) to read directly; with `whole_table`
    the worker scans the table at `version` through deltalake instead (tables whose files cannot
    be read on their own, or inputs that span most of a table).
    """

    name: str
    table_url: str
    column: str | None
    version: int
    files: tuple[tuple[str, str], ...] = ()
    keys: tuple[str, ...] | None = None  # whole_table: the partitions to keep (None: all)
    schema: pa.Schema | None = None
    whole_table: bool = False


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """One unit to compute: the asset, the partition, the try, the inputs and the table schema."""

    asset: str
    index: int
    key: str
    attempt: int
    inputs: tuple[InputSpec, ...]
    table_schema: pa.Schema | None
    partition: Any = None  # lakeflow.partitions.Partition; None: derived from the index


@dataclass(frozen=True)
class UnitRecord:
    """What a task reports for one unit. Kilobytes, whatever the data size. The output's schema
    travels only for a table that does not exist yet (it creates it); otherwise a fingerprint."""

    asset: str
    index: int
    key: str
    attempt: int
    files: tuple[StagedFile, ...] = ()
    schema: pa.Schema | None = None
    schema_id: str = ""
    rows: int = 0
    bytes: int = 0
    started: float = 0.0
    seconds: float = 0.0
    error: ErrorInfo | None = None
    retryable: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    checks: tuple[CheckResult, ...] = ()
    quarantine: str | None = None  # where the staged files went when a blocking check failed
    logs: str = ""  # its captured stdout, stderr and logging output: bounded, secrets redacted

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_wire(self) -> tuple:
        """A plain tuple: pickles several times faster than the dataclass (hot with tiny units)."""
        return (
            self.index, self.key, self.attempt, tuple(tuple(f) for f in self.files), self.schema,
            self.schema_id, self.rows, self.bytes, self.started, self.seconds, self.error,
            self.retryable, self.timings, self.checks, self.quarantine, self.logs,
        )  # fmt: skip

    @classmethod
    def from_wire(cls, asset: str, wire: tuple) -> UnitRecord:
        index, key, attempt, files, *rest = wire
        return cls(asset, index, key, attempt, tuple(StagedFile(*f) for f in files), *rest)


@dataclass(frozen=True, slots=True)
class PinnedInput:
    """What both readers of an input start from, polars for a Python asset and DuckDB for a SQL
    one, so that they read the same rows and types."""

    files: dict[str, list[str]]  # partition key -> the URIs of its Parquet files
    # the table's schema at the pinned version without the partition column: files written
    # before a schema-merging commit are read with its new columns as nulls (None: as they are)
    schema: pa.Schema | None
    column: str | None  # added to each file's rows as its key, a string


def pin_input(lake: Lake, spec: InputSpec) -> PinnedInput:
    """The input's files at its pinned version by partition key, and the schema to read them
    with. With `whole_table` the files are listed from the table's log at that version (the
    controller did not send them) and kept to the mapped keys. A storage failure on the way is
    the lake's `LakeError`."""
    try:
        files = _logged_files(lake, spec) if spec.whole_table else spec.files
    except (OSError, DeltaError) as error:
        raise lake.unreachable(error) from error
    by_key: dict[str, list[str]] = {}
    for key, path in files:
        by_key.setdefault(key, []).append(lake.uri(spec.table_url, path))
    schema = spec.schema
    if schema is not None and spec.column in schema.names:
        schema = schema.remove(schema.get_field_index(spec.column))
    return PinnedInput(by_key, schema, spec.column)


def _logged_files(lake: Lake, spec: InputSpec) -> list[tuple[str, str]]:
    """(partition key, relative path) of the table's files at `spec.version`, of `spec.keys`."""
    table = DeltaTable(spec.table_url, version=spec.version, storage_options=lake.delta_options())
    # the Arrow C stream: `pa.table(...)` of deltalake's arro3 table would import pandas
    actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
    paths = actions.column("path").to_pylist()
    if not spec.column:
        return [("", path) for path in paths]
    keys = actions.column(f"partition.{spec.column}").cast(pa.string()).to_pylist()
    wanted = set(spec.keys) if spec.keys is not None else None
    return [(k, p) for k, p in zip(keys, paths, strict=True) if wanted is None or k in wanted]


def read_input(lake: Lake, spec: InputSpec) -> pl.LazyFrame:
    """The input as a LazyFrame, partition column included."""
    return scan_input(lake, pin_input(lake, spec))


def scan_input(lake: Lake, pinned: PinnedInput) -> pl.LazyFrame:
    """A pinned input as a LazyFrame: each key's files, with the key as the partition column."""
    schema = (
        pl.from_arrow(pa.Table.from_batches([], schema=pinned.schema)).schema  # type: ignore[union-attr]
        if pinned.schema is not None
        else None
    )
    if not pinned.files:
        frame = pl.DataFrame(schema=schema)
        if pinned.column:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(pinned.column))
        return frame.lazy()
    frames = []
    for key, uris in pinned.files.items():
        frame = pl.scan_parquet(
            uris,
            storage_options=lake.delta_options(),
            schema=schema,
            missing_columns="insert" if schema is not None else "raise",
        )
        if pinned.column:
            frame = frame.with_columns(pl.lit(key, dtype=pl.String).alias(pinned.column))
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")


def input_dataset(lake: Lake, pinned: PinnedInput) -> ds.Dataset:
    """A pinned input as one pyarrow dataset for DuckDB to scan: each file's key is a constant
    of its fragment, so that a filter on the partition column skips the other keys' files."""
    schema = pinned.schema if pinned.schema is not None else pa.schema([])
    if pinned.column:
        schema = schema.append(pa.field(pinned.column, pa.string()))
    paths, keys = [], []
    for key, uris in pinned.files.items():
        paths += [lake.path(uri) for uri in uris]
        keys += [pc.field(pinned.column) == key if pinned.column else pc.scalar(True)] * len(uris)
    return ds.FileSystemDataset.from_paths(
        paths,
        schema=schema,
        format=ds.ParquetFileFormat(),
        filesystem=lake.filesystem(),
        partitions=keys,
    )


def _retryable(error: BaseException, pipeline: Pipeline, asset: str) -> bool:
    if isinstance(error, UserCodeError):
        cause = error.__cause__ or error
        return pipeline.assets[asset].retry.retries(cause)
    # a schema mismatch repeats with the same function and data; lake I/O and the unexpected may pass
    return not isinstance(error, SchemaError)


def _defined_at(function: Any) -> str:
    """Where a user's function is defined, as a traceback frame line (for errors in its output)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None:
        return ""
    return f'File "{code.co_filename}", line {code.co_firstlineno}, in {code.co_name}'


def run_unit(
    lake: Lake, run_id: str, pipeline: Pipeline, unit: UnitSpec, tag: str, *, echo: bool = False
) -> UnitRecord:
    """Compute, stage and audit one unit, capturing what it prints and logs (`UnitRecord.logs`;
    `echo`: to the process's stdout/stderr too); never raises for the unit's own failures."""
    with capture(echo=echo) as tail:
        record = _run_unit(lake, run_id, pipeline, unit, tag)
    return replace(record, logs=tail.text(lake.secret_values()))


def _run_unit(lake: Lake, run_id: str, pipeline: Pipeline, unit: UnitSpec, tag: str) -> UnitRecord:
    started = time.time()
    clock = time.perf_counter()
    definition = pipeline.assets[unit.asset]
    table_url = lake.table_url(unit.asset)
    column = definition.partitions.column
    if unit.partition is None:
        unit = replace(unit, partition=definition.partitions.partition(unit.index))
    where = f"asset {unit.asset}" + (f" partition {unit.key}" if unit.key else "")
    timings: dict[str, float] = {}
    try:
        # the inputs are opened here, outside the user's code: their storage failing is the lake's
        pinned = {spec.name: pin_input(lake, spec) for spec in unit.inputs}
        # DuckDB scans a SQL asset's pinned files itself: its frames serve only its unit checks
        sql = definition.sql is not None
        frames = (
            {name: scan_input(lake, files) for name, files in pinned.items()}
            if not sql or definition.unit_checks
            else {}
        )
        datasets = (
            {name: input_dataset(lake, files) for name, files in pinned.items()} if sql else {}
        )
        kwargs: dict[str, Any] = {} if sql else {n: frames[n] for n in definition.data_inputs}
        if definition.context_param:
            kwargs[definition.context_param] = Context(
                asset=unit.asset,
                partition=unit.partition,
                run_id=run_id,
                attempt=unit.attempt,
                input_versions={spec.name: spec.version for spec in unit.inputs},
                log=logging.getLogger(f"lakeflow.asset.{unit.asset}"),
            )
        timings["read"] = time.perf_counter() - clock
        with user_code_boundary(where):
            if sql:
                output = run_sql_unit(definition, datasets, unit.partition)
            else:
                output = definition.fn(**kwargs)
            frame = normalize_output(output, where=where, column=column, key=unit.key)
            schema = polars_to_arrow_schema(frame.collect_schema())
        order = check_schema(schema, unit.table_schema, where=where, column=column)
        timings["compute"] = time.perf_counter() - clock - timings["read"]
        with user_code_boundary(where):  # a lazy output runs here: its errors are the user's
            staged = stage_output(
                frame,
                lake=lake,
                table_url=table_url,
                column=column,
                key=unit.key,
                tag=tag,
                order=order,
                compression=definition.compression,
            )
        timings["stage"] = time.perf_counter() - clock - timings["read"] - timings["compute"]
        results, quarantine = audit(lake, run_id, definition, unit, staged, frames)
        timings["checks"] = sum(r.seconds for r in results)
    except (LakeflowError, OSError) as error:
        wrapped = error if isinstance(error, LakeflowError) else lake.unreachable(error)
        return UnitRecord(
            unit.asset, unit.index, unit.key, unit.attempt,
            started=started, seconds=time.perf_counter() - clock,
            error=ErrorInfo.from_exception(wrapped, site=_defined_at(definition.fn)),
            retryable=_retryable(wrapped, pipeline, unit.asset),
        )  # fmt: skip
    return UnitRecord(
        unit.asset, unit.index, unit.key, unit.attempt,
        files=() if quarantine else (staged,), schema=schema if unit.table_schema is None else None,
        schema_id=schema_id(schema, column), rows=staged.rows, bytes=staged.size,
        started=started, seconds=time.perf_counter() - clock, timings=timings,
        checks=results, quarantine=quarantine,
    )  # fmt: skip


def audit(
    lake: Lake,
    run_id: str,
    definition: Any,
    unit: UnitSpec,
    staged: StagedFile,
    inputs: dict[str, pl.LazyFrame],
) -> tuple[tuple[CheckResult, ...], str | None]:
    """Run the unit checks on the staged file, as a reader will see it (partition column included).
    A blocking failure moves the file to quarantine; returns the results and that folder."""
    if not definition.unit_checks:
        return (), None
    table_url = lake.table_url(unit.asset)
    column = definition.partitions.column
    frame = pl.scan_parquet(lake.uri(table_url, staged.path), storage_options=lake.delta_options())
    if column:
        frame = frame.with_columns(pl.lit(unit.key, dtype=pl.String).alias(column))
    results = tuple(
        run_checks(
            definition.unit_checks, frame, CheckEnv(unit.asset, unit.partition, inputs=inputs)
        )
    )
    if not any(r.blocking for r in results):
        return results, None
    return results, quarantine_files(lake, table_url, [staged.path], unit.asset, unit.key, run_id)


def execute_units(
    lake: Lake, run_id: str, pipeline: Pipeline, units: Sequence[UnitSpec], *, echo: bool = False
) -> list[UnitRecord]:
    """Run a task's units one after another; one failing unit does not stop the others."""
    return [
        run_unit(lake, run_id, pipeline, unit, f"{run_id}-{unit.attempt}", echo=echo)
        for unit in units
    ]


def table_audit(lake: Lake, pipeline: Pipeline, asset: str, version: int) -> list[CheckResult]:
    """Run the asset's table-scope checks on its published table at `version`."""
    definition = pipeline.assets[asset]
    options = lake.delta_options()
    frame = pl.scan_delta(lake.table_url(asset), version=version, storage_options=options)
    needs = {n for check in definition.table_checks for n in getattr(check, "needs", ())}
    others = {n: pl.scan_delta(lake.table_url(n), storage_options=options) for n in needs}
    env = CheckEnv(asset, Partition(""), inputs=others)
    return run_checks(definition.table_checks, frame, env)


_PIPELINES: OrderedDict[str, Pipeline] = OrderedDict()


def resolve_pipeline(key: str, box: list[Any]) -> Pipeline:
    """The run's pipeline, fetched from the object store once per worker process."""
    pipeline = _PIPELINES.get(key)
    if pipeline is None:
        import ray

        pipeline = ray.get(box[0])
        _PIPELINES[key] = pipeline
        while len(_PIPELINES) > 8:
            _PIPELINES.popitem(last=False)
    return pipeline


def ray_task(
    lake: Lake, run_id: str, pipeline_key: str, box: list[Any], asset: str, table_schema: pa.Schema | None,
    units: Sequence[tuple[int, int, tuple[InputSpec, ...]]],
) -> list[tuple]:  # fmt: skip
    """The remote task lakeflow submits (wrapped with ray.remote by the executor). Units arrive as
    (partition index, attempt, inputs) and leave as `UnitRecord.to_wire()` tuples."""
    try:
        pipeline = resolve_pipeline(pipeline_key, box)
    except Exception as error:  # the pipeline could not be unpickled here: every unit fails
        info = ErrorInfo.from_exception(
            LakeError(f"cannot load the pipeline in the worker: {error}")
        )
        return [UnitRecord(asset, i, "", attempt, error=info).to_wire() for i, attempt, _ in units]
    partitions = pipeline.assets[asset].partitions
    specs = [
        UnitSpec(asset, i, partitions.key(i), attempt, inputs, table_schema)
        for i, attempt, inputs in units
    ]
    records = execute_units(lake, run_id, pipeline, specs, echo=True)  # to the worker's log too
    return [record.to_wire() for record in records]


def ray_table_task(
    lake: Lake, pipeline_key: str, box: list[Any], asset: str, version: int
) -> list[CheckResult]:
    """The remote task that audits a published table version."""
    return table_audit(lake, resolve_pipeline(pipeline_key, box), asset, version)
