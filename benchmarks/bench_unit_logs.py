"""What capturing units' output costs: the capture around a silent unit, and runs of N tiny units
(local executor, in this process) that print nothing, one line, or more than a unit keeps (each
such attempt adds up to 64 KiB to `_lakeflow/logs` and a small `logs` event to the event log).

    python benchmarks/bench_unit_logs.py            # 1,000 units per case; appends to RESULTS.md
    python benchmarks/bench_unit_logs.py --quick    # 200 units, prints only
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)

import polars as pl  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import Timer, record, table  # noqa: E402
from lakeflow.execute.capture import capture  # noqa: E402

CASES = {"silent": 0, "one line": 1, "100 kB (cut to 64 KiB)": 1000}  # lines of 100 chars


def chatty_pipeline(units: int, lines: int, lake: str) -> lf.Pipeline:
    end = datetime.datetime(2000, 1, 1) + datetime.timedelta(hours=units)
    hours = lf.HourlyPartitions(start="2000-01-01T00", end=end.strftime("%Y-%m-%dT%H"))

    def tiny(ctx: lf.Context) -> pl.DataFrame:
        for i in range(lines):
            print(f"{i:09d} " + os.urandom(44).hex())  # as incompressible as real logs, or more
        return pl.DataFrame({"n": [1]})

    return lf.Pipeline(
        [lf.asset(tiny, name="tiny", partitions=hours, retry=1)], lake=lake, name="tiny"
    )


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    units = 200 if args.quick else 1000

    rounds = 20_000
    with Timer() as empty:
        for _ in range(rounds):
            with capture():
                pass
    rows = []
    for name, lines in [("warm-up", 0), *CASES.items()]:
        root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-logs-"))
        try:
            pipeline = chatty_pipeline(units, lines, str(root / "lake"))
            with Timer() as run:
                result = lf.materialize(pipeline, executor="local")
            assert result.ok and result.counts() == {"published": units}, result.counts()
            internal = root / "lake" / "_lakeflow"
            with Timer() as status:
                lf.status(pipeline)
            if name != "warm-up":
                rows.append([name, units, run.seconds, units / run.seconds, status.seconds,
                             _size(internal / "events") / 2**20, _size(internal / "logs") / 2**20])  # fmt: skip
        finally:
            lf.stop(str(root / "lake"))
            shutil.rmtree(root, ignore_errors=True)
    body = (
        f"capture() around a silent unit: {empty.seconds / rounds * 1e6:.1f} µs\n\n"
        + table(
            ["units print", "units", "run s", "units/s", "status s", "events MiB", "logs MiB"], rows
        )
        + "\n\nLocal executor in this process (threads), one-shot `lf.materialize` each (its controller"
        " start included); a unit printing more than 64 KiB keeps its last 64 KiB. `status s`: "
        "`lf.status` after the run (it reads the event log, not `_lakeflow/logs`)."
    )
    record("Unit logs: capture cost and event-log size", body, quick=args.quick)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
