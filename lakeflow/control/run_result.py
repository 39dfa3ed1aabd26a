"""A run's result: each unit's outcome (published, fresh, failed, waiting, ...) with its rows,
version, attempts and error, as an Arrow table of `RESULT_SCHEMA`, and the run's errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from lakeflow.define.graph import Pipeline
from lakeflow.plan.planner import Plan
from lakeflow.plan.scheduler import RunState, UnitStatus

__all__ = ["RESULT_SCHEMA", "plan_result", "waiting_units"]

RESULT_SCHEMA = pa.schema(
    [
        ("asset", pa.string()),
        ("partition", pa.string()),
        ("outcome", pa.string()),
        ("rows", pa.int64()),
        ("bytes", pa.int64()),
        ("seconds", pa.float64()),
        ("version", pa.int64()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
    ]
)

_OUTCOMES = np.array([s.name.lower() for s in sorted(UnitStatus, key=int)], dtype=object)


def plan_result(
    *,
    run_id: str | None,
    status: str,
    plan: Plan,
    state: RunState,
    pipeline: Pipeline,
    prior: dict[str, dict[int, int]],
) -> dict[str, Any]:
    """The run's units (planned, fresh, and published before a restart, `prior`) as an Arrow
    table, with its status and errors. `run_id` is None for a request that needed no run."""
    tables = []
    for j, asset in enumerate(plan.assets):
        lo, hi = int(plan.offsets[j]), int(plan.offsets[j + 1])
        errors = np.full(hi - lo, None, dtype=object)
        for unit, failure in state.errors.items():
            if lo <= unit < hi:
                errors[unit - lo] = failure.error.first_line()
        for unit, cause in state.cause.items():
            if lo <= unit < hi:
                verb = (
                    "blocked by a failed check on"
                    if state.status[unit] == UnitStatus.BLOCKED
                    else "upstream"
                )
                where = f"{plan.locate(cause)[0]} {pipeline[plan.locate(cause)[0]].partitions.key(plan.locate(cause)[1])}".rstrip()
                errors[unit - lo] = f"{verb} {where}" + (
                    "" if verb.startswith("blocked") else " failed"
                )
        version = state.version[lo:hi]
        tables.append(_table({
            "asset": [asset] * (hi - lo),
            "partition": pipeline[asset].partitions.keys(plan.indices[j]),
            "outcome": _outcomes(plan, state, lo, hi).tolist(),
            "rows": state.rows[lo:hi],
            "bytes": state.bytes[lo:hi],
            "seconds": state.seconds[lo:hi].astype(np.float64),
            "version": [None if v < 0 else v for v in version.tolist()],
            "attempts": state.attempts[lo:hi].astype(np.int32),
            "error": errors.tolist(),
        }))  # fmt: skip
    for asset, before in prior.items():
        indices = np.array(sorted(before), np.int64)
        tables.append(
            _simple(pipeline, asset, indices, "published", [before[i] for i in indices.tolist()])
        )
    for asset, fresh in plan.fresh.items():
        tables.append(_simple(pipeline, asset, fresh, "fresh", None))
    for asset, indices, reasons in waiting_units(plan, pipeline):
        tables.append(_simple(pipeline, asset, indices, "waiting", None, errors=reasons))
    units = pa.concat_tables(tables) if tables else pa.Table.from_batches([], schema=RESULT_SCHEMA)
    errors_text: dict[str, str] = {}
    for unit, failure in list(state.errors.items())[:50]:
        asset, index = plan.locate(unit)
        errors_text[f"{asset} {pipeline[asset].partitions.key(index)}".strip()] = (
            failure.error.traceback or failure.error.message
        )
    infrastructure = [
        f"{asset} {pipeline[asset].partitions.key(index)}".strip()
        for unit, failure in state.errors.items()
        if failure.error.kind == "infrastructure"
        for asset, index in [plan.locate(unit)]
    ]
    return {
        "run_id": run_id,
        "status": status,
        "started": state.started,
        "finished": state.finished,
        "units": units,
        "errors": errors_text,
        "infrastructure": infrastructure,
    }


def _outcomes(plan: Plan, state: RunState, lo: int, hi: int) -> np.ndarray:
    """Each unit's outcome; a published delete unit's is "deleted"."""
    out = _OUTCOMES[state.status[lo:hi]]
    if plan.deletes is not None:
        out = out.copy()
        out[plan.deletes[lo:hi] & (state.status[lo:hi] == UnitStatus.PUBLISHED)] = "deleted"
    return out


def waiting_units(plan: Plan, pipeline: Pipeline) -> list[tuple[str, np.ndarray, list[str]]]:
    """Per asset, the units the plan left waiting (`Plan.waiting`) and what each waits for."""
    out: dict[str, tuple[list[int], list[str]]] = {}
    for item in plan.waiting:
        key = pipeline[item.upstream].partitions.key(item.upstream_index)
        reason = (
            f"input {item.upstream} {key} is not materialized and lies outside the "
            "requested partitions; a request that covers it builds this unit"
        )
        indices, reasons = out.setdefault(item.asset, ([], []))
        indices.append(item.index)
        reasons.append(reason)
    return [(a, np.array(i, np.int64), r) for a, (i, r) in out.items()]


def _simple(
    pipeline: Pipeline,
    asset: str,
    indices: np.ndarray,
    outcome: str,
    versions: list[int] | None,
    *,
    errors: list[str] | None = None,
) -> pa.Table:
    n = len(indices)
    nothing = [None] * n
    return _table({
        "asset": [asset] * n,
        "partition": pipeline[asset].partitions.keys(indices),
        "outcome": [outcome] * n,
        "rows": nothing, "bytes": nothing, "seconds": nothing,
        "version": versions if versions is not None else nothing,
        "attempts": np.zeros(n, np.int32),
        "error": errors if errors is not None else nothing,
    })  # fmt: skip


_TYPES = {
    f.name: pl.from_arrow(pa.Table.from_batches([], schema=RESULT_SCHEMA))[f.name].dtype
    for f in RESULT_SCHEMA
}


def _table(columns: dict[str, Any]) -> pa.Table:
    """Columns (lists, numpy arrays) as an Arrow table of `RESULT_SCHEMA`. Built through polars:
    pyarrow's own conversion of Python and numpy values imports pandas (~0.5 s), which a run
    with nothing to do, answered in the CLI process, should not pay."""
    frame = pl.DataFrame({k: pl.Series(k, v, dtype=_TYPES[k]) for k, v in columns.items()})
    return frame.to_arrow().cast(RESULT_SCHEMA)
