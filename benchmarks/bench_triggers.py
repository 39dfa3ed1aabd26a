"""Trigger latency: from a commit to the moment the consumer's function starts on a Ray worker.

An outside producer appends to a source table (`trips`); `a` runs on its commits; `b` runs on
`a`'s publishes. Two latencies per commit: outside commit -> `a` starts (the watcher's poll, the
plan, the dispatch), and `a`'s commit -> `b` starts (our own publish, which wakes the watcher
without a poll). Commits are spaced so each is its own trigger; p50 and p95 over all of them.

    python benchmarks/bench_triggers.py                 # 40 commits
    python benchmarks/bench_triggers.py --quick         # 5 commits; CI runs this
    python benchmarks/bench_triggers.py --address auto  # on a running cluster
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
from deltalake import DeltaTable, write_deltalake  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import record, table  # noqa: E402

DAYS = lf.DailyPartitions(start="2024-01-01", end="2025-01-01", column="day")


def pipeline(lake: str) -> lf.Pipeline:
    trips = lf.source("trips", partitions=DAYS)

    @lf.asset(partitions=DAYS, automation=lf.on_upstream_commit())
    def a(trips: pl.LazyFrame) -> pl.DataFrame:
        started = time.time()
        return trips.select(pl.len().alias("n")).collect().with_columns(started=pl.lit(started))

    @lf.asset(partitions=DAYS, automation=lf.on_upstream_commit())
    def b(a: pl.LazyFrame) -> pl.DataFrame:
        started = time.time()
        return a.select("n").collect().with_columns(started=pl.lit(started))

    return lf.Pipeline([trips, a, b], lake=lake, name="latency")


def commit(url: str, day: str) -> float:
    rows = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "day": pa.array([day] * 3)})
    write_deltalake(url, rows, mode="append", partition_by=["day"])
    return time.time()


def started(lake: str, asset: str) -> dict[str, float]:
    url = f"{lake}/{asset}"
    if not DeltaTable.is_deltatable(url):
        return {}
    return dict(pl.read_delta(url).select("day", "started").iter_rows())


def commit_times(lake: str, asset: str) -> dict[str, float]:
    """day -> when the commit that published it landed (the commit's own timestamp)."""
    out: dict[str, float] = {}
    log = Path(lake) / asset / "_delta_log"
    from lakeflow.lake.log import parse_commit

    for path in sorted(log.glob("*.json")):
        parsed = parse_commit(path.read_bytes(), int(path.stem), "day")
        for key in parsed.added:
            out[key] = parsed.timestamp_ms / 1000
    return out


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the consumers did not run")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--gap", type=float, default=0.75, help="seconds between commits")
    parser.add_argument("--poll", type=float, default=0.1, help="the watcher's poll interval")
    parser.add_argument("--quick", action="store_true", help="5 commits, nothing recorded")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args()
    commits = 5 if args.quick else args.commits
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-trig-"))
    lake = str(work / "lake")
    lf.connect(args.address, log_to_driver=False)
    try:
        source = f"{lake}/trips"
        days = [str(np.datetime64("2024-01-01") + i) for i in range(commits + 1)]
        commit(source, days[0])
        service = lf.up(pipeline(lake), poll=args.poll, address=args.address)
        # warm up: the first trigger imports and starts workers
        commit(source, days[1])
        wait_for(lambda: days[1] in started(lake, "b"), timeout=120)
        outside: list[float] = []
        own: list[float] = []
        for day in days[2:]:
            at = commit(source, day)
            wait_for(lambda day=day: day in started(lake, "b"))
            outside.append(started(lake, "a")[day] - at)
            own.append(started(lake, "b")[day] - commit_times(lake, "a")[day])
            time.sleep(args.gap)
        service.down()
        rows = []
        for label, values in (
            ("outside commit -> consumer starts", outside),
            ("our publish -> consumer starts", own),
        ):
            ms = np.array(values) * 1e3
            rows.append(
                [
                    label,
                    len(ms),
                    float(np.percentile(ms, 50)),
                    float(np.percentile(ms, 95)),
                    float(ms.max()),
                ]
            )
        body = table(["latency", "commits", "p50 ms", "p95 ms", "max ms"], rows)
        body += (
            f"\n\nA source table appended to by a plain `write_deltalake` every ~{args.gap:g} s; `a` runs on its "
            f"commits, `b` on `a`'s. Measured from the commit (the producer's write returning; our commit's "
            f"log timestamp) to the consumer's function starting on a Ray worker. Watcher poll "
            f"{args.poll:g} s for outside commits; our own publishes wake it directly."
        )
        record("Trigger latency: commit to consumer start", body, quick=args.quick)
    finally:
        lf.stop(lake)
        shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
