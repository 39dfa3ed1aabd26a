"""Data throughput: TPC-H lineitem (tpchgen-cli, Parquet) landed as one file per ship date
(~2,500 days at any scale; with --hourly one per ship date and synthetic hour, ~61,000),
backfilled by lakeflow into a Delta asset partitioned the same way (and with --marts its Q1
revenue mart at the same grain plus a monthly roll-up of lineitem), against the same
read-partition-write done by raw engines over the same files, in one run, alternating when
repeated: polars `sink_delta` (the same output, a Delta table), a polars Parquet sink and DuckDB's
`COPY ... PARTITION_BY` (Parquet by day, no transaction log, no statistics: lower bounds).

lakeflow is timed in-run (its controller already started, as a long-lived one would be) and as a
whole `lakeflow backfill` command (its own Ray started and stopped: what a one-off job pays). Peak
resident memory is each process's high-water mark (VmHWM) over the run: the raw engine's process
or lakeflow's driver, each Ray worker (the largest shown) and the lake's controller. Delta
versions count each table's commits. The raw engines run in a child process capped at 80% of the
free memory: their partitioned writers hold every partition open, so their memory grows with the
data and the partitions (SF 1 daily: 1.5-4 GB), and one that passes the cap is reported as not
finished instead of waking the kernel's OOM killer; `--raw` picks which run.

With --s3 every lakeflow run and the sink_delta run are repeated on a lake in a local S3 server
(moto_server on 127.0.0.1, restarted empty for each run): object-store requests and their latency
on staging, listing and commits, without a network's bandwidth limits. moto is a Python server:
it spends about a core of its own on ~2,500 small units a minute, shared with the workers.

    python benchmarks/bench_tpch.py                          # SF 1, daily
    python benchmarks/bench_tpch.py --scale 10 --marts       # where the disk allows
    python benchmarks/bench_tpch.py --scale 10 --marts --s3 --raw none   # disk and S3, lakeflow
    python benchmarks/bench_tpch.py --scale 10 --s3 --raw sink_delta --commands disk
    python benchmarks/bench_tpch.py --scale 10 --hourly --marts --raw parquet   # ~61,000 units
    python benchmarks/bench_tpch.py --scale 30 --marts --raw duckdb      # landed in 15 parts
    python benchmarks/bench_tpch.py --quick                  # one month of SF 0.1; CI runs this
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import duckdb  # noqa: E402
import polars as pl  # noqa: E402
import psutil  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import Timer, record, table  # noqa: E402
from benchmarks.shape import warmup_pipeline  # noqa: E402
from benchmarks.tpch import (  # noqa: E402
    HOUR,
    hourly_landing,
    is_hourly,
    landed_keys,
    landing,
    pipeline,
)
from tests.moto import MotoServer  # noqa: E402

BIN = Path(sys.executable).parent
MIB = 2**20


# -- what a run is measured by ------------------------------------------------------------------
@dataclass
class Figures:
    """One kind of run over the rounds: its times and the peaks and versions it left."""

    run: str
    store: str
    seconds: list[float] = field(default_factory=list)
    process_mib: float | None = None  # the raw engine's process, or lakeflow's driver
    worker_mib: float | None = None  # the largest Ray worker
    workers: int = 0
    controller_mib: float | None = None
    versions: str = ""
    errors: list[str] = field(default_factory=list)  # rounds it did not finish

    def keep_peaks(self, peaks: Peaks) -> None:
        self.process_mib = max(self.process_mib or 0, peaks.process_mib)
        if peaks.workers:
            self.worker_mib = max(self.worker_mib or 0, max(peaks.workers))
            self.workers = max(self.workers, len(peaks.workers))
        if peaks.controllers:
            self.controller_mib = max(self.controller_mib or 0, max(peaks.controllers))


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # the raylet's helpers, not workers


def _ray_processes() -> dict[int, str]:
    """This process's Ray workers and actors by pid, with their titles: the descendants (under
    the raylet it started) whose title Ray set to `ray::...`, but its agents. Another cluster's
    are not ours to read."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            title = (child.cmdline() or [""])[0]
        except psutil.Error:
            continue  # it exited meanwhile
        if title.startswith("ray::") and title not in RAY_AGENTS:
            found[child.pid] = title
    return found


def _reset_peak(pid: int) -> None:
    """Reset a process's VmHWM to its current RSS (Linux: 5 > /proc/PID/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # it exited meanwhile; its peak is not read either


def _peak_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Peaks:
    """Peak RSS (MiB) during a block, of this process, its Ray workers and its controllers."""

    process_mib: float = 0.0
    workers: list[float] = field(default_factory=list)
    controllers: list[float] = field(default_factory=list)


@contextmanager
def peaks() -> Iterator[Peaks]:
    """The peaks of the block, filled in when it ends."""
    found = Peaks()
    for pid in [os.getpid(), *_ray_processes()]:
        _reset_peak(pid)
    yield found
    found.process_mib = _peak_mib(os.getpid()) or 0.0
    for pid, title in _ray_processes().items():
        peak = _peak_mib(pid)
        if peak is not None:
            (found.controllers if "ControllerActor" in title else found.workers).append(peak)


# -- the data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Landing:
    """The landed files a run reads, and what they hold."""

    folder: Path
    keys: list[str]  # one per file, in order
    rows: int
    bytes: int

    @property
    def files(self) -> list[str]:
        return [str(self.folder / f"{key}.parquet") for key in self.keys]

    @property
    def hourly(self) -> bool:
        return is_hourly(self.keys)

    @property
    def column(self) -> str:
        return "hour" if self.hourly else "date"

    @property
    def span(self) -> str:
        return f"{self.keys[0]}..{self.keys[-1]}"


def open_landing(scale: float, hourly: bool, days: int | None) -> Landing:
    folder = hourly_landing(scale) if hourly else landing(scale)
    keys = landed_keys(folder)
    if days:
        last = sorted({key[:10] for key in keys})[days - 1]
        keys = [key for key in keys if key[:10] <= last]
    size = sum((folder / f"{key}.parquet").stat().st_size for key in keys)
    rows = pl.scan_parquet([str(folder / f"{k}.parquet") for k in keys]).select(pl.len())
    return Landing(folder, keys, rows.collect().item(), size)


def keyed(data: Landing) -> pl.LazyFrame:
    """The landed rows with the partition key lakeflow gives them (`date`, or `hour`)."""
    day = pl.col("l_shipdate").cast(pl.String)
    key = day + "T" + HOUR.cast(pl.String).str.zfill(2) if data.hourly else day
    return pl.scan_parquet(data.files).with_columns(key.alias(data.column))


# -- the runs -----------------------------------------------------------------------------------
def raw_delta(data: Landing, out: str, options: dict[str, str] | None) -> float:
    with Timer() as timer:
        keyed(data).sink_delta(
            out, storage_options=options, delta_write_options={"partition_by": [data.column]}
        )
    return timer.seconds


def raw_parquet(data: Landing, out: str, options: None) -> float:
    with Timer() as timer:
        keyed(data).sink_parquet(
            pl.PartitionBy(out, key=data.column, include_key=False), mkdir=True
        )
    return timer.seconds


def raw_duckdb(data: Landing, out: str, options: None) -> float:
    day = "strftime(l_shipdate, '%Y-%m-%d')"
    hour = f"{day} || 'T' || lpad(cast(l_orderkey % 24 as varchar), 2, '0')"
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    config = {"temp_directory": str(Path(out).parent / "duckdb-spill")}  # not ./.tmp
    if limit != resource.RLIM_INFINITY:
        config["memory_limit"] = f"{limit // 2 // MIB}MiB"  # it spills before the cap
    with Timer() as timer, duckdb.connect(config=config) as db:
        db.execute("set enable_progress_bar = false")
        db.execute(
            f"copy (select *, {hour if data.hourly else day} as {data.column} "
            f"from read_parquet({data.files!r})) to '{out}' "
            f"(format parquet, partition_by ({data.column}))"
        )
    return timer.seconds


RAW = {"sink_delta": raw_delta, "parquet": raw_parquet, "duckdb": raw_duckdb}
# (name, engine, the stores it runs on): DuckDB's S3 support (httpfs) is not installed either
RAW_RUNS = [
    ("raw polars: sink_delta, by {column}", "sink_delta", ("disk", "s3")),
    ("raw polars: Parquet sink, by {column} (no log)", "parquet", ("disk",)),
    ("raw DuckDB: COPY PARTITION_BY {column} (no log)", "duckdb", ("disk",)),
]


def raw_in_child(engine: str, data: Landing, out: str, options: dict[str, str] | None) -> dict:
    """A raw run in a child process whose address space is capped at 80% of the memory free now:
    these engines' partitioned writers keep every partition open, so their memory grows with
    the data (SF 1 daily: 1.5-4 GB), and past the machine's memory the kernel's OOM killer could
    pick any process. Returns {"seconds", "peak_mib"} or {"error"}."""
    cap = int(psutil.virtual_memory().available * 0.8)
    job = {"engine": engine, "folder": str(data.folder), "keys": data.keys, "out": out}
    done = subprocess.run(
        [sys.executable, "-c", "from benchmarks.bench_tpch import raw_child; raw_child()"],
        input=json.dumps({**job, "options": options}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "error": f"failed under a {cap / 2**30:.0f} GiB cap (exit {done.returncode}): {last}"
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def raw_child() -> None:
    """The body of `raw_in_child`'s process: the job as JSON on stdin, figures on stdout."""
    job = json.load(sys.stdin)
    data = Landing(Path(job["folder"]), job["keys"], 0, 0)
    seconds = RAW[job["engine"]](data, job["out"], job["options"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak}))


def delta_versions(table_url: str, options: dict[str, str] | None) -> int:
    return DeltaTable(table_url, storage_options=options).version() + 1


def versions(lake: str, options: dict[str, str] | None, assets: list[str]) -> str:
    """Each table's Delta versions (commits), e.g. `lineitem 2, daily_revenue 2`."""
    return ", ".join(f"{name} {delta_versions(f'{lake}/{name}', options)}" for name in assets)


def assets_of(select: str, data: Landing) -> list[str]:
    mart = "hourly_revenue" if data.hourly else "daily_revenue"
    return ["lineitem", mart, "monthly_revenue"] if select == "*" else [select]


def lakeflow_in_run(
    data: Landing, lake: str, options: dict[str, str] | None, select: str, address: str | None,
    figures: Figures,
) -> None:  # fmt: skip
    lf.materialize(warmup_pipeline(lake), storage_options=options, address=address)
    try:
        with peaks() as seen, Timer() as timer:
            result = lf.backfill(
                pipeline(data.folder, lake), select=select, partitions=data.span,
                storage_options=options, address=address, progress=False,
            )  # fmt: skip
        assert result.ok, result.summary()
        figures.seconds.append(timer.seconds)
        figures.keep_peaks(seen)
        published = pl.scan_delta(f"{lake}/lineitem", storage_options=options)
        rows = published.select(pl.len()).collect().item()
        assert rows == data.rows, f"lineitem holds {rows:,} rows, {data.rows:,} landed"
        figures.versions = versions(lake, options, assets_of(select, data))
    finally:
        lf.stop(lake, storage_options=options)


def lakeflow_command(
    data: Landing, lake: str, options: dict[str, str] | None, select: str
) -> float:
    """A whole `lakeflow backfill` from a shell: start-up, its own Ray, the run, the shutdown."""
    env = {
        **os.environ, **(options or {}), "TPCH_LANDING": str(data.folder),
        "LAKEFLOW_NO_SERVICE": "1",
    }  # fmt: skip
    args = [
        str(BIN / "lakeflow"), "backfill", str(Path(ROOT) / "benchmarks" / "tpch_pipeline.py"),
        "--lake", lake, "--select", select, "--partitions", data.span, "--no-progress",
    ]  # fmt: skip
    with Timer() as timer:
        done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return timer.seconds


@contextmanager
def store(kind: str, work: Path, name: str) -> Iterator[tuple[str, dict[str, str] | None]]:
    """(location, storage options) of a fresh, empty place to write: a folder, or a bucket of a
    moto server started for it alone (and stopped after, with what it held)."""
    if kind == "disk":
        yield str(work / name), None
        shutil.rmtree(work / name, ignore_errors=True)
        return
    server = MotoServer()
    server.start()
    try:
        yield f"s3://{server.create_bucket()}/{name}", server.options
    finally:
        server.stop()


def one_round(
    data: Landing, work: Path, stores: list[str], engines: list[str], marts: bool,
    address: str | None, results: dict[tuple[str, str], Figures], commands: list[str],
) -> None:  # fmt: skip
    """Every run once, each into a fresh, empty place."""

    def figures(run: str, kind: str) -> Figures:
        return results.setdefault((run, kind), Figures(run, kind))

    selects = ["lineitem", "*"] if marts else ["lineitem"]
    for kind in stores:
        for name, engine, where in RAW_RUNS:
            if kind not in where or engine not in engines:
                continue
            done = figures(name.format(column=data.column), kind)
            with store(kind, work, "raw") as (out, options):
                outcome = raw_in_child(engine, data, out, options)
                if "error" in outcome:
                    done.errors.append(outcome["error"])
                    continue
                done.seconds.append(outcome["seconds"])
                done.process_mib = max(done.process_mib or 0, outcome["peak_mib"])
                if engine == "sink_delta":
                    done.versions = str(delta_versions(out, options))
        for select in selects:
            run = "lakeflow backfill: " + " + ".join(assets_of(select, data))
            with store(kind, work, "lake") as (lake, options):
                lakeflow_in_run(data, lake, options, select, address, figures(run, kind))
        if kind not in commands:
            continue
        run = "lakeflow backfill command (start-up included): " + " + ".join(
            assets_of(selects[-1], data)
        )
        with store(kind, work, "lake") as (lake, options):
            figures(run, kind).seconds.append(lakeflow_command(data, lake, options, selects[-1]))


def report(results: dict[tuple[str, str], Figures], data: Landing) -> str:
    def mib(value: float | None, count: int = 0) -> str:
        if value is None:
            return "—"
        return f"{value:,.0f}" + (f" (of {count})" if count else "")

    baseline = {
        kind: min(f.seconds)
        for (run, kind), f in results.items()
        if run.startswith("raw polars: sink_delta") and f.seconds
    }
    rows = []
    for figures in results.values():
        if not figures.seconds:
            rows.append([figures.run, figures.store, "did not finish", *["—"] * 7])
            continue
        best = min(figures.seconds)
        against = baseline[figures.store] / best if figures.store in baseline else "—"
        rows.append([
            figures.run, figures.store, best, data.bytes / 1e6 / best, data.rows / best, against,
            mib(figures.process_mib), mib(figures.worker_mib, figures.workers),
            mib(figures.controller_mib), figures.versions or "—",
        ])  # fmt: skip
    return table(
        [
            "run", "store", "seconds", "MB/s (landed Parquet)", "rows/s", "vs sink_delta (same store)",
            "peak RSS MiB: engine or driver", "per Ray worker (largest of n)", "controller",
            "Delta versions",
        ],
        rows,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="SF 0.1, one month, nothing recorded")
    parser.add_argument("--hourly", action="store_true", help="hourly partitions (synthetic hour)")
    parser.add_argument("--marts", action="store_true", help="also the Q1 mart and monthly roll-up")
    parser.add_argument("--s3", action="store_true", help="also on a local S3 server (moto)")
    parser.add_argument(
        "--commands",
        default="disk,s3",
        help="the stores whose whole-command run is timed too, a comma list, or none",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each run is repeated")
    parser.add_argument(
        "--raw",
        default=",".join(RAW),
        help=f"the raw engines to run, a comma list of {', '.join(RAW)}, or none (default: all)",
    )
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    args = parser.parse_args()
    engines = [] if args.raw == "none" else args.raw.split(",")
    if unknown := set(engines) - set(RAW):
        parser.error(f"--raw: no engine {', '.join(sorted(unknown))} (engines: {', '.join(RAW)})")
    scale = 0.1 if args.quick else args.scale
    data = open_landing(scale, args.hourly, days=31 if args.quick else None)
    stores = ["disk", "s3"] if args.s3 else ["disk"]
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-tpch-"))
    lf.connect(args.address, log_to_driver=False)
    results: dict[tuple[str, str], Figures] = {}
    started, load = time.perf_counter(), os.getloadavg()[0]
    try:
        for _ in range(args.rounds):
            one_round(
                data, work, stores, engines, args.marts, args.address, results,
                [] if args.commands == "none" else args.commands.split(","),
            )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()
    times = "; ".join(
        f"{f.run} ({f.store}): {' / '.join([*(f'{s:.2f}' for s in f.seconds), *f.errors])}"
        for f in results.values()
    )
    grain = (
        "ship date and synthetic hour (l_orderkey % 24: lineitem has no time of day)"
        if data.hourly
        else "ship date"
    )
    body = report(results, data) + (
        f"\n\nTPC-H SF {scale:g} lineitem: {data.rows:,} rows in {len(data.keys):,} Parquet files "
        f"(one per {grain}), {data.bytes / 1e6:,.0f} MB. Each lakeflow unit reads one file and "
        f"writes it as that partition (staged, audited, group-committed); the mart reads the "
        f"published partition, the monthly roll-up a month of them. MB/s and rows/s are of the "
        f"landed data whatever the run writes. polars uses one thread per Ray worker; the raw "
        f"runs use every core, each in a child process capped at 80% of the free memory. "
        f"Peak RSS: the raw engine's process, or lakeflow's driver (this process); the largest "
        f"Ray worker and the lake's controller over the run. DuckDB writes no Delta here (its delta extension is not "
        f"installed, and is fetched from DuckDB's repository on first use), so it writes hive "
        f"Parquet like the polars Parquet sink. Best of {args.rounds} round(s), alternating; all "
        f"times (s): {times}. Whole run {time.perf_counter() - started:,.0f} s; load average "
        f"{load:.1f} at its start, {os.getloadavg()[0]:.1f} at its end."
    )
    record(
        f"Data throughput: TPC-H lineitem backfill, SF {scale:g}"
        + (", hourly" if data.hourly else "")
        + (", local disk and S3 (moto)" if args.s3 else ""),
        body,
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
