"""One unit's work: the worker task (run the asset, stage its Parquet, run its checks), the table
checks after a publish (`table_audit`), and the executors that run tasks locally or on Ray.

May import `lakeflow.plan`, `lakeflow.define`, `lakeflow.lake` and below; Ray only inside the
functions that need it, so importing lakeflow needs no Ray.
"""

__all__ = ["executors", "table_audit", "worker"]
