"""The randomized, model-checked stress of the trigger + publish path (a library; the tests are
tests/test_stress.py, the soak benchmarks/bench_soak.py).

One integer seed makes a whole schedule: outside commits on 1-3 source tables, each written by
its own OS process (tests/stress_producer.py), and controller-side faults (`down`/`up`, SIGKILL of
the controller actor, SIGKILL of a worker running a unit, units failing while a marker file
exists). Files arrive meanwhile in a landing folder, written by another process: whole, in two
halves a pause shorter than the sensor's `settle` apart, as an in-progress name (`.tmp`,
'.'-prefixed) renamed when complete, some replaced later. After the schedule the lake must settle,
and then equal a reference model computed from the sources' final state and the files on disk
(each file's rows once, as the file is now; no in-progress name; no half file read); no partition
may be published twice with the same inputs (a file: with the same stamp), and every publish must
have exactly one `unit_published` event.

>>> outcome = run_seed(7, workdir=Path("/tmp/s7"))     # in a process attached to a Ray
>>> print(outcome.report())
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from random import Random
from typing import Any

import polars as pl

import lakeflow as lf
from lakeflow.define.partitions import file_stamp
from lakeflow.lake import Lake
from lakeflow.lake.registry import load_registry
from tests.stress_producer import csv_text

__all__ = [
    "FULL_ENV",
    "SEED_ENV",
    "Op",
    "Outcome",
    "Schedule",
    "make_schedule",
    "run_seed",
    "stress_pipeline",
]

SEED_ENV = "LAKEFLOW_STRESS_SEED"
FULL_ENV = "LAKEFLOW_STRESS_FULL"  # =1: the soak's full-size schedules, not the quick ones
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("src_a", "src_b", "src_c")
RETRY = lf.RetryPolicy(attempts=3, backoff=0.3)  # first-level consumers: ~1 s of retries
LANDING = "landing"  # the target of the file producer's ops: the workdir's landing folder
FILE_POLL, FILE_SETTLE = 0.1, 0.6  # the sensor's; a half file's pause is at most FILE_SETTLE / 2
FINAL_NAME = re.compile(r"f\d{3}\.csv")  # the names files are delivered under


# -- the pipeline ----------------------------------------------------------------------------------
def _steer(control: str, asset: str, key: str) -> None:
    """Faults planted by the schedule: `crash-ASSET-KEY` SIGKILLs the worker running the unit
    (once), `fail-ASSET-KEY` makes it raise for as long as the file exists."""
    crash = Path(control) / f"crash-{asset}-{key}"
    if crash.exists():
        try:
            crash.unlink()
        except FileNotFoundError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGKILL)
    if (Path(control) / f"fail-{asset}-{key}").exists():
        raise ValueError(f"{asset} {key}: planted failure")


def _with_inputs(function: Any, inputs: list[str]) -> Any:
    """Give `function(ctx, **frames)` a signature naming its inputs, as lakeflow reads them."""
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in inputs]
    function.__signature__ = inspect.Signature(params)
    return function


def _sums(frame: pl.LazyFrame) -> list[pl.Expr]:
    return [
        pl.col("rows").sum().cast(pl.Int64),
        pl.col("amount").sum().cast(pl.Int64),
        pl.col("tip").sum().cast(pl.Int64),
    ]


@lf.pipeline_factory  # a restarted controller builds it again from these arguments
def stress_pipeline(
    lake: str, sources: list[str], first_day: str, days: int, control: str, landing: str = ""
) -> lf.Pipeline:
    """Per source `src_x`: totals_x (identity: rows, sum of amount, sum of the merged-in `tip`),
    window_x (lookback 3 over totals_x); monthly (roll-up of every totals_x); window_all
    (identity over every window_x). With `landing`: files (a file sensor on every name there,
    one partition per file: its rows) and files_total (unpartitioned: rows and sum of amount of
    all files). Every consumer runs on upstream commits."""
    start = date.fromisoformat(first_day)
    end = start + timedelta(days=days)
    daily = lf.DailyPartitions(start=first_day, end=end.isoformat(), column="day")
    last = end - timedelta(days=1)
    after = date(last.year, last.month, 1) + timedelta(days=32)  # in the month after the last day
    monthly_parts = lf.MonthlyPartitions(start=first_day[:7], end=after.isoformat()[:7])
    auto = lf.on_upstream_commit()
    assets: list[lf.AssetDef] = []
    for name in sources:
        x = name.removeprefix("src_")
        assets.append(lf.source(name, partitions=daily))

        def totals(ctx: lf.Context, _x: str = x, **frames: pl.LazyFrame) -> pl.LazyFrame:
            _steer(control, f"totals_{_x}", ctx.partition.key)
            frame = frames[f"src_{_x}"]
            tip = (
                pl.col("tip").fill_null(0).sum()
                if "tip" in frame.collect_schema().names()
                else pl.lit(0)
            )
            return frame.select(
                pl.len().cast(pl.Int64).alias("rows"),
                pl.col("amount").sum().cast(pl.Int64).alias("amount"),
                tip.cast(pl.Int64).alias("tip"),
            )

        def window(ctx: lf.Context, _x: str = x, **frames: pl.LazyFrame) -> pl.LazyFrame:
            _steer(control, f"window_{_x}", ctx.partition.key)
            frame = frames[f"totals_{_x}"]
            return frame.select(
                *_sums(frame), pl.col("day").n_unique().cast(pl.Int64).alias("days")
            )

        assets.append(
            lf.asset(
                _with_inputs(totals, [name]), name=f"totals_{x}", partitions=daily,
                automation=auto, retry=RETRY, code_version="totals-1",
            )
        )  # fmt: skip
        assets.append(
            lf.asset(
                _with_inputs(window, [f"totals_{x}"]), name=f"window_{x}", partitions=daily,
                inputs={f"totals_{x}": lf.lookback(3)}, automation=auto, code_version="window-1",
            )
        )  # fmt: skip
    totals_names = [f"totals_{s.removeprefix('src_')}" for s in sources]
    window_names = [f"window_{s.removeprefix('src_')}" for s in sources]

    def month(ctx: lf.Context, **frames: pl.LazyFrame) -> pl.LazyFrame:
        frame = pl.concat([frames[n].select("rows", "amount", "tip") for n in totals_names])
        return frame.select(*_sums(frame), pl.len().cast(pl.Int64).alias("days"))

    def window_all(ctx: lf.Context, **frames: pl.LazyFrame) -> pl.LazyFrame:
        _steer(control, "window_all", ctx.partition.key)
        frame = pl.concat([frames[n].select("rows", "amount", "tip") for n in window_names])
        return frame.select(*_sums(frame))

    assets.append(
        lf.asset(
            _with_inputs(month, totals_names), name="monthly", partitions=monthly_parts,
            inputs={n: lf.rollup() for n in totals_names}, automation=auto, code_version="month-1",
        )
    )  # fmt: skip
    assets.append(
        lf.asset(
            _with_inputs(window_all, window_names), name="window_all", partitions=daily,
            automation=auto, code_version="window-all-1",
        )
    )  # fmt: skip
    if landing:
        assets += _file_assets(landing, control)
    return lf.Pipeline(assets, lake=lake, name="stress")


def _file_assets(landing: str, control: str) -> list[lf.AssetDef]:
    # every name, so that only `ignore` (the default in-progress patterns) keeps `.tmp` names out
    sensed = lf.FilePartitions(f"{landing}/*", poll=FILE_POLL, settle=FILE_SETTLE)

    def files(ctx: lf.Context) -> pl.DataFrame:
        _steer(control, "files", ctx.partition.key)
        return pl.read_csv(ctx.partition.url, schema={"id": pl.Int64, "amount": pl.Int64})

    def files_total(ctx: lf.Context, files: pl.LazyFrame) -> pl.LazyFrame:
        if "amount" not in files.collect_schema().names():  # no file yet: no table, no columns
            return pl.LazyFrame(
                {"rows": [0], "amount": [0]}, schema={"rows": pl.Int64, "amount": pl.Int64}
            )
        return files.select(
            pl.len().cast(pl.Int64).alias("rows"), pl.col("amount").sum().cast(pl.Int64)
        )

    return [
        lf.asset(files, name="files", partitions=sensed, retry=RETRY, code_version="files-1"),
        lf.asset(
            files_total, name="files_total", automation=lf.on_upstream_commit(),
            code_version="files-total-1",
        ),
    ]  # fmt: skip


# -- the schedule ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One step: a producer's write (target = a source, or LANDING: a file) or a controller-side
    fault."""

    at: float  # seconds after the schedule's start
    kind: str
    target: str = ""  # a source, or the asset a marker names
    day: str = ""
    rows: tuple[tuple[int, int | None], ...] = ()
    days: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)
    merged: bool = False  # the source has the `tip` column when this write runs
    name: str = ""  # a landing file's (file_write, file_append: rows are (id, amount))
    temp: str = ""  # file_rename: the in-progress name moved onto `name`

    def describe(self) -> str:
        head = f"t=+{self.at:6.2f}s {self.kind:<15} {self.target:<9} {self.day}"
        if self.name:
            head += self.name + (f" <- {self.temp}" if self.temp else "")
        if self.days:
            return f"{head}{len(self.days)} days, {sum(map(len, self.days.values()))} rows"
        if self.rows:
            what = "id,amount" if self.target == LANDING else "amount,tip"
            return f"{head} rows({what})={list(self.rows)}"
        return head.rstrip()


@dataclass(frozen=True)
class Schedule:
    seed: int
    sources: list[str]
    first_day: str
    days: int
    pre_up: bool  # the sources' first fill lands before `up` (it must still be built)
    ops: list[Op]
    quick: bool = False  # made by make_schedule(seed, quick=True): the same seed differs

    @property
    def replay(self) -> str:
        """The command that runs this schedule again."""
        full = "" if self.quick else f" {FULL_ENV}=1"
        return f"{SEED_ENV}={self.seed}{full} pytest tests/test_stress.py"

    @property
    def keys(self) -> list[str]:
        start = date.fromisoformat(self.first_day)
        return [(start + timedelta(days=i)).isoformat() for i in range(self.days)]

    def describe(self) -> str:
        lines = [
            f"seed {self.seed}: sources {', '.join(self.sources)}; days {self.first_day} +{self.days};"
            f" first fill {'before' if self.pre_up else 'after'} `up`; {len(self.ops)} ops",
        ]
        lines += ["  " + op.describe() for op in self.ops]
        return "\n".join(lines)


def make_schedule(seed: int, *, quick: bool = False) -> Schedule:
    """The whole schedule from one integer. `quick`: fewer days and ops, a few seconds long."""
    rng = Random(seed)
    sources = list(SOURCES[: rng.choice([1, 1, 2, 2, 3] if not quick else [1, 2, 2, 3])])
    days = rng.randint(20, 28) if quick else rng.randint(20, 40)
    first = date(2024, 1, 1) + timedelta(days=rng.randint(0, 50))
    keys = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    pre_up = rng.random() < 0.5
    merged = dict.fromkeys(sources, False)
    ops: list[Op] = []
    t = 0.0

    def rows(source: str) -> tuple[tuple[int, int | None], ...]:
        return tuple(
            (
                rng.randint(1, 100),
                rng.choice([None, rng.randint(0, 20)]) if merged[source] else None,
            )
            for _ in range(rng.randint(1, 4))
        )

    def append(at: float, source: str, day: str) -> None:
        ops.append(Op(round(at, 2), "append", source, day, rows(source), merged=merged[source]))

    for source in sources:  # the first fill: every day, one commit per source
        fill = {k: [list(r) for r in rows(source)] for k in keys}
        ops.append(Op(-1.0 if pre_up else 0.0, "fill", source, days=fill))
    kinds = {
        "append": 30, "overwrite": 12, "delete": 6, "merge_append": 5, "burst": 7, "pause": 6,
        "down_up": 4, "kill_controller": 4, "kill_worker": 5, "fail": 5,
    }  # fmt: skip
    count = rng.randint(10, 18) if quick else rng.randint(10, 30)
    for _ in range(count):
        kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
        t += rng.uniform(0.05, 0.4)
        source, day = rng.choice(sources), rng.choice(keys)
        if kind == "append":
            append(t, source, day)
        elif kind == "overwrite":
            ops.append(
                Op(round(t, 2), "overwrite", source, day, rows(source), merged=merged[source])
            )
        elif kind == "delete":
            ops.append(Op(round(t, 2), "delete", source, day))
            if rng.random() < 0.5:  # the day comes back later
                t += rng.uniform(0.1, 1.0)
                append(t, source, day)
        elif kind == "merge_append":
            merged[source] = True
            ops.append(Op(round(t, 2), "merge_append", source, day, rows(source), merged=True))
        elif kind == "burst":
            for _ in range(rng.randint(5, 15 if quick else 25)):
                append(t, source, rng.choice(keys))  # back to back: the same start time
        elif kind == "pause":
            t += rng.uniform(0.5, 2.0 if quick else 4.0)
        elif kind in ("down_up", "kill_controller"):
            ops.append(Op(round(t, 2), kind))
        elif kind == "kill_worker":
            asset = rng.choice(["totals", "window"]) + "_" + source.removeprefix("src_")
            ops.append(Op(round(t, 2), "kill_worker", asset, day))
            append(t + 0.1, source, day)  # the commit that runs the unit
        elif kind == "fail":
            asset = "totals_" + source.removeprefix("src_")
            ops.append(Op(round(t, 2), "fail", asset, day))
            append(t + 0.1, source, day)  # runs the unit, which fails through its retries
            heal = t + rng.uniform(0.5, 3.0)
            ops.append(Op(round(heal, 2), "heal", asset, day))
            append(heal + 0.5, source, day)  # and a later commit builds it again
    # files from a generator of their own: the other ops of a seed stay as they were
    ops += _file_ops(Random(seed + 1_000_003), max(t, 2.0), pre_up, quick)
    ops.sort(key=lambda op: op.at)  # stable: a burst keeps its order
    return Schedule(seed, sources, keys[0], days, pre_up, _merged_in_order(ops), quick)


def _file_ops(rng: Random, end: float, pre_up: bool, quick: bool) -> list[Op]:
    """Files `fNNN.csv` arriving in the landing folder between 0 and `end` seconds (the first two
    before `up` when the sources' first fill is): whole, in two halves a pause shorter than
    the sensor's settle apart, or under an in-progress name renamed when complete; a third are
    replaced later with new contents, in place or by a rename. Some first runs are SIGKILLed."""
    ops: list[Op] = []

    def deliver(at: float, name: str, version: int, index: int) -> float:
        """One version of a file, starting at `at`; returns when it is complete."""
        rows = tuple(
            (index * 1000 + version * 100 + j, rng.randint(1, 100))
            for j in range(rng.randint(2, 6))
        )
        how = rng.choice(["whole", "halves", "renamed"]) if at >= 0 else "whole"
        if how == "whole":
            ops.append(Op(at, "file_write", LANDING, rows=rows, name=name))
            return at
        later = round(at + rng.uniform(0.05, FILE_SETTLE / 2), 2)
        if how == "halves":
            cut = rng.randint(1, len(rows) - 1)
            ops.append(Op(at, "file_write", LANDING, rows=rows[:cut], name=name))
            ops.append(Op(later, "file_append", LANDING, rows=rows[cut:], name=name))
            return later
        temp = rng.choice([f"{name}.tmp", f".{name}"])
        later = round(at + rng.uniform(0.3, 2.5), 2)  # outlasts settle: it must be ignored
        ops.append(Op(at, "file_write", LANDING, rows=rows, name=temp))
        ops.append(Op(later, "file_rename", LANDING, name=name, temp=temp))
        return later

    for index in range(rng.randint(4, 8) if quick else rng.randint(6, 20)):
        name = f"f{index:03d}.csv"
        at = -1.0 if pre_up and index < 2 else round(rng.uniform(0.0, end), 2)
        if at >= 0 and rng.random() < 0.15:  # its first run's worker dies (retried)
            ops.append(Op(at, "kill_worker", "files", name))
        done = deliver(at, name, 0, index)
        for version in (1, 2):
            if rng.random() >= 0.35:
                break
            done = deliver(round(max(done, 0.0) + rng.uniform(0.5, 3.0), 2), name, version, index)
    return ops


def _merged_in_order(ops: list[Op]) -> list[Op]:
    """Ops were made a little out of time order (a fault's later commits): say again, in time
    order, which writes find the `tip` column already there; before it, rows carry no tip."""
    merged: set[str] = set()
    out = []
    for op in ops:
        if op.kind == "merge_append":
            merged.add(op.target)
        elif op.rows and op.target != LANDING:
            has = op.target in merged
            rows = op.rows if has else tuple((amount, None) for amount, _ in op.rows)
            op = replace(op, merged=has, rows=rows)
        out.append(op)
    return out


# -- running it ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    seed: int
    schedule: Schedule
    violations: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.violations.setdefault(kind, []).append(example)

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.violations.items()}

    def summary(self) -> str:
        if self.ok:
            return f"seed {self.seed}: ok ({self.seconds.get('total', 0):.1f} s)"
        return f"seed {self.seed}: FAILED {self.counts()}"

    def report(self, examples: int = 5) -> str:
        lines = [self.summary()]
        for kind, items in self.violations.items():
            lines.append(f"  {kind}: {len(items)}")
            lines += [f"    - {item}" for item in items[:examples]]
        lines.append(f"replay: {self.schedule.replay}; the schedule:")
        lines.append(self.schedule.describe())
        return "\n".join(lines)


def _producer_spec(
    workdir: Path, lake: str, source: str, ops: list[Op], t0: float, first_id: int
) -> Path:
    spec = {
        "url": str(workdir / LANDING) if source == LANDING else f"{lake}/{source}",
        "t0": t0,
        "first_id": first_id,
        "ops": [{**asdict(op), "at": max(op.at, 0.0)} for op in ops],
        "times": str(workdir / "landing-times.jsonl") if source == LANDING else "",
    }
    path = workdir / f"producer-{source}-{first_id}.json"
    path.write_text(json.dumps(spec))
    return path


def _start_producer(spec: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.stress_producer", str(spec)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _kill_controller(lake: str) -> None:
    import ray

    from lakeflow.control.client import NAMESPACE, controller_name

    actor = ray.get_actor(controller_name(Lake(lake)), namespace=NAMESPACE)
    ray.kill(actor, no_restart=False)  # a crash: Ray restarts it, which resumes from the lake


def run_seed(
    seed: int,
    *,
    workdir: Path,
    lake: str | None = None,
    quick: bool = False,
    settle_timeout: float = 150.0,
    log=print,
) -> Outcome:
    """Run one seed's schedule on `lake` (default: under `workdir`, which holds the producers'
    specs and log and the fault markers) against the connected Ray. The controller is left
    running: the caller stops it with `lf.stop(lake)`."""
    schedule = make_schedule(seed, quick=quick)
    outcome = Outcome(seed, schedule)
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    lake, control = lake or str(workdir / "lake"), workdir / "control"
    control.mkdir(exist_ok=True)
    (workdir / LANDING).mkdir(exist_ok=True)
    pipeline = stress_pipeline(
        lake, schedule.sources, schedule.first_day, schedule.days, str(control),
        str(workdir / LANDING),
    )  # fmt: skip
    producers: list[subprocess.Popen] = []
    writers = [*schedule.sources, LANDING]  # a producer process each
    try:
        by_source = {s: [op for op in schedule.ops if op.target == s] for s in writers}
        if schedule.pre_up:
            for n, source in enumerate(writers):
                early = [op for op in by_source[source] if op.at < 0]
                spec = _producer_spec(workdir, lake, source, early, time.time(), n * 1_000_000)
                done = _start_producer(spec, workdir / "producers.log").wait(120)
                if done != 0:
                    outcome.add("harness", f"pre-up producer {source} exited {done}")
                    return outcome
        service = lf.up(pipeline, poll=0.05)
        t0 = time.time() + 0.5
        for n, source in enumerate(writers):
            late = [op for op in by_source[source] if op.at >= 0]
            spec = _producer_spec(workdir, lake, source, late, t0, n * 1_000_000 + 500_000)
            producers.append(_start_producer(spec, workdir / "producers.log"))
        for op in schedule.ops:
            if op.target in writers or op.at < 0:
                continue
            wait = t0 + op.at - time.time()
            if wait > 0:
                time.sleep(wait)
            _controller_op(op, lake, control, pipeline)
        for producer in producers:
            code = producer.wait(300)
            if code != 0:
                outcome.add("harness", f"a producer exited {code}: see {workdir}/producers.log")
        for marker in control.iterdir():  # whatever a fault left behind
            marker.unlink(missing_ok=True)
        outcome.seconds["schedule"] = time.monotonic() - began
        settled = _settle(service, pipeline, lake, workdir / LANDING, settle_timeout)
        outcome.seconds["settle"] = time.monotonic() - began - outcome.seconds["schedule"]
        if settled is not None:
            outcome.add("quiescence", settled)
        lf.down(pipeline)  # writes the buffered events
        check(outcome, pipeline, lake, schedule)
    finally:
        for producer in producers:
            if producer.poll() is None:
                producer.kill()
                producer.wait(10)
    outcome.seconds["total"] = time.monotonic() - began
    log(outcome.summary())
    return outcome


def _controller_op(op: Op, lake: str, control: Path, pipeline: lf.Pipeline) -> None:
    if op.kind == "down_up":
        lf.down(pipeline)
        lf.up(pipeline, poll=0.05)
    elif op.kind == "kill_controller":
        _kill_controller(lake)
    elif op.kind == "kill_worker":
        (control / f"crash-{op.target}-{op.day}").touch()
    elif op.kind == "fail":
        (control / f"fail-{op.target}-{op.day}").touch()
    elif op.kind == "heal":
        (control / f"fail-{op.target}-{op.day}").unlink(missing_ok=True)
    else:
        raise ValueError(f"unknown controller op {op.kind!r}")


def _version(url: str) -> int:
    log = Path(url) / "_delta_log"
    versions = [int(p.stem) for p in log.glob("*.json")] if log.exists() else []
    return max(versions, default=-1)


def _settle(
    service: lf.Service, pipeline: lf.Pipeline, lake: str, landing: Path, timeout: float
) -> str | None:
    """Wait until the triggers are idle: every landing file taken as it is now, cursors at
    every watched table's newest version, nothing pending, no run of the controller
    unfinished; the same for three polls in a row. None once settled, else what was still
    going on."""
    deadline = time.monotonic() + timeout
    seen, calm, last = None, 0, "never polled"
    while time.monotonic() < deadline:
        try:
            status = service.status()
            ping = service._client.call("ping")
            busy = [
                r for r in ping["runs"] if not service._client.call("progress", r).get("done", True)
            ]
        except Exception as error:  # a restarting controller: ask again
            last = f"controller unreachable: {type(error).__name__}: {error}"
            calm = 0
            time.sleep(0.5)
            continue
        versions = {n: _version(f"{lake}/{n}") for n in pipeline.assets}
        untaken = _untaken(lake, landing)
        if status is None:
            last, calm = "the triggers are down", 0
        elif untaken:
            last, calm = f"files not yet taken as they are: {untaken}", 0
        elif (
            status["pending"] or busy or any(versions[t] != c for t, c in status["cursors"].items())
        ):
            last = f"pending {status['pending']}, runs in flight {busy}, cursors {status['cursors']} vs tables {versions}"
            calm = 0
        elif stale := _stale(pipeline):  # a request still on its way (a held-back rerun)
            last, calm = f"stale: {stale}", 0
        else:
            snapshot = (tuple(sorted(versions.items())), tuple(ping["runs"]))
            calm = calm + 1 if snapshot == seen else 1
            seen = snapshot
            if calm >= 3:
                return None
        time.sleep(0.5)
    return f"not settled within {timeout:.0f} s: {last}"


def _stale(pipeline: lf.Pipeline) -> dict[str, int]:
    """Assets with stale partitions, as `lakeflow status` counts them: what the final check
    calls a violation is not yet settled while the triggers may still be asking for it."""
    try:
        rows = lf.status(pipeline).iter_rows(named=True)
        return {row["asset"]: row["stale"] for row in rows if row["stale"]}
    except Exception as error:  # the lake mid-commit: ask again
        return {"(status)": 1, str(error)[:80]: 1}


def _untaken(lake: str, landing: Path) -> list[str]:
    """The landing files whose stamp on disk the sensor has not registered (yet)."""
    import fsspec

    fs = fsspec.filesystem("file")
    registered = {key: stamp for key, _, *rest in load_registry(Lake(lake), "files")
                  for stamp in rest[:1]}  # fmt: skip
    return sorted(
        p.name
        for p in landing.iterdir()
        if FINAL_NAME.fullmatch(p.name) and registered.get(p.name) != file_stamp(fs.info(str(p)))
    )


# -- the checks ------------------------------------------------------------------------------------
def _read(url: str) -> pl.DataFrame | None:
    if _version(url) < 0:
        return None
    return pl.read_delta(url)


Row = tuple[int, ...]


def model(lake: str, schedule: Schedule) -> dict[str, tuple[dict[str, Row], dict[str, Row]]]:
    """Per consumer: (definite, loose). `definite`: key -> the row every consumer must hold,
    computed from the sources' final state where all of a partition's inputs have data. `loose`:
    partitions with an input day that has no data (deleted): no row, or this row (the aggregate of
    the days that do have data) are both accepted."""
    keys = schedule.keys
    out: dict[str, tuple[dict[str, Row], dict[str, Row]]] = {}
    totals_by: dict[str, dict[str, Row]] = {}
    windows: dict[str, tuple[dict[str, Row], dict[str, Row]]] = {}
    for source in schedule.sources:
        x = source.removeprefix("src_")
        frame = _read(f"{lake}/{source}")
        totals: dict[str, Row] = {}
        if frame is not None and frame.height:
            tip = pl.col("tip").fill_null(0).sum() if "tip" in frame.columns else pl.lit(0)
            agg = frame.group_by("day").agg(
                pl.len().alias("rows"), pl.col("amount").sum(), tip.cast(pl.Int64).alias("tip")
            )
            totals = {
                d: (r, a, t)
                for d, r, a, t in agg.select("day", "rows", "amount", "tip").iter_rows()
            }
        totals = {d: v for d, v in totals.items() if d in set(keys)}
        totals_by[x] = totals
        out[f"totals_{x}"] = (totals, {})
        definite, loose = {}, {}
        for i, key in enumerate(keys):
            span = keys[max(0, i - 2) : i + 1]
            present = [totals[d] for d in span if d in totals]
            row = (*(sum(v[j] for v in present) for j in range(3)), len(present))
            if len(present) == len(span):
                definite[key] = row
            elif present:
                loose[key] = row
        out[f"window_{x}"] = windows[x] = (definite, loose)
    definite, loose = {}, {}
    months = sorted({k[:7] for k in keys})
    for m in months:
        span = [k for k in keys if k.startswith(m)]
        present = [t[d] for t in totals_by.values() for d in span if d in t]
        row = (*(sum(v[j] for v in present) for j in range(3)), len(present))
        if len(present) == len(span) * len(totals_by):
            definite[m] = row
        elif present:
            loose[m] = row
    out["monthly"] = (definite, loose)
    definite, loose = {}, {}
    for key in keys:
        parts = [w[0].get(key) or w[1].get(key) for w in windows.values()]
        present = [p for p in parts if p is not None]
        row = tuple(sum(v[j] for v in present) for j in range(3))
        if all(key in w[0] for w in windows.values()):
            definite[key] = row
        elif present:
            loose[key] = row
    out["window_all"] = (definite, loose)
    return out


COLUMNS = {"totals": ["rows", "amount", "tip"], "window": ["rows", "amount", "tip", "days"],
           "monthly": ["rows", "amount", "tip", "days"], "window_all": ["rows", "amount", "tip"]}  # fmt: skip


def _columns(asset: str) -> list[str]:
    return COLUMNS["window_all"] if asset == "window_all" else COLUMNS[asset.split("_")[0]]


def commits(url: str) -> list[tuple[int, dict[str, Any]]]:
    """(version, lakeflow commit metadata) of every commit in a table's log that has it."""
    out = []
    log = Path(url) / "_delta_log"
    for path in sorted(log.glob("*.json")) if log.exists() else []:
        for line in path.read_text().splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info and isinstance(info.get("lakeflow"), dict):
                out.append((int(path.stem), info["lakeflow"]))
    return out


def check(outcome: Outcome, pipeline: lf.Pipeline, lake: str, schedule: Schedule) -> None:
    """Compare the settled lake with the model; record every violation in `outcome`."""
    expected = model(lake, schedule)
    touched = {(op.target, op.day) for op in schedule.ops if op.at >= 0 and op.day}
    untouched = {  # days whose only writes came before `up` (the first fill)
        "totals_" + s.removeprefix("src_"): {k for k in schedule.keys if (s, k) not in touched}
        for s in schedule.sources
        if schedule.pre_up
    }
    consumers = [n for n, a in pipeline.assets.items() if not a.source]
    if "files" in pipeline.assets:
        expected.update(_check_files(outcome, pipeline, lake, schedule))
    for asset in consumers:
        if asset in ("files", "files_total"):
            continue
        definite, loose = expected[asset]
        column = pipeline[asset].partitions.column
        frame = _read(f"{lake}/{asset}")
        actual: dict[str, Row] = {}
        if frame is not None:
            for key, count in Counter(frame[column].to_list()).items():
                if count > 1:
                    outcome.add("duplicate rows", f"{asset} {key}: {count} rows")
            actual = {
                r[0]: tuple(r[1:]) for r in frame.select(column, *_columns(asset)).iter_rows()
            }
        for key, want in definite.items():
            if (
                key not in actual
                and asset.startswith("totals_")
                and key in untouched.get(asset, ())
            ):
                outcome.add(
                    "missing, written before up only",
                    f"{asset} {key}: no row, the model has {want}",
                )
            elif key not in actual:
                outcome.add("missing", f"{asset} {key}: no row, the model has {want}")
            elif actual[key] != want:
                outcome.add("mismatch", f"{asset} {key}: {actual[key]} != model {want}")
        for key, got in actual.items():
            if key in definite:
                continue
            if key in loose and got != loose[key]:
                outcome.add(
                    "mismatch",
                    f"{asset} {key}: {got}; an input day has no data: no row or {loose[key]}",
                )
            elif key not in loose:
                outcome.add("extra", f"{asset} {key}: {got}, but no source data for it")
    _check_publishes(outcome, consumers, lake)
    _check_status(outcome, pipeline, expected)
    _check_attempts(outcome, pipeline, lake)


def _check_files(
    outcome: Outcome, pipeline: lf.Pipeline, lake: str, schedule: Schedule
) -> dict[str, tuple[dict[str, Row], dict[str, Row]]]:
    """The file asset holds each landing file's rows once, as the file is now, under its
    delivered name only; files_total sums them; no publish read a file written in two halves
    whose halves came less than `settle` apart, as its first half. Returns the model of both."""
    landing = Path(pipeline["files"].partitions.url).parent
    on_disk = {p.name: p for p in landing.iterdir()}
    delivered = {
        op.name for op in schedule.ops if op.target == LANDING and FINAL_NAME.fullmatch(op.name)
    }
    if set(on_disk) != delivered:
        outcome.add(
            "harness", f"landing holds {sorted(on_disk)}, the schedule delivers {sorted(delivered)}"
        )
    want = {
        name: sorted(pl.read_csv(path, schema={"id": pl.Int64, "amount": pl.Int64}).iter_rows())
        for name, path in on_disk.items()
        if FINAL_NAME.fullmatch(name)
    }
    frame = _read(f"{lake}/files")
    got: dict[str, list[Row]] = {}
    if frame is not None:
        for (key,), part in frame.group_by("file"):
            got[key] = sorted(part.select("id", "amount").iter_rows())
    for name, rows in want.items():
        if name not in got:
            outcome.add("missing", f"files {name}: no rows, the file has {len(rows)}")
        elif Counter(got[name]) != Counter(rows):
            twice = [r for r, n in Counter(got[name]).items() if n > 1]
            kind = "duplicate rows" if twice and sorted(set(got[name])) == rows else "mismatch"
            outcome.add(kind, f"files {name}: rows {got[name]} != the file's {rows}")
    for key in set(got) - set(want):
        outcome.add("extra", f"files {key}: {len(got[key])} rows, but no such file delivered")
    for key, url, *_ in load_registry(Lake(lake), "files"):
        if not FINAL_NAME.fullmatch(Path(url).name):
            outcome.add("in-progress file", f"files {key}: registered from {url}")
    _check_halves(outcome, lake, landing.parent / "landing-times.jsonl")
    rows = [r for file_rows in want.values() for r in file_rows]
    total = (len(rows), sum(a for _, a in rows))
    actual = _read(f"{lake}/files_total")
    if want and (actual is None or actual.select("rows", "amount").rows() != [total]):
        table = None if actual is None else actual.select("rows", "amount").rows()
        outcome.add("mismatch", f"files_total: {table} != model {[total]}")
    return {
        "files": ({n: (len(r),) for n, r in want.items()}, {}),
        "files_total": ({"": total} if want else {}, {}),
    }


def _check_halves(outcome: Outcome, lake: str, times: Path) -> None:
    """A file written in two halves less than `settle` apart (as the producer timed them) can
    never have looked settled with its first half only: no publish may record that size."""
    done = [json.loads(line) for line in times.read_text().splitlines()] if times.exists() else []
    sizes: dict[str, set[int]] = {}  # name -> the size of each complete version
    halves: dict[str, set[int]] = {}  # name -> the size of each first half read too early
    opened: dict[str, dict] = {}
    for entry in done:
        op = entry["op"]
        if op["kind"] == "file_write":
            opened[op["name"]] = entry
            size = len(csv_text(op["rows"], header=True).encode())
            sizes.setdefault(op["name"], set()).add(size)
        elif op["kind"] == "file_append":
            first = opened.pop(op["name"])
            half = len(csv_text(first["op"]["rows"], header=True).encode())
            sizes[op["name"]].discard(half)
            sizes[op["name"]].add(half + len(csv_text(op["rows"], header=False).encode()))
            if entry["ended"] - first["began"] < FILE_SETTLE:
                halves.setdefault(op["name"], set()).add(half)
        elif op["kind"] == "file_rename":
            sizes.setdefault(op["name"], set()).update(sizes.pop(op["temp"], set()))
    for version, meta in commits(f"{lake}/files"):
        for group in meta.get("groups", []):
            size = group.get("in", {}).get("@size")
            for key in group.get("keys", []):
                if size in halves.get(key, ()) and size not in sizes.get(key, ()):
                    outcome.add(
                        "half file",
                        f"files {key} at version {version}: its first half ({size} bytes) was read",
                    )


def _check_publishes(outcome: Outcome, consumers: list[str], lake: str) -> None:
    """No partition published twice with the same inputs; one unit_published event a publish
    (one unit_deleted event for a partition a commit deleted because its inputs were)."""
    published: Counter = Counter()
    deleted: set[tuple[str, str, int]] = set()
    for asset in consumers:
        first: dict[tuple[str, str], int] = {}
        for version, meta in commits(f"{lake}/{asset}"):
            gone = set(meta.get("deleted", []))
            for group in meta.get("groups", []):
                inputs = json.dumps(group.get("in", {}), sort_keys=True)
                for key in group.get("keys", []):
                    published[(asset, key, version)] += 1
                    if key in gone:
                        deleted.add((asset, key, version))
                    seen = first.setdefault((key, inputs), version)
                    if seen != version:
                        outcome.add(
                            "double publish",
                            f"{asset} {key} at versions {seen} and {version}, both with inputs {inputs}",
                        )
    events = lf.read_events(Lake(lake), kinds=["unit_published", "unit_deleted"])
    logged = Counter(
        (a, p or "", int(v))
        for a, p, v in events.select("asset", "partition", "version").iter_rows()
    )
    kinds = {
        (a, p or "", int(v)): k
        for a, p, v, k in events.select("asset", "partition", "version", "kind").iter_rows()
    }
    for unit in published:
        want = "unit_deleted" if unit in deleted else "unit_published"
        if logged.get(unit, 0) != 1 or kinds.get(unit) != want:
            outcome.add(
                "events",
                f"{unit}: published in the table, {logged.get(unit, 0)} events ({kinds.get(unit)}), want one {want}",
            )
    for unit, count in logged.items():
        if unit not in published:
            outcome.add(
                "events", f"{unit}: {count} unit_published events, no such publish in the table"
            )


def _check_status(outcome: Outcome, pipeline: lf.Pipeline, expected: dict) -> None:
    table = lf.status(pipeline)
    for row in table.iter_rows(named=True):
        if row["asset"] not in expected:
            continue
        if row["stale"]:
            outcome.add("status", f"{row['asset']}: {row['stale']} stale")
        unbuilt = row["missing"] + row["failed"] + row["blocked"] + row["check_failed"]
        allowed = row["partitions"] - len(expected[row["asset"]][0])
        if unbuilt > allowed:
            outcome.add(
                "status",
                f"{row['asset']}: {unbuilt} missing/failed, the model has data for all but {allowed}",
            )


def _check_attempts(outcome: Outcome, pipeline: lf.Pipeline, lake: str) -> None:
    """No unit of a run was tried more often than its retry policy allows (also across a
    controller restart, which resumes the run under the same id)."""
    events = lf.read_events(Lake(lake), kinds=["unit_retry", "unit_failed"])
    charged = Counter()
    for run, kind, asset, key, detail in events.select(
        "run_id", "kind", "asset", "partition", "detail"
    ).iter_rows():
        if kind == "unit_retry" and detail and json.loads(detail).get("charged") is False:
            continue
        charged[(run, asset, key)] += 1
    for (run, asset, key), count in charged.items():
        if asset in pipeline.assets and count > pipeline[asset].retry.attempts:
            outcome.add(
                "attempts",
                f"{asset} {key} in run {run}: {count} charged failures, policy allows {pipeline[asset].retry.attempts}",
            )


def seeds_from_env(default: list[int]) -> list[int]:
    """`LAKEFLOW_STRESS_SEED=7` or `=7,9` replaces the default seeds."""
    value = os.environ.get(SEED_ENV, "").strip()
    return [int(s) for s in value.split(",") if s.strip()] if value else default
