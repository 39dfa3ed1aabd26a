"""Pure planning: a request and the lake's snapshots become units (`planner`; deletes and
waiting units in `gaps`), a run's state and the order its units go in (`scheduler`), the
tables' state as the planner sees it (`snapshots`), and the status queries (`status`).

May import `lakeflow.define`, `lakeflow.lake` and below; never Ray, nothing that runs.
"""

__all__ = ["gaps", "planner", "scheduler", "snapshots", "status"]
