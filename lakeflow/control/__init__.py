"""The controller: runs and their units' tasks (`runner`), group commits (`group_commit`), stored
runs (`runs`), the `Controller` itself, the Ray actor that hosts it and the clients that reach it.

May import `lakeflow.triggers`, `lakeflow.execute` and below.
"""

__all__ = ["actor", "client", "controller", "group_commit", "runner", "runs"]
