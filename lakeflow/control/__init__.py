"""The controller: runs and their units' tasks (`runner`; claims of partitions and dispatch-time
freshness in `claims`; applying outcomes in `outcomes`), group commits (`group_commit`), stored
runs (`runs`, `run_result`), the `Controller` itself (`controller`, `options`), the Ray actor that
hosts it and the clients that reach it.

May import `lakeflow.triggers`, `lakeflow.execute` and below.
"""

__all__ = [
    "actor",
    "claims",
    "client",
    "controller",
    "group_commit",
    "options",
    "outcomes",
    "run_result",
    "runner",
    "runs",
]
