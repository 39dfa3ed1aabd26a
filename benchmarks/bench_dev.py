"""Commands attached to a running `lakeflow dev` service, against the same commands one-shot.

A service is started on a fresh lake (`lakeflow dev --detach`); then, each a new date so that
every unit is fresh work:
- `lakeflow materialize` of one fresh unit and of a no-op (the same unit again), as a user types
  them (a new process: its interpreter start and imports included), and in one process through
  `lakeflow.cli.main` (imports done: what attaching itself costs);
- `lakeflow status` (never attaches: it reads the lake);
- the same fresh-unit materialize with `LAKEFLOW_NO_SERVICE=1`: a Ray started for the command.

    python benchmarks/bench_dev.py            # 10 samples each, appended to RESULTS.md
    python benchmarks/bench_dev.py --quick    # 3 samples, printed only
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from benchmarks.common import record, table  # noqa: E402
from lakeflow.cli.main import main as lakeflow_main  # noqa: E402
from lakeflow.control.services import read_marker  # noqa: E402
from lakeflow.lake import Lake  # noqa: E402

PIPELINE = str(Path(__file__).resolve().parent / "dev_pipeline.py")


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds for `lakeflow ARGV` in a new process; fails loudly on a non-zero exit."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "lakeflow.cli", *argv],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"lakeflow {' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return seconds


def in_process(argv: list[str]) -> float:
    started = time.perf_counter()
    code = lakeflow_main(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"lakeflow {' '.join(argv)} exited {code}")
    return seconds


def summary(name: str, samples: list[float], how: str) -> list[object]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return [name, how, len(samples), statistics.median(samples), p95]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 samples, not recorded")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    n = 3 if args.quick else args.samples
    root = Path(tempfile.mkdtemp(prefix="lakeflow-bench-dev-"))
    os.environ["LAKEFLOW_SERVICES_DIR"] = str(root / "services")
    lake = str(root / "lake")
    base = ["materialize", PIPELINE, "--lake", lake, "--no-progress", "--select", "readings"]
    days = iter(f"2024-{m:02d}-{d:02d}" for m in range(1, 13) for d in range(1, 29))
    rows: list[list[object]] = []
    pid = None
    try:
        start = timed(["dev", PIPELINE, "--lake", lake, "--port", "0", "--detach"])
        info = read_marker(Lake(lake).url)
        assert info is not None and info.ready
        pid = info.pid
        rows.append(["start the service (`dev --detach`)", "new process", 1, start, start])
        timed([*base, "--partitions", next(days)])  # the service's first worker starts here
        fresh, noop, fresh_in, noop_in, status, imports = [], [], [], [], [], []
        for _ in range(n):
            imports.append(timed(["--version"]))
            day = next(days)
            fresh.append(timed([*base, "--partitions", day]))
            noop.append(timed([*base, "--partitions", day]))
            status.append(timed(["status", PIPELINE, "--lake", lake]))
            day = next(days)
            fresh_in.append(in_process([*base, "--partitions", day]))
            noop_in.append(in_process([*base, "--partitions", day]))
        rows += [
            summary("materialize 1 fresh unit, attached", fresh, "new process"),
            summary("materialize no-op, attached", noop, "new process"),
            summary("status (reads the lake)", status, "new process"),
            summary("materialize 1 fresh unit, attached", fresh_in, "in process"),
            summary("materialize no-op, attached", noop_in, "in process"),
            summary("`lakeflow --version` (interpreter + imports)", imports, "new process"),
        ]
        one_shot = [
            timed([*base, "--partitions", next(days)], env={"LAKEFLOW_NO_SERVICE": "1"})
            for _ in range(1 if args.quick else 2)
        ]
        rows.append(summary("materialize 1 fresh unit, one-shot Ray", one_shot, "new process"))
    finally:
        if pid is not None:
            subprocess.run([sys.executable, "-m", "lakeflow.cli", "dev", "--stop", "--lake", lake],
                           capture_output=True, timeout=120)  # fmt: skip
            try:
                os.killpg(pid, signal.SIGKILL)  # the last resort: what is left of its Ray
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)
    body = table(["command", "how", "samples", "median s", "p95 s"], rows)
    body += (
        "\n\nAttached commands send their run to the service over its local HTTP endpoint and "
        "never import Ray. `new process` includes the interpreter's start and lakeflow's imports "
        "(the `--version` row); `in process` is `lakeflow.cli.main([...])` with imports done."
    )
    record("lakeflow dev: commands attached to a resident service", body, quick=args.quick)


if __name__ == "__main__":
    main()
