"""Control-plane cost: N tiny units through lakeflow (each a one-row partition: staged, group-
committed, recorded) against N bare Ray tasks that do nothing, submitted in the same run.

    python benchmarks/bench_control_plane.py                # 10,000 and 100,000 units
    python benchmarks/bench_control_plane.py --quick        # 1,000; CI runs this
    python benchmarks/bench_control_plane.py --address auto # on a running cluster
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
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_task_events_max_num_task_in_gcs", "5000")  # notes/ray.md: GCS memory

import polars as pl  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import Timer, process_mib, record, table  # noqa: E402


def tiny_pipeline(units: int, lake: str, name: str = "tiny") -> lf.Pipeline:
    hours = lf.HourlyPartitions(start="2000-01-01T00", end=_hour(units))

    def tiny(ctx: lf.Context) -> pl.DataFrame:
        return pl.DataFrame({"n": [1]})

    return lf.Pipeline([lf.asset(tiny, name=name, partitions=hours, retry=1)], lake=lake, name=name)


def _hour(offset: int) -> str:
    import numpy as np

    return str(np.datetime64("2000-01-01T00", "h") + offset)


def bare_ray(units: int) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def nothing(i: int) -> int:
        return i

    ray.get([nothing.remote(i) for i in range(min(units, 200))])  # warm the workers
    with Timer() as timer:
        ray.get([nothing.remote(i) for i in range(units)])
    return timer.seconds


def lakeflow_units(units: int, lake: str, address: str | None) -> tuple[float, float, float]:
    """Wall seconds, the controller's peak memory (MiB) and its CPU seconds for `units` units."""
    import ray

    from lakeflow.control.client import NAMESPACE, controller_name

    pipeline = tiny_pipeline(units, lake)
    lf.backfill(
        tiny_pipeline(100, lake, name="warmup"), lake=lake, address=address
    )  # the controller starts
    actor = ray.get_actor(controller_name(lf.Lake(lake)), namespace=NAMESPACE)
    before = ray.get(actor.ping.remote())["cpu_seconds"]
    with Timer() as timer:
        result = lf.backfill(pipeline, lake=lake, address=address)
    assert result.ok, result.summary()
    info = ray.get(actor.ping.remote())
    memory = process_mib(info["pid"])
    lf.stop(lake)
    return timer.seconds, memory, info["cpu_seconds"] - before


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--quick", action="store_true", help="1,000 units, nothing recorded")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-cp-"))
    lf.connect(args.address, log_to_driver=False)
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    rows = []
    try:
        for size in sizes:
            ray_seconds = bare_ray(size)
            seconds, memory, cpu = lakeflow_units(size, str(work / f"lake-{size}"), args.address)
            per_unit, per_task = seconds / size * 1e3, ray_seconds / size * 1e3
            rows.append(
                [
                    f"{size:,}",
                    size / ray_seconds,
                    size / seconds,
                    per_task,
                    per_unit,
                    per_unit / per_task,
                    cpu / size * 1e3,
                    memory,
                ]
            )
            shutil.rmtree(work / f"lake-{size}", ignore_errors=True)
        body = table(
            [
                "units",
                "bare Ray tasks/s",
                "lakeflow units/s",
                "ms a Ray task",
                "ms a lakeflow unit",
                "lakeflow / Ray",
                "controller CPU ms a unit",
                "controller peak MiB",
            ],
            rows,
        )
        body += (
            f"\n\nA lakeflow unit here is a one-row partition of an hourly asset: planned, dispatched (in "
            f"batches), staged as Parquet with statistics, group-committed to Delta with its metadata, and "
            f"recorded in the event log. A bare Ray task returns its argument. {cpus} CPUs. "
            f"Controller CPU is the controller process's CPU time over the run divided by its units "
            f"(submission, commits, event log); the rest of a unit's wall time is the worker writing "
            f"its file, which a bare Ray task does not do."
        )
        record("Control-plane cost: lakeflow units vs bare Ray tasks", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
