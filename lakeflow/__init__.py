"""lakeflow keeps a lake of Delta tables up to date on a Ray cluster.

>>> import lakeflow as lf
>>> daily = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")
>>> @lf.asset(partitions=daily)
... def flights(ctx: lf.Context) -> pl.DataFrame: ...
>>> pipeline = lf.Pipeline([flights], lake="./lake")
>>> pipeline.materialize(partitions="2013-01-01..2013-01-31")
"""

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
    lineage,
    materialize,
    resume,
    status,
    stop,
)
from lakeflow.control.controller import ControllerOptions
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
from lakeflow.define.time_windows import DailyPartitions, HourlyPartitions, MonthlyPartitions
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
from lakeflow.maintenance import vacuum
from lakeflow.pipeline import Pipeline
from lakeflow.secrets import EnvVar, SecretError
from lakeflow.serve.service import Service, Subscription, down, subscribe, up

__version__ = "0.1.0"

__all__ = [
    "AssetDef",
    "Check",
    "CheckEnv",
    "CheckResult",
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
    "down",
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
    "status",
    "stop",
    "subscribe",
    "unique",
    "up",
    "vacuum",
]
