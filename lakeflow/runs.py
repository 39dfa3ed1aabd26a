"""Runs as durable things: the request kept in the lake so a restarted controller can resume it,
the list of runs left unfinished, and a run's per-unit result as an Arrow table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .errors import LakeError
from .events import read_events
from .lake import Lake
from .scheduler import UnitStatus

if TYPE_CHECKING:
    from .controller import Run
    from .graph import Pipeline
    from .planner import Request

__all__ = [
    "RESULT_SCHEMA",
    "RUNS_DIR",
    "dump_request",
    "load_request",
    "plan_result",
    "unfinished_runs",
]

RUNS_DIR = "_lakeflow/runs"

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


def _pickler():
    import ray.cloudpickle as cloudpickle  # pickles notebook and file-loaded pipelines by value

    return cloudpickle


def dump_request(pipeline: Pipeline, request: Request, origin: str) -> bytes:
    return _pickler().dumps({"pipeline": pipeline, "request": request, "origin": origin})


def load_request(lake: Lake, run_id: str) -> tuple[Pipeline, Request, str]:
    blob = lake.read_bytes(f"{lake.url}/{RUNS_DIR}/{run_id}.pkl")
    if blob is None:
        raise LakeError(f"run {run_id} has no stored request in {lake.url}/{RUNS_DIR}")
    data = _pickler().loads(blob)
    return data["pipeline"], data["request"], data["origin"]


def unfinished_runs(lake: Lake) -> list[str]:
    """Runs with a `run_requested` event and no `run_finished`, oldest first."""
    events = read_events(lake, kinds=["run_requested", "run_finished"])
    finished = set(events.filter(events["kind"] == "run_finished")["run_id"].to_list())
    requested = events.filter(events["kind"] == "run_requested")["run_id"].to_list()
    return [r for r in dict.fromkeys(requested) if r not in finished]


def plan_result(run: Run) -> dict[str, Any]:
    """The run's units (planned, fresh, and published before a restart) as an Arrow table."""
    plan, state, pipeline = run.plan, run.state, run.pipeline
    columns: dict[str, list[Any]] = {name: [] for name in RESULT_SCHEMA.names}

    def add(
        asset: str,
        indices: np.ndarray,
        outcome: list[str],
        rows,
        size,
        seconds,
        version,
        attempts,
        errors,
    ) -> None:
        keys = pipeline[asset].partitions.keys(indices)
        n = len(keys)
        columns["asset"].extend([asset] * n)
        columns["partition"].extend(keys)
        columns["outcome"].extend(outcome)
        columns["rows"].extend(rows)
        columns["bytes"].extend(size)
        columns["seconds"].extend(seconds)
        columns["version"].extend(version)
        columns["attempts"].extend(attempts)
        columns["error"].extend(errors)

    names = {s.value: s.name.lower() for s in UnitStatus}
    for j, asset in enumerate(plan.assets):
        lo, hi = int(plan.offsets[j]), int(plan.offsets[j + 1])
        units = range(lo, hi)
        errors: list[str | None] = []
        for unit in units:
            failure = state.errors.get(unit)
            if failure is not None:
                errors.append(failure.error.first_line())
            elif unit in state.cause:
                cause_asset, cause_index = plan.locate(state.cause[unit])
                where = f"{cause_asset} {pipeline[cause_asset].partitions.key(cause_index)}".strip()
                blocked = state.status[unit] == UnitStatus.BLOCKED
                errors.append(
                    f"blocked by a failed check on {where}"
                    if blocked
                    else f"upstream {where} failed"
                )
            else:
                errors.append(None)
        add(
            asset,
            plan.indices[j],
            [names[int(s)] for s in state.status[lo:hi]],
            state.rows[lo:hi].tolist(),
            state.bytes[lo:hi].tolist(),
            state.seconds[lo:hi].astype(float).tolist(),
            [v if v >= 0 else None for v in state.version[lo:hi].tolist()],
            state.attempts[lo:hi].astype(int).tolist(),
            errors,
        )
    for asset, prior in run.prior.items():
        indices = np.array(sorted(prior), np.int64)
        n = len(indices)
        add(
            asset,
            indices,
            ["published"] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [prior[i] for i in indices.tolist()],
            [None] * n,
            [None] * n,
        )
    for asset, fresh in plan.fresh.items():
        n = len(fresh)
        add(
            asset,
            fresh,
            ["fresh"] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [None] * n,
            [0] * n,
            [None] * n,
        )
    outcome = (
        "cancelled"
        if run.cancelled
        else ("succeeded" if state.succeeded else ("failed" if state.done else "running"))
    )
    return {
        "run_id": run.id,
        "status": outcome,
        "started": state.started,
        "finished": state.finished,
        "units": pa.table(columns, schema=RESULT_SCHEMA),
        "errors": {
            f"{plan.locate(u)[0]} {pipeline[plan.locate(u)[0]].partitions.key(plan.locate(u)[1])}".strip(): f.error.traceback
            or f.error.message
            for u, f in list(state.errors.items())[:50]
        },
    }
