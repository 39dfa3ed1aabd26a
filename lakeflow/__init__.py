"""lakeflow keeps a lake of Delta tables up to date on a Ray cluster.

>>> import lakeflow as lf
>>> daily = lf.DailyPartitions(start="2013-01-01", end="2014-01-01")
>>> @lf.asset(partitions=daily)
... def flights(ctx: lf.Context) -> pl.DataFrame: ...
>>> pipeline = lf.Pipeline([flights], lake="./lake")
>>> pipeline.materialize(partitions="2013-01-01..2013-01-31")
"""

from .api import (
    PlanPreview,
    RunHandle,
    RunResult,
    backfill,
    backfill_status,
    cancel,
    check_results,
    connect,
    materialize,
    resume,
    status,
    stop,
)
from .assets import AssetDef, Context, Resources, RetryPolicy, asset, source
from .checks import Check, CheckEnv, CheckResult
from .controller import ControllerOptions
from .definition import ResumeError
from .errors import (
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
from .events import read_events
from .graph import Pipeline
from .gx import gx_suite
from .lake import Lake
from .loading import load_pipeline
from .maintenance import vacuum
from .mappings import PartitionMapping, all_partitions, identity, lookback, previous, rollup
from .native_checks import (
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
from .partitions import FilePartitions, Partition, Partitions, StaticPartitions, Unpartitioned
from .secrets import EnvVar, SecretError
from .service import Service, Subscription, down, subscribe, up
from .time_windows import DailyPartitions, HourlyPartitions, MonthlyPartitions
from .triggers import (
    OnPublish,
    OnUpstreamCommit,
    Publish,
    Schedule,
    on_publish,
    on_upstream_commit,
    schedule,
)

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
    "load_pipeline",
    "lookback",
    "matches",
    "materialize",
    "not_null",
    "on_publish",
    "on_upstream_commit",
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
