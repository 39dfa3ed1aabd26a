"""Several Ray nodes: the pipeline-shape work (3 assets x N daily partitions) on a cluster of one
head (no task CPUs, the controller) and 1, 2, 3 worker nodes of one CPU each, started with
cluster/local.sh on this machine, one run per size. This machine has 2 cores: three one-CPU
nodes oversubscribe it, so the figures show what the nodes cost, not more hardware.

    python benchmarks/bench_nodes.py                 # 1, 2, 3 workers, 365 days
    python benchmarks/bench_nodes.py --quick         # 1 worker, 5 days; nothing recorded
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = "6397"
ENV = {
    "LAKEFLOW_RAY_PORT": PORT,
    "LAKEFLOW_DASHBOARD_PORT": "8277",
    "LAKEFLOW_CLIENT_PORT": "9007",  # below Ray's worker port range (10002-19999)
    "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    "PYTHONPATH": str(ROOT),
}


def cluster(*args: str) -> None:
    subprocess.run(
        [str(ROOT / "cluster" / "local.sh"), *args],
        env={**os.environ, **ENV},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def child(days: int) -> None:
    """In a fresh process attached to the cluster: one warm lakeflow run; prints its seconds."""
    import lakeflow as lf
    from benchmarks.bench_pipeline import run_lakeflow

    address = f"127.0.0.1:{PORT}"
    lf.connect(address, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-nodes-"))
    seconds = run_lakeflow(str(work / "lake"), days, "ray", address)
    lf.stop(str(work / "lake"))
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.days)
    from benchmarks.common import record, table

    days = 5 if args.quick else args.days
    sizes = [1] if args.quick else [int(w) for w in args.workers.split(",")]
    rows = []
    for workers in sizes:
        cluster("up", str(workers))
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--days", str(days)],
                env={**os.environ, **ENV},
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            cluster("down")
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        units = 3 * days
        rows.append([workers, units, seconds, units / seconds])
    base = rows[0][3]
    for row in rows:
        row.append(row[3] / base)
    body = table(["worker nodes", "units", "seconds", "units/s", "vs 1 node"], rows)
    body += (
        "\n\nA head with no task CPUs (it hosts the controller) and N worker nodes of 1 CPU each, "
        "all `ray start` processes on this 2-core machine (cluster/local.sh); the same 3-asset "
        "daily work as the pipeline-shape benchmark, controller warm. Past 2 nodes the cores are "
        "oversubscribed: the figures show that several nodes work and what they cost here, not "
        "scaling on real hardware."
    )
    record("Several nodes: pipeline shape on 1-3 worker nodes", body, quick=args.quick)


if __name__ == "__main__":
    main()
