"""Planning at scale: 4 assets x 250,000 hourly partitions = 1,000,000 units. Plan them on an empty
lake, then move every unit through the run's bookkeeping (dispatch, staged, published, release of
its consumers) as the controller does; and re-plan a lake whose tables already hold half of the
partitions (table state as the controller keeps it). Seconds and peak memory, each case in a
fresh process.

    python benchmarks/bench_planning.py
    python benchmarks/bench_planning.py --quick      # 4 x 25,000; CI runs this
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)


def build(hours: int):
    import numpy as np
    import polars as pl

    import lakeflow as lf

    end = str(np.datetime64("2000-01-01T00", "h") + hours)
    partitions = lf.HourlyPartitions(start="2000-01-01T00", end=end)

    def make(name: str, upstream: str | None):
        def fn() -> pl.DataFrame:  # never runs here; its upstream is a dependency
            return pl.DataFrame()

        fn.__name__ = name
        return lf.asset(fn, name=name, partitions=partitions, deps=[upstream] if upstream else [])

    assets = [make("a", None), make("b", "a"), make("c", "b"), make("d", "c")]
    return lf.Pipeline(assets, lake="./unused"), partitions


def case_empty(hours: int) -> dict:
    from lakeflow.lake.log import TableState
    from lakeflow.plan.planner import Request, build_plan, snapshot
    from lakeflow.plan.scheduler import RunState, depths

    pipeline, _ = build(hours)
    started = time.perf_counter()
    snaps = {
        n: snapshot(TableState(url=n), pipeline[n].partitions, [e.up for e in pipeline.upstream(n)])
        for n in pipeline.assets
    }
    plan = build_plan(pipeline, Request(select=("*",), kind="backfill"), snaps)
    planned = time.perf_counter()
    state = RunState(plan, depth=depths(pipeline))
    while not state.done:
        batch = state.take(64)
        for unit in batch:
            state.staged(unit, rows=1, size=1, seconds=0.001)
        state.published(batch, 1)
    done = time.perf_counter()
    return {"units": plan.size, "plan_s": planned - started, "bookkeeping_s": done - planned}


def case_half(hours: int) -> dict:
    from lakeflow.lake.log import Published, TableState
    from lakeflow.plan.planner import Request, build_plan, snapshot

    pipeline, partitions = build(hours)
    keys = partitions.keys()[: hours // 2]
    tables = {}
    for version, name in enumerate(pipeline.assets):  # half published, in groups of 500 a commit
        state = TableState(url=name, column="hour", version=len(keys) // 500)
        for start in range(0, len(keys), 500):
            ups = {e.up: start // 500 for e in pipeline.upstream(name)}
            info = Published(start // 500, "run-1", pipeline[name].code_version, ups, 0)
            for key in keys[start : start + 500]:
                state.touched[key] = start // 500
                state.files[key] = {f"hour={key}/part-{version}.parquet": 1000}
                state.published[key] = info
        tables[name] = state
    held = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    snaps = {
        n: snapshot(tables[n], pipeline[n].partitions, [e.up for e in pipeline.upstream(n)])
        for n in pipeline.assets
    }
    plan = build_plan(pipeline, Request(select=("*",), kind="backfill"), snaps)
    return {
        "units": plan.size,
        "fresh": sum(len(v) for v in plan.fresh.values()),
        "plan_s": time.perf_counter() - started,
        "state_mib": held,
    }


def child(case: str, hours: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import lakeflow  # noqa: F401  (its import is not the planner's memory)

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = case_empty(hours) if case == "empty" else case_half(hours)
    figures["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["imports_mib"] = base
    figures["python_mib"] = before
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=int, default=250_000)
    parser.add_argument("--quick", action="store_true", help="4 x 25,000 units, nothing recorded")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from benchmarks.common import record, table

    hours = 25_000 if args.quick else args.hours
    results = {}
    for case in ("empty", "half"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, str(hours)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
    empty, half = results["empty"], results["half"]
    rows = [
        [
            "empty lake: plan",
            f"{empty['units']:,}",
            empty["plan_s"],
            empty["peak_mib"],
            empty["peak_mib"] - empty["imports_mib"],
        ],
        [
            "empty lake: bookkeeping of every unit",
            f"{empty['units']:,}",
            empty["bookkeeping_s"],
            "",
            "",
        ],
        [
            "half built: re-plan",
            f"{half['units']:,} to run, {half['fresh']:,} fresh",
            half["plan_s"],
            half["peak_mib"],
            half["peak_mib"] - half["state_mib"],
        ],
    ]
    body = table(["case", "units", "seconds", "peak RSS MiB", "of which the plan MiB"], rows)
    body += (
        f"\n\n4 assets x {hours:,} hourly partitions, a chain a -> b -> c -> d. Bookkeeping moves every unit "
        f"through dispatch (batches of 64), staged, published and the release of its consumers. The half-built "
        f"case holds the tables' state as the controller does ({half['state_mib'] - half['imports_mib']:.0f} MiB for "
        f"{2 * hours:,} published partitions) and measures what the plan adds to it. Python and lakeflow's imports: "
        f"{empty['imports_mib']:.0f} MiB."
    )
    record(f"Planning scale: {4 * hours:,} units", body, quick=args.quick)


if __name__ == "__main__":
    main()
