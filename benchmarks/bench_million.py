"""A million real units: one hourly table of 1,000,000 one-row partitions (114 years), built by
one backfill on Ray and committed, not only planned. While it runs, a row every `--every` units
(and one at 10,000): the window's units/s and controller CPU a unit, the commits of the window
(their seconds, from the run's `table_committed` events), the table's files and Delta versions
(followed from its log as any reader would), the newest checkpoint's size and the controller's
memory. Does a unit cost more as the table grows?

    python benchmarks/bench_million.py                       # 1,000,000 units, a row every 50,000
    python benchmarks/bench_million.py --units 200000 --every 20000
    python benchmarks/bench_million.py --quick               # 2,000 units; CI runs this
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

import lakeflow as lf  # noqa: E402
from benchmarks.bench_control_plane import tiny_pipeline  # noqa: E402  (sets Ray's environment)
from benchmarks.common import Timer, process_mib, record, table  # noqa: E402
from lakeflow.lake import Lake  # noqa: E402
from lakeflow.lake.log import TableState  # noqa: E402

FIRST_MARK = 10_000  # a row here too: the "at 10k" of the control-plane figures


@dataclass(frozen=True)
class Sample:
    """The run as seen at one moment."""

    seconds: float  # since the backfill was submitted
    published: int
    cpu_seconds: float  # the controller process's CPU time so far
    version: int  # the table's newest version
    files: int  # files in the table at that version
    checkpoint_version: int  # of the newest checkpoint, -1 none
    checkpoint_mib: float
    rss_mib: float  # the controller's resident memory now
    load: float  # the machine's 1-minute load average


def marks(units: int, every: int) -> list[int]:
    """The published counts at which a row is taken: 10,000 (when the run is bigger), every
    `every` units, and the end."""
    points = {units, *range(every, units, every)}
    if units > FIRST_MARK:
        points.add(FIRST_MARK)
    return sorted(points)


def checkpoint(table_url: str) -> tuple[int, float]:
    """The newest checkpoint of a table: its version and its size on disk in MiB (-1, 0.0 if
    none yet)."""
    log = Path(table_url) / "_delta_log"
    try:
        version = int(json.loads((log / "_last_checkpoint").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return -1, 0.0
    size = sum(p.stat().st_size for p in log.glob(f"{version:020d}.checkpoint*.parquet"))
    return version, size / 2**20


def sample(began: float, published: int, actor, pid: int, lake: Lake, state: TableState) -> Sample:
    import ray

    cpu = ray.get(actor.ping.remote())["cpu_seconds"]
    state.refresh(lake)  # the new commits only: a reader following the table
    files = sum(len(paths) for paths in state.files.values())
    version, mib = checkpoint(state.url)
    return Sample(
        time.perf_counter() - began, published, cpu, state.version, files, version, mib,
        process_mib(pid, "VmRSS"), os.getloadavg()[0],
    )  # fmt: skip


def commits_of(lake: Lake, run_id: str) -> list[tuple[int, float, int]]:
    """(version, seconds, units) of each group commit of the run, oldest first."""
    events = lf.read_events(lake, run_id=run_id, kinds=["table_committed"])
    units = [json.loads(d)["units"] for d in events["detail"].to_list()]
    return list(zip(events["version"].to_list(), events["seconds"].to_list(), units, strict=True))


def run(units: int, every: int, lake_dir: Path, address: str | None) -> tuple[list[list], str]:
    """Backfill `units` tiny partitions, sampling as they are published; the rows of the table
    and a summary line."""
    import ray

    from lakeflow.control.client import NAMESPACE, controller_name

    lake = Lake(str(lake_dir))
    lf.backfill(tiny_pipeline(100, lake.url, name="warmup"), lake=lake.url, address=address)
    actor = ray.get_actor(controller_name(lake), namespace=NAMESPACE)
    pid = ray.get(actor.ping.remote())["pid"]
    pipeline = tiny_pipeline(units, lake.url)
    state = TableState.load(lake, lake.table_url("tiny"), column="hour")
    with Timer() as timer:
        began = time.perf_counter()
        start = sample(began, 0, actor, pid, lake, state)
        handle = lf.backfill(pipeline, lake=lake.url, address=address, wait=False)
        samples, pending = [start], marks(units, every)
        while pending:
            progress = handle.progress()
            if progress["published"] >= pending[0]:
                samples.append(sample(began, progress["published"], actor, pid, lake, state))
                print(samples[-1], file=sys.stderr, flush=True)  # to follow a long run
                pending = [m for m in pending if m > progress["published"]]
            elif progress["done"]:
                raise SystemExit(f"the backfill ended early: {progress}")
            else:
                time.sleep(0.2)
        result = handle.wait()
    assert result.ok, result.summary()
    commits = commits_of(lake, handle.id)
    peak = process_mib(pid)
    lf.stop(lake.url)
    rows = []
    for before, now in itertools.pairwise(samples):
        done = now.published - before.published
        window = [s for v, s, _ in commits if before.version < v <= now.version]
        rows.append([
            f"{now.published:,}", now.seconds, done / (now.seconds - before.seconds),
            (now.cpu_seconds - before.cpu_seconds) / done * 1e3,
            statistics.median(window) if window else float("nan"),
            max(window) if window else float("nan"), len(window), f"{now.files:,}",
            now.version, now.checkpoint_version, now.checkpoint_mib, now.rss_mib, now.load,
        ])  # fmt: skip
    end = samples[-1]
    summary = (
        f"{units:,} units in {timer.seconds:,.0f} s: {units / timer.seconds:,.0f} units/s overall, "
        f"{(end.cpu_seconds - start.cpu_seconds) / units * 1e3:.3f} ms of controller CPU a unit, "
        f"{len(commits)} group commits (median {statistics.median(s for _, s, _ in commits):.3f} s, "
        f"most {max(s for _, s, _ in commits):.3f} s), controller peak RSS {peak:,.0f} MiB."
    )
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=50_000, help="units between two rows")
    parser.add_argument("--quick", action="store_true", help="2,000 units, nothing recorded")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument("--work", help="folder for the lake (default: a temporary one)")
    args = parser.parse_args()
    units, every = (2_000, 500) if args.quick else (args.units, args.every)
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-million-", dir=args.work))
    lf.connect(args.address, log_to_driver=False)
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    try:
        rows, summary = run(units, every, work / "lake", args.address)
        body = table(
            [
                "units published", "s since start", "units/s (window)",
                "controller CPU ms a unit (window)", "commit s (median)", "commit s (most)",
                "commits", "table files", "Delta version", "checkpoint at version",
                "checkpoint MiB", "controller RSS MiB", "load (1 min)",
            ],
            rows,
        )  # fmt: skip
        body += (
            f"\n\n{summary}\n\nOne backfill of one hourly asset whose every unit writes a one-row "
            f"partition: planned, dispatched in batches, staged as Parquet, group-committed to "
            f"Delta with lakeflow's metadata and recorded in the event log, on a local Ray of "
            f"{cpus} CPUs that the controller shares with the workers. A row per window: its "
            f"units/s and the controller process's CPU time a unit over it; its group commits' "
            f"seconds (the publish: log refresh, snapshot update, Delta commit, checkpoint when "
            f"one is due); the table as a reader following its log sees it at the window's end; "
            f"the newest checkpoint; the controller's resident memory; the machine's load "
            f"(other processes share it)."
        )
        record(
            f"Units at scale: one table of {units:,} partitions, one backfill",
            body,
            quick=args.quick,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
