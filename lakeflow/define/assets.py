"""Asset definitions: `@asset` turns a function into a Delta table with deps, partitions and policies.

Parameters named after other assets are inputs: the function receives them as polars LazyFrames
of exactly the mapped upstream partitions. A parameter named `ctx` or `context` receives the
`Context`. The return value (polars DataFrame/LazyFrame or Arrow table) becomes the partition.
"""

from __future__ import annotations

import inspect
import keyword
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lakeflow.define.code_version import code_version as default_code_version
from lakeflow.define.mappings import AllPartitions, PartitionMapping
from lakeflow.define.partitions import Partition, Partitions, Unpartitioned
from lakeflow.define.tables import Compaction, Retention
from lakeflow.errors import DefinitionError, PartitionError

__all__ = [
    "DEFAULT_RETRY",
    "AssetDef",
    "Context",
    "Resources",
    "RetryPolicy",
    "asset",
    "define_asset",
    "source",
]


def _is_name(name: str) -> bool:
    """A Python identifier (Unicode ones too: `données`) that is not a keyword."""
    return name.isidentifier() and not keyword.iskeyword(name)


CONTEXT_PARAMS = ("ctx", "context")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a unit is tried and how long to wait between tries.

    `attempts` counts every try (1 = no retry). Infrastructure failures (a worker or node lost,
    the object store, the lake's transient errors) are always retryable; an exception raised by
    the asset function (or its timeout, a `TimeoutError`) is retried only if it is an instance of
    `retry_on` (every exception when `retry_on` is None, nothing when it is `()`).

    An asset declared without `retry=` gets `DEFAULT_RETRY`: infrastructure failures are tried
    up to 3 times, its own errors once (a `KeyError` fails the same way on every try).

    >>> RetryPolicy(attempts=3, backoff=0.5, retry_on=(TimeoutError,))
    """

    attempts: int = 3
    backoff: float = 1.0
    backoff_factor: float = 2.0
    max_backoff: float = 60.0
    retry_on: tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise DefinitionError(f"retry attempts must be at least 1, got {self.attempts}")
        if self.backoff < 0 or self.backoff_factor < 1:
            raise DefinitionError("retry backoff must be >= 0 and backoff_factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try number `attempt + 1` (attempts count from 1)."""
        return min(self.max_backoff, self.backoff * self.backoff_factor ** max(0, attempt - 1))

    def retries(self, error: BaseException) -> bool:
        """Whether this policy retries a unit whose function raised `error`."""
        return self.retry_on is None or isinstance(error, self.retry_on)


DEFAULT_RETRY = RetryPolicy(attempts=3, retry_on=())


@dataclass(frozen=True, slots=True)
class Resources:
    """What one unit of the asset needs from the Ray cluster.

    >>> Resources(num_cpus=2, memory=4 * 2**30, custom={"io": 1})
    """

    num_cpus: float = 1.0
    memory: int | None = None
    custom: Mapping[str, float] = field(default_factory=dict)

    def ray_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.memory:
            options["memory"] = int(self.memory)
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@dataclass(slots=True)
class Context:
    """What an asset function may ask about the unit it computes.

    `partition.key` is the key (`""` for an unpartitioned asset); time-window partitions also
    carry `partition.start` and `partition.end` (UTC, end exclusive).
    """

    asset: str
    partition: Partition
    run_id: str
    attempt: int
    input_versions: Mapping[str, int]
    log: logging.Logger


@dataclass(frozen=True)
class AssetDef:
    """An asset: a named Delta table, the function computing it and its policies.

    Built by `@asset`; calling it calls the function directly (handy in tests and notebooks).
    """

    name: str
    fn: Callable[..., Any]
    partitions: Partitions
    inputs: Mapping[str, PartitionMapping | None]  # upstream name -> mapping (None: the default)
    data_inputs: tuple[str, ...]  # upstream names passed to the function as LazyFrames
    context_param: str | None
    code_version: str
    retry: RetryPolicy
    resources: Resources
    checks: tuple[Any, ...] = ()
    description: str = ""
    group: str = "default"
    on_fail: Literal["hold", "rollback"] = "hold"
    compression: str = "snappy"
    automation: Any = None  # an `OnUpstreamCommit` policy: run when upstream tables change
    timeout: float | None = None  # seconds one unit may run before it is cancelled
    optimize: Compaction | None = None  # compaction after publishes (None: the pipeline's)
    retention: Retention | None = None  # the table's log and file retention (None: the pipeline's)
    source: bool = False  # a table someone else writes; lakeflow watches it, never writes it
    url: str | None = None  # where the table lives when not at <lake>/<name> (sources)
    sql: Any = None  # a `lakeflow.define.sql.SqlModel`: DuckDB computes the unit, not `fn`

    @property
    def unit_checks(self) -> tuple[Any, ...]:
        """Checks run on each unit's staged output, before publish."""
        return tuple(c for c in self.checks if getattr(c, "scope", "unit") == "unit")

    @property
    def table_checks(self) -> tuple[Any, ...]:
        """Checks run on the version a commit would make, before it is made."""
        return tuple(c for c in self.checks if getattr(c, "scope", "unit") == "table")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.sql is not None:
            kwargs["partition"] = self._sql_partition(kwargs.get("partition"))
        return self.fn(*args, **kwargs)

    def _sql_partition(self, partition: Any) -> Any:
        """The partition a SQL asset called in a notebook renders for: a key becomes the
        partition a run's unit sees (a window's start and end included); an unpartitioned asset
        needs none; a partitioned one needs one, rather than render a placeholder."""
        if isinstance(partition, str):
            return self.partitions.partition(self.partitions.index(partition))
        if partition is None and isinstance(self.partitions, Unpartitioned):
            return self.partitions.partition(0)
        if partition is None:
            raise PartitionError(
                f"asset {self.name} is partitioned ({self.partitions.describe()})",
                hint="pass partition='<key>'",
            )
        return partition

    @property
    def deps(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def table_url(self, lake: Any) -> str:
        """Where this asset's Delta table lives in `lake`."""
        return self.url or lake.table_url(self.name)

    def __repr__(self) -> str:
        if self.source:
            return f"<source {self.name} ({self.partitions.describe()})>"
        deps = f", deps={list(self.inputs)}" if self.inputs else ""
        return f"<asset {self.name} ({self.partitions.describe()}){deps}>"


def asset(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    partitions: Partitions | None = None,
    deps: Iterable[str] = (),
    inputs: Mapping[str, PartitionMapping] | None = None,
    checks: Sequence[Any] = (),
    code_version: str | None = None,
    retry: RetryPolicy | int | None = None,
    resources: Resources | None = None,
    description: str | None = None,
    group: str = "default",
    on_fail: Literal["hold", "rollback"] = "hold",
    compression: Literal["snappy", "zstd", "lz4", "gzip", "uncompressed"] = "snappy",
    automation: Any = None,
    timeout: float | None = None,
    optimize: Compaction | None = None,
    retention: Retention | None = None,
) -> Any:
    """Declare an asset. Use bare (`@asset`) or with options (`@asset(partitions=daily)`).

    >>> @asset(partitions=DailyPartitions(start="2013-01-01"), inputs={"flights": lookback(7)})
    ... def weekly_delays(flights: pl.LazyFrame) -> pl.LazyFrame:
    ...     return flights.group_by("carrier").agg(pl.col("dep_delay").mean())

    - inputs: parameters named after upstream assets; `inputs=` sets their partition mappings.
    - deps: upstream assets that must be fresh first but are not passed to the function.
    - code_version: defaults to a hash of the function's source and of the helpers and constants
      it reaches in its module (see `lakeflow.code_version`).
    - retry: a `RetryPolicy`, or an int number of attempts (for any exception). Without it,
      only infrastructure failures are retried (up to 3 attempts), never the function's errors.
    - checks: rules on each unit's output, run before it is published (`lf.not_null(...)`,
      `lf.gx_suite(...)`, ...); an `error` check that fails keeps the unit unpublished and holds
      its consumers. Checks with scope="table" run on the version each commit would make,
      before it is made; a unit that makes one fail is never committed (lakeflow.table_audit).
    - on_fail: only for tables whose files cannot be read on their own (column mapping,
      deletion vectors), whose table checks run after the commit: "hold" keeps the consumers
      waiting, "rollback" also restores the version before the commit.
    - compression: of the Parquet files; snappy (the Delta convention: fast) by default, zstd for
      smaller files at more CPU.
    - timeout: seconds one unit may run; past it the unit's task is cancelled (on Ray its worker
      process is killed) and the attempt fails with a TimeoutError, retried only if the retry
      policy names it. Default: the pipeline's `timeout=`, else none.
    - automation: `lf.on_upstream_commit(...)` re-materializes the partitions an upstream commit
      changed while `lakeflow up` runs.
    - optimize: `lf.Compaction(min_files=16, zorder=[...])` compacts (or z-orders) the
      partitions a publish leaves with many small files. Default: the pipeline's, else none.
    - retention: `lf.Retention(checkpoint_interval=..., log=..., deleted_files=...)`, the
      table's Delta log and file retention. Default: the pipeline's, else Delta's.
    """

    options = dict(
        partitions=partitions, deps=deps, inputs=inputs, checks=checks, code_version=code_version,
        retry=retry, resources=resources, description=description, group=group, on_fail=on_fail,
        compression=compression, automation=automation, timeout=timeout, optimize=optimize,
        retention=retention,
    )  # fmt: skip

    def build(function: Callable[..., Any]) -> AssetDef:
        asset_name = name or function.__name__
        signature = inspect.signature(function)
        context_param = None
        data_inputs: list[str] = []
        for param in signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise DefinitionError(f"asset {asset_name}: *args/**kwargs are not supported")
            if param.name in CONTEXT_PARAMS:
                context_param = param.name
            elif param.default is param.empty:
                data_inputs.append(param.name)
        return define_asset(
            asset_name, function, data_inputs=data_inputs, context_param=context_param, **options
        )

    return build(fn) if fn is not None else build


def define_asset(
    name: str,
    fn: Callable[..., Any],
    *,
    data_inputs: Sequence[str] | None = None,
    context_param: str | None = None,
    sql: Any = None,
    partitions: Partitions | None = None,
    deps: Iterable[str] = (),
    inputs: Mapping[str, PartitionMapping] | None = None,
    checks: Sequence[Any] = (),
    code_version: str | None = None,
    retry: RetryPolicy | int | None = None,
    resources: Resources | None = None,
    description: str | None = None,
    group: str = "default",
    on_fail: Literal["hold", "rollback"] = "hold",
    compression: str = "snappy",
    automation: Any = None,
    timeout: float | None = None,
    optimize: Compaction | None = None,
    retention: Retention | None = None,
) -> AssetDef:
    """Check an asset's options and build its `AssetDef`: what `@asset` does once it has read the
    function's parameters, and what `lf.sql_asset` does with a `SqlModel` (whose refs are its
    data inputs, read by DuckDB rather than passed to a function)."""
    if not _is_name(name):
        raise DefinitionError(f"asset name {name!r} must be a Python identifier")
    if sql is not None:
        data_inputs = list(sql.refs)
    data_inputs = list(data_inputs or ())
    mappings: dict[str, PartitionMapping | None] = dict.fromkeys(data_inputs)
    for dep in deps:
        mappings.setdefault(dep, None)
    for item in checks:
        if not (
            hasattr(item, "name")
            and hasattr(item, "severity")
            and callable(getattr(item, "run", None))
        ):
            raise DefinitionError(
                f"asset {name}: {item!r} is not a check (it needs name, severity and run)"
            )
        for needed in getattr(item, "needs", ()):  # references(...) reads another asset
            mappings.setdefault(needed, AllPartitions())
    if compression not in ("snappy", "zstd", "lz4", "gzip", "uncompressed"):
        raise DefinitionError(f"asset {name}: unknown compression {compression!r}")
    if on_fail not in ("hold", "rollback"):
        raise DefinitionError(f"asset {name}: on_fail must be 'hold' or 'rollback'")
    reads = "a ref in its SQL" if sql is not None else "a parameter"
    for upstream, mapping in (inputs or {}).items():
        if upstream not in mappings:
            raise DefinitionError(
                f"asset {name}: inputs names {upstream!r}, which is neither {reads} nor in deps"
            )
        if not isinstance(mapping, PartitionMapping):
            raise DefinitionError(f"asset {name}: inputs[{upstream!r}] is not a partition mapping")
        mappings[upstream] = mapping
    policy = RetryPolicy(attempts=retry) if isinstance(retry, int) else (retry or DEFAULT_RETRY)
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise DefinitionError(
            f"asset {name}: timeout must be a positive number of seconds, got {timeout!r}"
        )
    if automation is not None and not hasattr(automation, "require"):
        raise DefinitionError(
            f"asset {name}: automation must be lf.on_upstream_commit(...), not {automation!r}"
        )
    if automation is not None and not mappings:
        raise DefinitionError(
            f"asset {name}: automation=on_upstream_commit needs upstream assets or sources"
        )
    for name_ in getattr(automation, "inputs", None) or ():
        if name_ not in mappings:
            raise DefinitionError(
                f"asset {name}: on_upstream_commit names {name_!r}, which it does not read"
            )
    check_table_policies(f"asset {name}", optimize, retention)
    if code_version is None:
        code_version = sql.code_version() if sql is not None else default_code_version(fn)
    if description is None:
        description = f"SQL: {sql.origin}" if sql is not None else inspect.getdoc(fn) or ""
    return AssetDef(
        name=name,
        fn=fn,
        partitions=partitions if partitions is not None else Unpartitioned(),
        inputs=mappings,
        data_inputs=tuple(data_inputs),
        context_param=context_param,
        code_version=code_version,
        retry=policy,
        resources=resources or Resources(),
        checks=tuple(checks),
        description=description,
        group=group,
        on_fail=on_fail,
        compression=compression,
        automation=automation,
        timeout=float(timeout) if timeout is not None else None,
        optimize=optimize,
        retention=retention,
        sql=sql,
    )


def check_table_policies(owner: str, optimize: Any, retention: Any) -> None:
    """Refuse an `optimize=` that is not a `Compaction` or a `retention=` that is not a
    `Retention` (`owner`: "asset x" or "pipeline")."""
    if optimize is not None and not isinstance(optimize, Compaction):
        raise DefinitionError(f"{owner}: optimize must be lf.Compaction(...), not {optimize!r}")
    if retention is not None and not isinstance(retention, Retention):
        raise DefinitionError(f"{owner}: retention must be lf.Retention(...), not {retention!r}")


def _written_elsewhere(*args: Any, **kwargs: Any) -> Any:
    raise DefinitionError("a source table is written by its own producer, never by lakeflow")


def source(
    name: str,
    *,
    partitions: Partitions | None = None,
    url: str | None = None,
    description: str = "",
) -> AssetDef:
    """Declare a Delta table that someone else writes (Spark, a notebook, another team's job).
    lakeflow never writes it; its commits trigger the assets that read it with
    `automation=lf.on_upstream_commit()`.

    >>> trips = lf.source("trips", partitions=lf.DailyPartitions(start="2024-01-01", column="day"))

    - partitions: how the producer partitions the table (the partition column and its keys).
    - url: where the table lives; default `<lake>/<name>`. It shares the lake's storage options.
    """
    if not _is_name(name):
        raise DefinitionError(f"source name {name!r} must be a Python identifier")
    return AssetDef(
        name=name,
        fn=_written_elsewhere,
        partitions=partitions if partitions is not None else Unpartitioned(),
        inputs={},
        data_inputs=(),
        context_param=None,
        code_version="source",
        retry=RetryPolicy(attempts=1),
        resources=Resources(),
        description=description,
        source=True,
        url=url.rstrip("/") if url else None,
    )
