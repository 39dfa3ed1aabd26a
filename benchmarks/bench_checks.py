"""What quality gates cost a unit: native polars checks and a Great Expectations suite on one
unit's staged output, at 1e5 and 1e6 rows, beside the cost of writing that output.

    python benchmarks/bench_checks.py
    python benchmarks/bench_checks.py --quick       # seconds; CI runs this
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

import polars as pl  # noqa: E402

import lakeflow as lf  # noqa: E402
from benchmarks.common import record, table  # noqa: E402
from lakeflow.define.checks import CheckEnv, run_checks  # noqa: E402
from lakeflow.define.partitions import Partition  # noqa: E402

NATIVE = [
    lf.not_null("carrier", "origin"),
    lf.between("air_time", 0, 1000),
    lf.between("dep_delay", -120, 1800),
    lf.in_set("origin", ["EWR", "JFK", "LGA"]),
    lf.row_count(min=1),
]
SUITE = {
    "name": "bench",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "carrier"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "origin"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "air_time", "min_value": 0, "max_value": 1000},
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "dep_delay", "min_value": -120, "max_value": 1800},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "origin", "value_set": ["EWR", "JFK", "LGA"]},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    ],
}


def frame(rows: int) -> pl.DataFrame:
    n = pl.int_range(0, rows, eager=True)
    return pl.DataFrame({
        "carrier": pl.Series(["AA", "UA", "DL", "B6"])[n % 4],
        "origin": pl.Series(["EWR", "JFK", "LGA"])[n % 3],
        "flight": n % 5000,
        "air_time": ((n * 37) % 600 + 20).cast(pl.Float64),
        "dep_delay": ((n * 13) % 200 - 20).cast(pl.Float64),
        "distance": ((n * 7) % 2500 + 100).cast(pl.Float64),
    })  # fmt: skip


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small frames, nothing recorded")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [1_000, 10_000] if args.quick else [100_000, 1_000_000]
    repeats = 2 if args.quick else args.repeats
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-checks-"))
    env = CheckEnv("bench", Partition("2024-01-01"))
    from lakeflow.define.gx import GxSuite

    suite = GxSuite("gx:bench", "error", SUITE)
    started = time.perf_counter()
    run_checks([suite], pl.LazyFrame(frame(10)), env)  # first use: import GX, build the context
    gx_first = time.perf_counter() - started
    rows = []
    try:
        for size in sizes:
            data = frame(size)
            path = work / f"unit-{size}.parquet"
            write = median_seconds(
                lambda d=data, p=path: d.write_parquet(p, compression="zstd"), repeats
            )
            staged = pl.scan_parquet(path)
            native = median_seconds(lambda s=staged: run_checks(NATIVE, s, env), repeats)
            great = median_seconds(
                lambda s=staged: run_checks([suite], s, env), max(1, repeats // 2)
            )
            results = run_checks(NATIVE, staged, env) + run_checks([suite], staged, env)
            assert all(r.status == "passed" for r in results), [
                r for r in results if r.status != "passed"
            ]
            rows.append(
                [
                    f"{size:,}",
                    write * 1000,
                    native * 1000,
                    native / write,
                    great * 1000,
                    great / write,
                    great / native,
                ]
            )
        body = table(
            [
                "rows a unit",
                "write ms",
                "native checks ms",
                "native / write",
                "GX suite ms",
                "GX / write",
                "GX / native",
            ],
            rows,
        )
        body += (
            f"\n\n{len(NATIVE)} native checks (one pass for the row checks) vs a {len(SUITE['expectations'])}-expectation "
            f"GX suite on the same staged Parquet file; medians of {repeats} runs. First GX use in a process "
            f"(import + context): {gx_first:.1f} s, paid once per Ray worker."
        )
        record("Check cost per unit", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
