"""Start-up as a user meets it: whole commands in fresh processes, timed from outside.

- `import lakeflow` (and a bare `python -c pass` beside it: the interpreter's own share);
- `lakeflow status pipelines/flights.py` on a lake where the example pipeline was materialized;
- a no-op `lakeflow materialize` (every requested partition fresh): planned in the CLI process,
  no Ray started;
- a one-shot `lakeflow materialize` of the 3-asset x N-day shape (benchmarks/shape.py) on a new
  lake: the whole command, Ray's start and the controller's included, against Dagster's whole
  process for the same shape (`python -c` that imports dagster and materializes it per
  partition, as bench_pipeline.py does in-process), when dagster is installed.

Light commands run `--repeat` times (median); the one-shot runs once each. Figures are printed
and appended to RESULTS.md with this command.

    python benchmarks/bench_startup.py                       # January of the flights, 100 days
    python benchmarks/bench_startup.py --quick               # a smaller version, nothing recorded
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import record, table  # noqa: E402

FLIGHTS = str(ROOT / "pipelines" / "flights.py")
LAKEFLOW = [sys.executable, "-m", "lakeflow.cli"]
SHAPE = """from benchmarks.shape import build_pipeline
pipeline = build_pipeline({days}, {lake!r})
"""
DAGSTER = "from benchmarks.bench_pipeline import run_dagster; run_dagster({lake!r}, {days})"
# where a one-shot command's time goes, stage by stage, in one fresh process (as the CLI does it)
BREAKDOWN = """import json, time
t = [time.perf_counter()]
import lakeflow as lf
from benchmarks.shape import build_pipeline
pipeline = build_pipeline({days}, {lake!r})
t.append(time.perf_counter())
lf.connect(log_to_driver=False)
t.append(time.perf_counter())
from lakeflow.api import _clients
from lakeflow.lake import Lake
client = _clients().controller_client(Lake({lake!r}), "ray", None, None)
client.call("progress", "none")
t.append(time.perf_counter())
assert lf.materialize(pipeline).ok
t.append(time.perf_counter())
import ray
ray.shutdown()
t.append(time.perf_counter())
print("STAGES " + json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
STAGES = [
    "import lakeflow and load the pipeline",
    "start the private Ray (ray.init)",
    "start the controller actor (its process, imports, fence claim)",
    "the run itself (cold workers: process start, imports; plan, tasks, commits)",
    "ray.shutdown",
]


def timed(command: list[str], *, cwd: Path | None = None, expect: str | None = None) -> float:
    """Seconds the whole command took; it must exit 0 (and print `expect`, if given)."""
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - began
    if done.returncode != 0 or (expect is not None and expect not in done.stdout):
        raise SystemExit(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return seconds


def timed_output(command: list[str], *, cwd: Path | None = None) -> str:
    """The stdout of a command that must exit 0."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def median(command: list[str], repeat: int, **kwargs: object) -> tuple[float, float, float]:
    """(median, min, max) seconds of `repeat` runs."""
    times = [timed(command, **kwargs) for _ in range(repeat)]  # type: ignore[arg-type]
    return statistics.median(times), min(times), max(times)


def attached_one_shot(work: Path, days: int, *, skip: bool) -> float | None:
    """The one-shot shape again, on a new lake, as a fresh process attached to a `lakeflow dev`
    service started (and stopped) around it; the service's start is not timed."""
    if skip:
        return None
    shape = work / "shape_dev_pipeline.py"
    shape.write_text(SHAPE.format(days=days, lake=str(work / "shape_dev")))
    saved = os.environ.get("LAKEFLOW_SERVICES_DIR")
    os.environ["LAKEFLOW_SERVICES_DIR"] = str(work / "services")
    try:
        start = subprocess.run(
            [*LAKEFLOW, "dev", str(shape), "--port", "0", "--detach"],
            cwd=work, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if start.returncode != 0:
            print(f"lakeflow dev did not start: {start.stdout}{start.stderr}")
            return None
        try:
            return timed(
                [*LAKEFLOW, "materialize", str(shape), "--no-progress"],
                cwd=work,
                expect=f"{3 * days} published",
            )
        finally:
            subprocess.run(
                [*LAKEFLOW, "dev", "--stop", "--lake", str(work / "shape_dev")],
                cwd=work, capture_output=True, timeout=180,
            )  # fmt: skip
    finally:
        if saved is None:
            os.environ.pop("LAKEFLOW_SERVICES_DIR", None)
        else:
            os.environ["LAKEFLOW_SERVICES_DIR"] = saved


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs of each light command")
    parser.add_argument(
        "--span", default="2013-01-01..2013-01-31", help="flights partitions to materialize"
    )
    parser.add_argument("--days", type=int, default=100, help="days of the one-shot shape")
    parser.add_argument("--skip-dagster", action="store_true")
    parser.add_argument("--skip-dev", action="store_true", help="no attached-to-dev figure")
    parser.add_argument("--quick", action="store_true", help="small and fast; nothing recorded")
    args = parser.parse_args()
    repeat, span, days = (
        (2, "2013-01-01..2013-01-02", 5) if args.quick else (args.repeat, args.span, args.days)
    )
    work = Path(tempfile.mkdtemp(prefix="lakeflow-bench-startup-"))
    rows: list[list[object]] = []
    try:
        rows.append(
            [
                "`python -c pass` (the interpreter alone)",
                *median([sys.executable, "-c", "pass"], repeat),
            ]
        )
        rows.append(
            ["`import lakeflow`", *median([sys.executable, "-c", "import lakeflow"], repeat)]
        )
        lake = str(work / "flights")
        built = timed(
            [
                *LAKEFLOW,
                "materialize",
                FLIGHTS,
                "--lake",
                lake,
                "--partitions",
                span,
                "--no-progress",
            ]
        )
        print(
            f"materialized the flights {span} in {built:.1f}s (not a figure: it sets the lake up)"
        )
        rows.append(
            [
                f"`lakeflow status pipelines/flights.py` ({span} materialized)",
                *median([*LAKEFLOW, "status", FLIGHTS, "--lake", lake], repeat),
            ]
        )
        rows.append(
            [
                "no-op `lakeflow materialize` (every unit fresh: no Ray started)",
                *median(
                    [
                        *LAKEFLOW,
                        "materialize",
                        FLIGHTS,
                        "--lake",
                        lake,
                        "--partitions",
                        span,
                        "--no-progress",
                    ],
                    repeat,
                    expect=" fresh",
                ),
            ]
        )
        shape = work / "shape_pipeline.py"
        shape.write_text(SHAPE.format(days=days, lake=str(work / "shape")))
        one_shot = timed(
            [*LAKEFLOW, "materialize", str(shape), "--no-progress"],
            cwd=work,
            expect=f"{3 * days} published",
        )
        rows.append(
            [
                f"one-shot `lakeflow materialize` of 3 assets x {days} days (whole command)",
                one_shot,
                one_shot,
                one_shot,
            ]
        )
        attached = attached_one_shot(work, days, skip=args.skip_dev)
        if attached is not None:
            rows.append(
                [
                    f"the same command attached to `lakeflow dev` (a fresh process; the service "
                    f"was started before and is not timed), 3 x {days} days on a new lake",
                    attached, attached, attached,
                ]
            )  # fmt: skip
        child = timed_output(
            [sys.executable, "-c", BREAKDOWN.format(days=days, lake=str(work / "breakdown"))],
            cwd=ROOT,
        )
        stages = json.loads(child.split("STAGES ", 1)[1].splitlines()[0])
        breakdown = table(
            ["stage of a one-shot run (one fresh process)", "seconds"],
            [[n, s] for n, s in zip(STAGES, stages, strict=True)],
        )
        ratio = ""
        if not args.skip_dagster:
            try:
                import dagster  # noqa: F401
            except ImportError:
                ratio = "dagster is not installed (pip install -e '.[bench]'): not compared"
            else:
                dagster_s = timed(
                    [sys.executable, "-c", DAGSTER.format(lake=str(work / "dagster"), days=days)],
                    cwd=ROOT,
                )
                rows.append(
                    [
                        f"Dagster, whole process: import + materialize per partition, {days} days",
                        dagster_s,
                        dagster_s,
                        dagster_s,
                    ]
                )
                ratio = f"One-shot lakeflow is {dagster_s / one_shot:.2f}x Dagster's whole process (goal: 5x)."
                if attached is not None:
                    ratio += (
                        f" Attached to `lakeflow dev`, the same command in a fresh process is "
                        f"{dagster_s / attached:.2f}x."
                    )
        headers = ["command (a fresh process each time)", "median s", "min s", "max s"]
        body = (
            table(headers, rows)
            + f"\n\nLight commands: median of {repeat} runs; the one-shot and Dagster ran once each. "
            + "Goals: no-op materialize < 1 s, status < 1 s. "
            + ratio
            + f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores.\n\n"
            + breakdown
            + "\n"
        )
        record("Start-up: whole commands in fresh processes", body, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
