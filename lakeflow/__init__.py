"""lakeflow keeps a lake of Delta tables up to date on a Ray cluster.

>>> import lakeflow as lf
>>> daily = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")
>>> @lf.asset(partitions=daily)
... def flights(ctx: lf.Context) -> pl.DataFrame: ...
>>> pipeline = lf.Pipeline([flights], lake="./lake")
>>> pipeline.materialize(partitions="2013-01-01..2013-01-31")
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names are, for type checkers; at run time they load on first use
    from lakeflow.api import (
        Lineage,
        PlanPreview,
        RunHandle,
        RunResult,
        backfill,
        backfill_status,
        cancel,
        check_results,
        connect,
        file_status,
        lineage,
        materialize,
        resume,
        status,
        stop,
    )
    from lakeflow.control.options import ControllerOptions
    from lakeflow.define.assets import AssetDef, Context, Resources, RetryPolicy, asset, source
    from lakeflow.define.automation import (
        OnPublish,
        OnUpstreamCommit,
        Publish,
        Schedule,
        on_publish,
        on_upstream_commit,
        schedule,
    )
    from lakeflow.define.checks import Check, CheckEnv, CheckResult
    from lakeflow.define.dbt import dbt_project
    from lakeflow.define.definition import ResumeError, pipeline_factory
    from lakeflow.define.gx import gx_suite
    from lakeflow.define.mappings import (
        PartitionMapping,
        all_partitions,
        identity,
        lookback,
        previous,
        rollup,
    )
    from lakeflow.define.native_checks import (
        between,
        check,
        freshness,
        in_set,
        matches,
        not_null,
        references,
        row_count,
        schema,
        unique,
    )
    from lakeflow.define.partitions import (
        FilePartitions,
        Partition,
        Partitions,
        StaticPartitions,
        Unpartitioned,
    )
    from lakeflow.define.sql import sql_asset, sql_assets
    from lakeflow.define.tables import Compaction, Retention
    from lakeflow.define.time_windows import (
        DailyPartitions,
        HourlyPartitions,
        MonthlyPartitions,
        TimeWindowPartitions,
    )
    from lakeflow.errors import (
        DefinitionError,
        InfrastructureError,
        LakeError,
        LakeflowError,
        PartitionError,
        RayUnavailable,
        RequestError,
        RunError,
        SchemaError,
        SelectionError,
        UserCodeError,
    )
    from lakeflow.lake import Lake
    from lakeflow.lake.events import read_events
    from lakeflow.loading import load_pipeline
    from lakeflow.maintenance import optimize, vacuum
    from lakeflow.pipeline import Pipeline
    from lakeflow.secrets import EnvVar, SecretError
    from lakeflow.serve.service import Service, Subscription, down, subscribe, up

__version__ = "0.1.0"

__all__ = [
    "AssetDef",
    "Check",
    "CheckEnv",
    "CheckResult",
    "Compaction",
    "Context",
    "ControllerOptions",
    "DailyPartitions",
    "DefinitionError",
    "EnvVar",
    "FilePartitions",
    "HourlyPartitions",
    "InfrastructureError",
    "Lake",
    "LakeError",
    "LakeflowError",
    "Lineage",
    "MonthlyPartitions",
    "OnPublish",
    "OnUpstreamCommit",
    "Partition",
    "PartitionError",
    "PartitionMapping",
    "Partitions",
    "Pipeline",
    "PlanPreview",
    "Publish",
    "RayUnavailable",
    "RequestError",
    "Resources",
    "ResumeError",
    "Retention",
    "RetryPolicy",
    "RunError",
    "RunHandle",
    "RunResult",
    "Schedule",
    "SchemaError",
    "SecretError",
    "SelectionError",
    "Service",
    "StaticPartitions",
    "Subscription",
    "TimeWindowPartitions",
    "Unpartitioned",
    "UserCodeError",
    "all_partitions",
    "asset",
    "backfill",
    "backfill_status",
    "between",
    "cancel",
    "check",
    "check_results",
    "connect",
    "dbt_project",
    "down",
    "file_status",
    "freshness",
    "gx_suite",
    "identity",
    "in_set",
    "lineage",
    "load_pipeline",
    "lookback",
    "matches",
    "materialize",
    "not_null",
    "on_publish",
    "on_upstream_commit",
    "optimize",
    "pipeline_factory",
    "previous",
    "read_events",
    "references",
    "resume",
    "rollup",
    "row_count",
    "schedule",
    "schema",
    "source",
    "sql_asset",
    "sql_assets",
    "status",
    "stop",
    "subscribe",
    "unique",
    "up",
    "vacuum",
]

# where each public name lives: `import lakeflow` loads none of them, so the commands that only
# read the lake (and `import lakeflow` itself) skip the controller, the web service, Ray and GX;
# the first use of a name imports its module
_HOMES: dict[str, str] = {
    "Lineage": "lakeflow.api",
    "PlanPreview": "lakeflow.api",
    "RunHandle": "lakeflow.api",
    "RunResult": "lakeflow.api",
    "backfill": "lakeflow.api",
    "backfill_status": "lakeflow.api",
    "cancel": "lakeflow.api",
    "check_results": "lakeflow.api",
    "connect": "lakeflow.api",
    "file_status": "lakeflow.api",
    "lineage": "lakeflow.api",
    "materialize": "lakeflow.api",
    "resume": "lakeflow.api",
    "status": "lakeflow.api",
    "stop": "lakeflow.api",
    "ControllerOptions": "lakeflow.control.options",
    "AssetDef": "lakeflow.define.assets",
    "Context": "lakeflow.define.assets",
    "Resources": "lakeflow.define.assets",
    "RetryPolicy": "lakeflow.define.assets",
    "asset": "lakeflow.define.assets",
    "source": "lakeflow.define.assets",
    "OnPublish": "lakeflow.define.automation",
    "OnUpstreamCommit": "lakeflow.define.automation",
    "Publish": "lakeflow.define.automation",
    "Schedule": "lakeflow.define.automation",
    "on_publish": "lakeflow.define.automation",
    "on_upstream_commit": "lakeflow.define.automation",
    "schedule": "lakeflow.define.automation",
    "Check": "lakeflow.define.checks",
    "CheckEnv": "lakeflow.define.checks",
    "CheckResult": "lakeflow.define.checks",
    "dbt_project": "lakeflow.define.dbt",
    "ResumeError": "lakeflow.define.definition",
    "pipeline_factory": "lakeflow.define.definition",
    "gx_suite": "lakeflow.define.gx",
    "PartitionMapping": "lakeflow.define.mappings",
    "all_partitions": "lakeflow.define.mappings",
    "identity": "lakeflow.define.mappings",
    "lookback": "lakeflow.define.mappings",
    "previous": "lakeflow.define.mappings",
    "rollup": "lakeflow.define.mappings",
    "between": "lakeflow.define.native_checks",
    "check": "lakeflow.define.native_checks",
    "freshness": "lakeflow.define.native_checks",
    "in_set": "lakeflow.define.native_checks",
    "matches": "lakeflow.define.native_checks",
    "not_null": "lakeflow.define.native_checks",
    "references": "lakeflow.define.native_checks",
    "row_count": "lakeflow.define.native_checks",
    "schema": "lakeflow.define.native_checks",
    "unique": "lakeflow.define.native_checks",
    "sql_asset": "lakeflow.define.sql",
    "sql_assets": "lakeflow.define.sql",
    "Compaction": "lakeflow.define.tables",
    "Retention": "lakeflow.define.tables",
    "FilePartitions": "lakeflow.define.partitions",
    "Partition": "lakeflow.define.partitions",
    "Partitions": "lakeflow.define.partitions",
    "StaticPartitions": "lakeflow.define.partitions",
    "Unpartitioned": "lakeflow.define.partitions",
    "DailyPartitions": "lakeflow.define.time_windows",
    "HourlyPartitions": "lakeflow.define.time_windows",
    "MonthlyPartitions": "lakeflow.define.time_windows",
    "TimeWindowPartitions": "lakeflow.define.time_windows",
    "DefinitionError": "lakeflow.errors",
    "InfrastructureError": "lakeflow.errors",
    "LakeError": "lakeflow.errors",
    "LakeflowError": "lakeflow.errors",
    "PartitionError": "lakeflow.errors",
    "RayUnavailable": "lakeflow.errors",
    "RequestError": "lakeflow.errors",
    "RunError": "lakeflow.errors",
    "SchemaError": "lakeflow.errors",
    "SelectionError": "lakeflow.errors",
    "UserCodeError": "lakeflow.errors",
    "Lake": "lakeflow.lake",
    "read_events": "lakeflow.lake.events",
    "load_pipeline": "lakeflow.loading",
    "optimize": "lakeflow.maintenance",
    "vacuum": "lakeflow.maintenance",
    "Pipeline": "lakeflow.pipeline",
    "EnvVar": "lakeflow.secrets",
    "SecretError": "lakeflow.secrets",
    "Service": "lakeflow.serve.service",
    "Subscription": "lakeflow.serve.service",
    "down": "lakeflow.serve.service",
    "subscribe": "lakeflow.serve.service",
    "up": "lakeflow.serve.service",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'lakeflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
