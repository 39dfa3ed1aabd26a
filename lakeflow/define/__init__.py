"""What a pipeline declares, as plain values: partitions and time windows, partition mappings,
assets and their code versions, checks (the protocol, the native ones, GX suites), dbt
projects as assets (`dbt`, compiled by `dbt_compile`), trigger
declarations (`automation`), the `Pipeline` graph and how a stored run names it (`definition`).

May import `lakeflow.lake`, `secrets`, `errors`; never what plans or runs (checked by lint-imports).
"""

__all__ = [
    "assets",
    "automation",
    "checks",
    "code_version",
    "dbt",
    "dbt_compile",
    "definition",
    "graph",
    "gx",
    "mappings",
    "native_checks",
    "partitions",
    "time_windows",
]
