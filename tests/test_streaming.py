"""A unit bigger than its memory: a LazyFrame output is streamed to its staged file, and a
downstream unit scans that input lazily and streams it on, checks included.

The proof is the peak resident memory (VmHWM) of a fresh process that runs the whole
materialize with the local executor (controller and units in one process, the same
`execute.worker` code a Ray task runs): it must grow far less than the partition's data. The
same process then runs an asset that collects its input, and its peak must grow by at least
the data: the measurement sees materializing when it happens.

No cap is enforced while it runs. Ray's `memory=` only reserves a scheduling resource; an address
space limit (RLIMIT_AS, RLIMIT_DATA) counts what polars' allocator and its threads reserve but
never touch, which is not far below the data even when streaming; cgroups are not ours to create
in a test. The kernel's high-water mark is exact after the fact, so a peak under the bound is what
an RSS cap of that size would have let through. It is VmHWM, reset before each stage (clear_refs),
not ru_maxrss: ru_maxrss survives fork and exec, so a child of a big pytest process starts with
its parent's peak and sees nothing below it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
from polars.io.plugins import register_io_source

import lakeflow as lf
from tests.conftest import ROOT

ROWS = 20_000_000
BATCH = 100_000
SCHEMA = pl.Schema({"a": pl.Int64, "b": pl.Float64, "c": pl.Int64, "d": pl.Int64})
DATA_BYTES = ROWS * 8 * len(SCHEMA)  # 640 MB of uncompressed rows
DAY = lf.DailyPartitions(start="2024-01-01", end="2024-01-02")


def _batch(start: int, stop: int) -> pl.DataFrame:
    """Rows start..stop: 8 bytes a value in memory, long runs of few values on disk (Parquet's
    dictionary and run-length encodings make the files a few MB, so disk speed does not count)."""
    ids = pl.int_range(start, stop, dtype=pl.Int64)
    return pl.select(
        (ids // 1000 % 100).alias("a"),
        (ids // 2000 % 97).cast(pl.Float64).alias("b"),
        (ids // 5000 % 7).alias("c"),
        (ids // 500 % 50).alias("d"),
    )


def generated_rows() -> pl.LazyFrame:
    """ROWS rows generated batch by batch as the engine pulls them: a source that is never whole
    in memory (a LazyFrame over `pl.int_range` would be evaluated at once)."""

    def batches(with_columns, predicate, n_rows, batch_size):
        for start in range(0, ROWS, BATCH):
            frame = _batch(start, min(start + BATCH, ROWS))
            yield frame if with_columns is None else frame.select(with_columns)

    return register_io_source(batches, schema=SCHEMA)


def streaming_pipeline(lake: str) -> lf.Pipeline:
    @lf.asset(partitions=DAY)
    def warmup() -> pl.DataFrame:
        return _batch(0, 10)

    @lf.asset(partitions=DAY)
    def generated() -> pl.LazyFrame:
        return generated_rows()

    @lf.asset(partitions=DAY, checks=[lf.between("b", 0, 2 * 96)])
    def copied(generated: pl.LazyFrame) -> pl.LazyFrame:
        return generated.drop("date").with_columns((pl.col("b") * 2).alias("b"))

    @lf.asset(partitions=DAY)
    def collected(generated: pl.LazyFrame) -> pl.DataFrame:
        return generated.drop("date").collect()

    return lf.Pipeline([warmup, generated, copied, collected], lake=lake, name="streaming")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def measure(lake: str) -> None:
    """In a fresh process: print how far the resident memory (MiB) rose above where it stood
    during the streamed units and during the collecting one, and the tables' rows, as JSON."""
    pipeline = streaming_pipeline(lake)

    def run(select: str) -> float:
        _reset_peak()
        before = _status_mb("VmRSS")
        result = lf.materialize(pipeline, select=select, executor="local", progress=False)
        assert result.ok, result.summary()
        return _status_mb("VmHWM") - before

    figures = {
        "warmup": run("warmup"),  # controller started, event log open, imports done
        "streamed": run("generated,copied"),
        "collected": run("collected"),
        "rows": {
            name: pl.scan_delta(f"{lake}/{name}").select(pl.len()).collect().item()
            for name in ("generated", "copied", "collected")
        },
    }
    print(json.dumps(figures))


def test_a_lazy_unit_bigger_than_memory_is_streamed_end_to_end(tmp_path):
    lake = str(tmp_path / "lake")
    done = subprocess.run(
        [sys.executable, "-c", f"from tests.test_streaming import measure; measure({lake!r})"],
        cwd=ROOT,
        env={**os.environ, "POLARS_MAX_THREADS": "1"},  # as in a Ray worker (control/client.py)
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    data_mb = DATA_BYTES / 2**20
    assert figures["rows"] == {"generated": ROWS, "copied": ROWS, "collected": ROWS}
    assert figures["streamed"] < data_mb / 3, figures  # two units of all the data, never held whole
    # the measurement sees a unit that materializes (its rise is a little under the data: the
    # allocator reuses pages the streamed stage freed, which RSS still counted before it)
    assert figures["collected"] > data_mb * 2 / 3, figures
