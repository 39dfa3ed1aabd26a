"""The soak: the stress test of the trigger + publish path (tests/stress.py) over many seeds.
Each seed is a schedule of outside commits and landing files from producer processes and
controller faults, checked against a model of the sources' final state and the files on disk. Prints each seed's outcome, then how many seeds lost
updates (missing rows), doubled publishes, mismatched the model, and the seeds that failed.

    python benchmarks/bench_soak.py                      # seeds 0..199, full-size schedules
    python benchmarks/bench_soak.py --seeds 20 --start 1000
    python benchmarks/bench_soak.py --quick              # 3 short seeds, nothing recorded
    python benchmarks/bench_soak.py --seeds 1000 --minutes 30   # as many seeds as 30 minutes allow
    LAKEFLOW_STRESS_SEED=N LAKEFLOW_STRESS_FULL=1 pytest tests/test_stress.py   # replay a seed
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_task_events_max_num_task_in_gcs", "5000")

import lakeflow as lf  # noqa: E402
from benchmarks.common import record, table  # noqa: E402
from tests.stress import run_seed  # noqa: E402

# violation kinds -> the column they count in
LOST = ("missing", "missing, written before up only", "quiescence")
DOUBLED = ("double publish", "duplicate rows", "events")
MISMATCH = ("mismatch", "extra", "status", "attempts", "half file", "in-progress file")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--quick", action="store_true", help="3 short seeds, nothing recorded")
    parser.add_argument(
        "--short", action="store_true", help="short (CI-size) schedules: more seeds an hour"
    )
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to wait to settle")
    parser.add_argument("--keep", action="store_true", help="keep the lakes of failed seeds")
    parser.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    parser.add_argument(
        "--minutes", type=float, help="start no seed after this many minutes; record what ran"
    )
    args = parser.parse_args()
    seeds = list(range(args.start, args.start + (3 if args.quick else args.seeds)))
    work = Path(tempfile.mkdtemp(prefix="lakeflow-soak-"))
    lf.connect(args.address, log_to_driver=False)
    began = time.monotonic()
    failed: list[int] = []
    kinds: Counter = Counter()
    columns = {"lost": Counter(), "doubled": Counter(), "mismatch": Counter()}
    ran: list[int] = []
    try:
        for seed in seeds:
            if args.minutes is not None and time.monotonic() - began > 60 * args.minutes:
                break
            ran.append(seed)
            workdir = work / f"seed-{seed}"
            lake = str(workdir / "lake")
            try:
                outcome = run_seed(seed, workdir=workdir, lake=lake, quick=args.quick or args.short,
                                   settle_timeout=args.settle, log=lambda _: None)  # fmt: skip
            finally:
                lf.stop(lake)
            print(outcome.summary(), flush=True)
            if outcome.ok:
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
                continue
            failed.append(seed)
            print(outcome.report(examples=3), flush=True)
            for kind, count in outcome.counts().items():
                kinds[kind] += 1
                for name, group in (("lost", LOST), ("doubled", DOUBLED), ("mismatch", MISMATCH)):
                    if kind in group:
                        columns[name][seed] += count
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
        rows = [
            ["seeds run", len(ran)],
            ["seeds failed", len(failed)],
            ["seeds with lost updates (missing rows, never settled)", len(columns["lost"])],
            ["seeds with doubled publishes or event mismatches", len(columns["doubled"])],
            ["seeds with rows unequal to the model, stale or over-retried", len(columns["mismatch"])],
        ]  # fmt: skip
        rows += [[f"  seeds with '{k}'", n] for k, n in sorted(kinds.items())]
        body = table(["outcome", "count"], rows)
        size = "short (CI-size)" if args.quick or args.short else "full-size"
        body += f"\n\nSeeds {ran[0]}..{ran[-1]}, {size} schedules." if ran else ""
        body += f" Failed seeds: {', '.join(map(str, failed)) or 'none'}."
        body += f" {time.monotonic() - began:.0f} s in all; replay one with `LAKEFLOW_STRESS_SEED=N{'' if args.quick or args.short else ' LAKEFLOW_STRESS_FULL=1'} pytest tests/test_stress.py`."
        record(
            "Soak: randomized trigger + publish schedules against a model", body, quick=args.quick
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        import ray

        ray.shutdown()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
