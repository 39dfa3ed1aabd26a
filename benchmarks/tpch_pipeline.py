"""The TPC-H pipeline as a file the `lakeflow` command loads: bench_tpch.py times a whole
`lakeflow backfill benchmarks/tpch_pipeline.py --lake ...` with it. The landing (daily or hourly)
comes from $TPCH_LANDING; an S3 lake's endpoint and keys from the AWS_* variables, as for any
lake."""

import os
from pathlib import Path

from benchmarks.tpch import pipeline as tpch_pipeline

pipeline = tpch_pipeline(Path(os.environ["TPCH_LANDING"]), lake="./lake")
