"""3 assets x N daily partitions of small data, in one run: lakeflow; Dagster materializing
partition by partition in-process on an ephemeral instance (its fastest path; installed by the
`bench` extra); and a plain sequential Python loop doing the same reads and Delta writes.
Prints units/s and the ratios.

    python benchmarks/bench_pipeline.py --days 365
    python benchmarks/bench_pipeline.py --quick          # seconds; CI runs this
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
)  # for Ray workers
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import polars as pl  # noqa: E402
from deltalake import write_deltalake  # noqa: E402

from benchmarks.common import Timer, record, table  # noqa: E402
from benchmarks.shape import ROWS, build_pipeline, clean_fn, source_fn, stats_fn, warmup_pipeline  # noqa: E402


def run_lakeflow(
    lake: str, days: int, executor: str, address: str | None, *, warm: bool = True
) -> float:
    """lakeflow's run; `warm`: the lake's controller has already run something (as a long-lived
    controller has), else its start (actor, task export to the workers) is in the time."""
    import lakeflow as lf

    pipeline = build_pipeline(days, lake)
    if warm:
        lf.materialize(warmup_pipeline(lake), executor=executor, address=address)
    with Timer() as timer:
        result = lf.materialize(pipeline, executor=executor, address=address)
    assert result.ok, result
    return timer.seconds


def _step(lake: str, key: str, table: str, upstream: str | None, compute) -> None:
    """One unit as a hand-written script (and a Dagster asset) does it: read the upstream
    partition from Delta, compute, overwrite this partition with one commit."""
    if compute is None:
        frame = source_fn(key)
    else:
        read = pl.scan_delta(f"{lake}/{upstream}").filter(pl.col("date") == key).drop("date")
        frame = compute(read).collect()
    write_deltalake(
        f"{lake}/{table}",
        frame.with_columns(pl.lit(key).alias("date")).to_arrow(),
        mode="overwrite",
        partition_by=["date"],
        predicate=f"date = '{key}'",
    )


STEPS = [("source", None, None), ("clean", "source", clean_fn), ("stats", "clean", stats_fn)]


def run_dagster(lake: str, days: int) -> float:
    import datetime as dt

    import dagster as dg

    start = dt.date(2024, 1, 1)
    partitions = dg.DailyPartitionsDefinition(
        start_date=str(start), end_date=str(start + dt.timedelta(days=days))
    )

    def make(table: str, upstream: str | None, compute, deps: list) -> dg.AssetsDefinition:
        @dg.asset(name=table, partitions_def=partitions, deps=deps)
        def unit(context) -> None:
            _step(lake, context.partition_key, table, upstream, compute)

        return unit

    assets: list[dg.AssetsDefinition] = []
    for name, upstream, compute in STEPS:
        assets.append(make(name, upstream, compute, assets[-1:]))
    instance = dg.DagsterInstance.ephemeral()
    keys = partitions.get_partition_keys()
    with Timer() as timer:
        for key in keys:
            assert dg.materialize(
                assets, partition_key=key, instance=instance, raise_on_error=True
            ).success
    return timer.seconds


def run_loop(lake: str, days: int) -> float:
    """What a hand-written script does: each unit read, computed and written on its own."""
    import datetime as dt

    start = dt.date(2024, 1, 1)
    with Timer() as timer:
        for d in range(days):
            key = str(start + dt.timedelta(days=d))
            for name, upstream, compute in STEPS:
                _step(lake, key, name, upstream, compute)
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--quick", action="store_true", help="a few days only, nothing recorded")
    parser.add_argument("--executor", choices=["ray", "local"], default="ray")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-dagster", action="store_true")
    args = parser.parse_args()
    days = 5 if args.quick else args.days
    units = 3 * days
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-"))
    try:
        import lakeflow as lf

        if args.executor == "ray":
            lf.connect(args.address, log_to_driver=False)
        rows = []
        seconds = run_lakeflow(str(work / "lakeflow"), days, args.executor, args.address)
        rows.append([f"lakeflow ({args.executor})", units, seconds, units / seconds, 1.0])
        if args.executor == "ray":
            cold = run_lakeflow(
                str(work / "lakeflow-cold"), days, args.executor, args.address, warm=False
            )
            rows.append(
                [
                    "lakeflow (ray), controller started for this run",
                    units,
                    cold,
                    units / cold,
                    cold / seconds,
                ]
            )
        others = []
        if not args.skip_dagster:
            try:
                import dagster  # noqa: F401
            except ImportError:
                print("dagster is not installed (pip install -e '.[bench]'): skipped")
            else:
                others.append(("Dagster, in-process materialize per partition", run_dagster))
        if not args.skip_loop:
            others.append(("sequential Python loop", run_loop))
        for name, runner in others:
            other = runner(str(work / name.split()[0].lower()), days)
            rows.append([name, units, other, units / other, other / seconds])
        headers = ["runner", "units", "seconds", "units/s", "lakeflow is x faster"]
        body = (
            table(headers, rows)
            + f"\n\n{ROWS} rows a partition; each unit reads its upstream partition and overwrites its own Delta partition.\n"
        )
        record(f"Pipeline shape: 3 assets x {days} daily partitions", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
