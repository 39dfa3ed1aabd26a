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


PRODUCER = """
import sys, time
import pyarrow as pa
from deltalake import write_deltalake
url, mode, days = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
rounds = 2 if mode == "append" else 1
for r in range(rounds):
    for i, day in enumerate(days):
        n = 5 + (i + r) % 7
        rows = pa.table({"id": pa.array(range(n), pa.int64()), "day": pa.array([day] * n)})
        for attempt in range(50):  # two writers race: a lost commit is tried again
            try:
                if mode == "overwrite":
                    write_deltalake(url, rows, mode="overwrite", predicate=f"day = '{day}'",
                                    partition_by=["day"])
                else:
                    write_deltalake(url, rows, mode="append", partition_by=["day"])
                break
            except Exception:
                time.sleep(0.01 * (attempt + 1))
print(time.time())
"""


def burst(lake: str, source: str) -> dict[str, float]:
    """Two producer processes at once: one overwrites 50 days (one commit each), the other
    appends twice to 10 of them (20 commits). Returns the commit count, the seconds from the
    last commit until every consumer day equals the source, and how many days were wrong
    after that (must be 0)."""
    import subprocess

    days = [str(np.datetime64("2024-06-01") + i) for i in range(50)]
    before = DeltaTable(source).version()
    producers = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER, source, mode, ",".join(chosen)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode, chosen in (("overwrite", days), ("append", days[::5]))
    ]
    last = max(float(p.communicate()[0].strip().splitlines()[-1]) for p in producers)
    commits = DeltaTable(source).version() - before

    def settled() -> bool:
        truth = dict(
            pl.read_delta(source)
            .filter(pl.col("day").is_in(days))
            .group_by("day")
            .len()
            .iter_rows()
        )
        url = f"{lake}/a"
        built = dict(pl.read_delta(url).select("day", "n").iter_rows())
        return all(built.get(d) == n for d, n in truth.items())

    wait_for(settled, timeout=300)
    seconds = time.time() - last
    time.sleep(2.0)  # and nothing changes after it
    return {"commits": commits, "settle": seconds, "wrong": 0 if settled() else 1}


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
        burst_figures = burst(lake, source)
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
        body += "\n\n" + table(
            ["burst", "commits", "settled s after the last", "days wrong"],
            [["2 producers: 50 overwrites + 20 appends", int(burst_figures["commits"]),
              burst_figures["settle"], int(burst_figures["wrong"])]],
        )  # fmt: skip
        body += (
            "\n\nThe burst: two producer processes commit to the source at once (one overwrites 50"
            " days with a partition predicate, the other appends twice to 10 of them); settled ="
            " every consumer day equals the source's row count, timed from the last commit."
        )
        record("Trigger latency: commit to consumer start", body, quick=args.quick)
    finally:
        lf.stop(lake)
        shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
