"""Table-level checks on the would-be version of a table, before its commit.

A group commit replaces some partitions of a table. The would-be version is the current
snapshot's files minus the partitions being replaced, plus the units' staged files; the table's
`scope="table"` checks run on it as a LazyFrame over those pinned Parquet files, so no version
of the table ever holds data that failed an `error` check.

When such a check fails on a group of many units, the group is bisected: halves are tried on top
of the units already accepted, down to the units that cannot join without failing the check.
They are rejected, the rest are published. With k bad units among n this takes about
2·k·log2(n/k) audits, capped at `MAX_AUDITS` (the units not told apart by then are rejected with
the bad ones). A check that could not run at all (status "error") rejects the whole group without
bisecting, and so does a table that fails the check without any of the group's units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from lakeflow.define.checks import CheckEnv, CheckResult, run_checks
from lakeflow.define.partitions import Partition
from lakeflow.execute.worker import InputSpec, read_input, resolve_pipeline
from lakeflow.lake import Lake

__all__ = ["MAX_AUDITS", "Candidate", "TableAudit", "Verdict", "audit_group", "run_table_audit"]

MAX_AUDITS = 48  # check runs one group may take to single out its bad units


@dataclass(frozen=True, slots=True)
class Candidate:
    """One unit of the group: the partition it replaces and the staged files it adds (none for a
    delete unit)."""

    key: str
    files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TableAudit:
    """A table at `version` and the units a commit would put on it.

    `base` lists (partition key, relative path) of the current files; with `whole_table` the
    snapshot is scanned through deltalake at `version` instead (tables of many files)."""

    asset: str
    table_url: str
    column: str | None
    version: int
    schema: pa.Schema | None
    candidates: tuple[Candidate, ...]
    base: tuple[tuple[str, str], ...] = ()
    whole_table: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the audit found: the results on the version that will be committed (empty when no
    unit may go), and for each rejected unit the results that rejected it."""

    results: tuple[CheckResult, ...]
    rejected: dict[str, tuple[CheckResult, ...]] = field(default_factory=dict)
    unresolved: frozenset[str] = frozenset()  # rejected with others, not told apart
    audits: int = 0
    reason: str = ""  # why the group was rejected whole, if it was

    @property
    def accepted(self) -> bool:
        return bool(self.results)


def would_be(lake: Lake, spec: TableAudit, units: Sequence[Candidate]) -> pl.LazyFrame:
    """The table as it would read after committing `units` on top of `spec.version`."""
    replaced = {u.key for u in units}
    frames = []
    if spec.whole_table and spec.version >= 0:
        frame = pl.scan_delta(
            spec.table_url, version=spec.version, storage_options=lake.delta_options()
        )
        if spec.column and replaced:
            frame = frame.filter(~pl.col(spec.column).is_in(sorted(replaced)))
        frames.append(frame if spec.column else frame.head(0) if replaced else frame)
        files: list[tuple[str, str]] = []
    else:
        files = [(k, p) for k, p in spec.base if k not in replaced]
    files += [(u.key, path) for u in units for path in u.files]
    if files or not frames:
        source = InputSpec(
            spec.asset, spec.table_url, spec.column, spec.version, tuple(files), schema=spec.schema
        )
        frames.append(read_input(lake, source))
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def _blocking(results: Sequence[CheckResult]) -> bool:
    return any(r.blocking for r in results)


def audit_group(lake: Lake, spec: TableAudit, checks: Sequence[object], env: CheckEnv) -> Verdict:
    """Run `checks` on the would-be version; single out the units that make an `error` check
    fail (see the module docstring). Never raises for a check's own failure."""
    runs = 0

    def audit(units: Sequence[Candidate], which: Sequence[object]) -> tuple[CheckResult, ...]:
        nonlocal runs
        runs += 1
        return tuple(run_checks(which, would_be(lake, spec, units), env))

    units = list(spec.candidates)
    first = audit(units, checks)
    if not _blocking(first):
        return Verdict(first, audits=runs)

    def whole(reason: str, results: tuple[CheckResult, ...]) -> Verdict:
        return Verdict((), dict.fromkeys((u.key for u in units), results), audits=runs,
                       reason=reason)  # fmt: skip

    if len(units) == 1:
        return whole("", first)
    if any(r.blocking and r.status == "error" for r in first):
        return whole("the check could not run", first)
    gates = [c for c in checks if getattr(c, "severity", "error") == "error"]
    if spec.schema is not None and _blocking(audit([], gates)):
        return whole("the table fails the check without these units", first)

    accepted: list[Candidate] = []
    rejected: dict[str, tuple[CheckResult, ...]] = {}
    unresolved: set[str] = set()

    def narrow(trial: list[Candidate], failing: tuple[CheckResult, ...]) -> None:
        """`trial` fails on top of `accepted`: keep what can go, reject the rest."""
        if len(trial) == 1 or runs >= MAX_AUDITS:
            for unit in trial:
                rejected[unit.key] = failing
            if len(trial) > 1:
                unresolved.update(u.key for u in trial)
            return
        half = len(trial) // 2
        left, right = trial[:half], trial[half:]
        tried = audit([*accepted, *left], gates)
        if not _blocking(tried):
            accepted.extend(left)
            narrow(right, failing)  # accepted + right is the trial that failed
            return
        narrow(left, tried)
        tried = audit([*accepted, *right], gates)
        if _blocking(tried):
            narrow(right, tried)
        else:
            accepted.extend(right)

    narrow(units, first)
    final = audit(accepted, checks) if accepted else ()
    if _blocking(final):  # a check that changes its mind (time, randomness): nothing goes
        return Verdict((), dict.fromkeys((u.key for u in units), final), audits=runs,
                       reason="the check failed on the units that had passed it")  # fmt: skip
    return Verdict(final, rejected, frozenset(unresolved), runs)


def table_env(lake: Lake, asset: str, checks: Sequence[object]) -> CheckEnv:
    """What table checks may read besides the table: the newest versions of the tables they
    name (`references(..., scope="table")`)."""
    needs = {n for check in checks for n in getattr(check, "needs", ())}
    options = lake.delta_options()
    others = {n: pl.scan_delta(lake.table_url(n), storage_options=options) for n in needs}
    return CheckEnv(asset, Partition(""), inputs=others)


def run_table_audit(lake: Lake, checks: Sequence[object], spec: TableAudit) -> Verdict:
    """The body of the task that audits a group commit (local thread or Ray task)."""
    return audit_group(lake, spec, checks, table_env(lake, spec.asset, checks))


def ray_table_audit(lake: Lake, pipeline_key: str, box: list, spec: TableAudit) -> Verdict:
    """The remote task (wrapped with ray.remote by the executor) that audits a group commit."""
    checks = resolve_pipeline(pipeline_key, box).assets[spec.asset].table_checks
    return run_table_audit(lake, checks, spec)
