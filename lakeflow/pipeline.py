"""`lakeflow.Pipeline` as users hold it: the declared graph (`define.graph.Pipeline`) plus the two
conveniences that run it, `materialize` and `status`, which call `lakeflow.api`. They live up
here so that the declarations never import the layers that run them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lakeflow import api
from lakeflow.define import graph
from lakeflow.graph_view import pipeline_html

__all__ = ["Pipeline"]


class Pipeline(graph.Pipeline):
    """A set of assets living in one lake. `timeout=` (seconds) applies to the units of every
    asset that sets no `timeout=` of its own, `optimize=` (`lf.Compaction`) and `retention=`
    (`lf.Retention`) to the tables of every asset that sets none.

    >>> pipeline = Pipeline([flights, delays, monthly], lake="./lake")
    >>> pipeline.materialize(select="delays+", partitions="2013-01-01..2013-01-31")
    """

    def materialize(
        self, select: str | Sequence[str] | None = None, partitions: Any = None, **options: Any
    ) -> api.RunResult:
        """Materialize a selection of this pipeline; see `lakeflow.materialize`."""
        return api.materialize(self, select=select, partitions=partitions, **options)

    def status(self, **options: Any) -> api.StatusFrame:
        """Per-asset partition counts; see `lakeflow.status`."""
        return api.status(self, **options)

    def lineage(self, asset: str, partition: str | None = None, **options: Any) -> api.Lineage:
        """What a partition was built from (or fed, `downstream=True`); see `lakeflow.lineage`."""
        return api.lineage(self, asset, partition, **options)

    def _repr_html_(self) -> str:
        """In a notebook: the asset graph in layers (SVG) and a table of the assets."""
        return pipeline_html(self)
