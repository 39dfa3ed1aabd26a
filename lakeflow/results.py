"""The outcome of a run as a user holds it: a table of units, failures, check results."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import polars as pl

from lakeflow.control.run_result import RESULT_SCHEMA
from lakeflow.display import run_html
from lakeflow.errors import RunError
from lakeflow.lake import Lake
from lakeflow.lake.events import read_events
from lakeflow.plan.status import check_frame

__all__ = ["RunResult", "events_result"]

# outcomes of a unit that did what it should; "waiting": left out, an input it needs lies outside
# the requested partitions (a roll-up window reaching past the span), built by a later request
DONE = ["published", "deleted", "fresh", "waiting"]


class RunResult:
    """The outcome of a run: one row per unit, with rows, bytes, seconds, Delta version, error."""

    def __init__(self, data: Mapping[str, Any], lake: Lake | None = None) -> None:
        self.lake = lake
        self.run_id: str = data["run_id"]
        self.status: str = data["status"]
        self.started: float | None = data.get("started")
        self.finished: float | None = data.get("finished")
        self.units: pl.DataFrame = pl.from_arrow(data["units"])  # type: ignore[assignment]
        self.errors: dict[str, str] = dict(data.get("errors") or {})
        # "asset partition" of the units that failed because Ray or the lake's storage did
        self.infrastructure: list[str] = list(data.get("infrastructure") or [])

    @property
    def ok(self) -> bool:
        """Every requested unit was published (or deleted, its inputs deleted upstream) or was
        already fresh."""
        return self.status == "succeeded" and self.failures().is_empty()

    @property
    def infrastructure_failed(self) -> bool:
        """Every unit that failed did so because Ray or the lake's storage failed (a full disk, a
        store out of reach), not its own code or a check: the same run may succeed later as it is.
        Units held behind such a failure (upstream_failed) do not count against this."""
        outcomes = set(self.failures()["outcome"].to_list())
        failed = self.units.filter(pl.col("outcome") == "failed")
        wheres = [
            f"{a} {p or ''}".strip() for a, p in failed.select("asset", "partition").iter_rows()
        ]
        return (
            bool(wheres)
            and outcomes <= {"failed", "upstream_failed"}
            and set(wheres) <= set(self.infrastructure)
        )

    def counts(self) -> dict[str, int]:
        return dict(self.units.group_by("outcome").len().sort("outcome").iter_rows())

    def waiting(self) -> pl.DataFrame:
        """Units left out because an input they need lies outside the request: asset,
        partition, and what they wait for."""
        rows = self.units.filter(pl.col("outcome") == "waiting")
        return rows.select("asset", "partition", pl.col("error").alias("waiting_for"))

    def failures(self) -> pl.DataFrame:
        return self.units.filter(~pl.col("outcome").is_in(DONE))

    def checks(self, *, failed: bool = False) -> pl.DataFrame:
        """This run's check results, one row per check per unit (read from the event log)."""
        if self.lake is None:
            raise RunError("this result does not know its lake")
        events = read_events(
            self.lake, run_id=self.run_id, kinds=["check_result", "unit_check_failed"]
        )
        results = check_frame(events)
        return results.filter(pl.col("status") != "passed") if failed else results

    def raise_on_failure(self) -> RunResult:
        if not self.ok:
            first = self.failures().head(5)
            lines = [
                f"{a} {p}: {e or o}"
                for a, p, o, e in first.select("asset", "partition", "outcome", "error").iter_rows()
            ]
            raise RunError(f"run {self.run_id} {self.status}: " + "; ".join(lines))
        return self

    def summary(self) -> str:
        seconds = (self.finished or time.time()) - (self.started or time.time())
        parts = ", ".join(f"{n} {o}" for o, n in self.counts().items())
        return f"run {self.run_id} {self.status} in {seconds:.1f}s: {parts or 'nothing to do'}"

    def __repr__(self) -> str:
        return f"{self.summary()}\n{self.units}"

    def _repr_html_(self) -> str:
        """In a notebook: the status, counts per outcome, per asset its outcomes, rows and
        seconds, the failures with their first error line, and every unit folded away."""
        seconds = (self.finished - self.started) if self.finished and self.started else None
        return run_html(
            run_id=self.run_id,
            status=self.status,
            seconds=seconds,
            units=self.units,
            failures=self.failures(),
            counts=self.counts(),
        )


def events_result(lake: Lake, run_id: str) -> RunResult:
    """A finished run's result rebuilt from the event log (its controller no longer holds it)."""
    events = read_events(lake, run_id=run_id)
    units = (
        events.filter(
            pl.col("kind").is_in(
                [
                    "unit_published",
                    "unit_deleted",
                    "unit_failed",
                    "unit_upstream_failed",
                    "unit_cancelled",
                    "unit_waiting",
                ]
            )
        )
        .group_by("asset", "partition", maintain_order=True)
        .last()
        .select(
            "asset",
            "partition",
            pl.col("kind").str.strip_prefix("unit_").alias("outcome"),
            "rows",
            "bytes",
            "seconds",
            "version",
            pl.col("attempt").alias("attempts"),
            pl.col("message").alias("error"),
        )
    )
    finished = events.filter(pl.col("kind") == "run_finished")
    status_ = finished["message"][-1] if len(finished) else "running"
    failed = (  # each unit's last failure (a resumed run may have failed it again otherwise)
        events.filter(pl.col("kind") == "unit_failed")
        .group_by("asset", "partition", maintain_order=True)
        .last()
        .filter(pl.col("detail").str.contains('"kind": "infrastructure"', literal=True))
    )
    infrastructure = [
        f"{a} {p or ''}".strip() for a, p in failed.select("asset", "partition").iter_rows()
    ]
    data = {
        "run_id": run_id,
        "status": status_,
        "units": units.to_arrow().cast(RESULT_SCHEMA),
        "infrastructure": infrastructure,
    }
    return RunResult(data, lake)
