"""Checks: data-quality rules run on a unit's staged output before it is published (scope "unit"),
or on the version of the whole table a commit would make, before it is made (scope "table",
see `table_audit.py`).

A check has a name, a severity (`error` blocks publication, `warn` only records) and one method,
`run(frame, env) -> CheckResult`. Results are records with the number of failing rows and a few
examples. Row-level checks (not_null, between, in_set, matches, custom expressions) are evaluated
together in one pass over the data; a check that cannot run (a missing column, a function that
raises) reports `error`, which blocks like a failure.

    @lf.asset(checks=[lf.not_null("carrier"), lf.between("air_time", 0, 1000), lf.unique("id")])

This module holds what a check is and how checks run; the native checks are built in
`native_checks.py`, Great Expectations suites in `gx.py`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import polars as pl

from lakeflow.define.partitions import Partition
from lakeflow.errors import DefinitionError

__all__ = ["Check", "CheckEnv", "CheckResult", "FrameCheck", "RowCheck", "run_checks"]

Severity = Literal["error", "warn"]
Measure = tuple[int, int, str, tuple[Mapping[str, Any], ...]]  # failing, rows, message, examples
Scope = Literal["unit", "table"]
EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check on one unit (or one table version)."""

    check: str
    severity: Severity
    status: Literal["passed", "failed", "error"]
    failing: int = 0
    rows: int = 0
    examples: tuple[Mapping[str, Any], ...] = ()
    message: str = ""
    seconds: float = 0.0
    scope: Scope = "unit"

    @property
    def blocking(self) -> bool:
        """An `error` check that did not pass: the data must not be published."""
        return self.severity == "error" and self.status != "passed"

    def summary(self) -> str:
        if self.status == "passed":
            return f"{self.check} passed"
        if self.status == "error":
            return f"{self.check} could not run: {self.message}"
        shown = "; e.g. " + ", ".join(_short(e) for e in self.examples[:3]) if self.examples else ""
        return f"{self.check} failed: {self.message}{shown}"

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "status": self.status,
            "failing": self.failing,
            "rows": self.rows,
            "examples": [dict(e) for e in self.examples],
            "message": self.message,
            "seconds": round(self.seconds, 6),
            "scope": self.scope,
        }


def _short(example: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in list(example.items())[:6]) + "}"


@dataclass(frozen=True)
class CheckEnv:
    """What a check may look at besides the data: the partition, the inputs, the time."""

    asset: str
    partition: Partition
    inputs: Mapping[str, pl.LazyFrame] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@runtime_checkable
class Check(Protocol):
    """Anything with a name, a severity and `run` is a check."""

    name: str
    severity: Severity

    def run(self, frame: pl.LazyFrame, env: CheckEnv) -> CheckResult | list[CheckResult]: ...


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def examples_of(
    frame: pl.LazyFrame,
    condition: pl.Expr | None = None,
    limit: int = EXAMPLES,
    first: Sequence[str] = (),
) -> tuple[Mapping[str, Any], ...]:
    """A few rows (where `condition` holds), the columns named in `first` leading."""
    rows = (frame.filter(condition) if condition is not None else frame).head(limit).collect()
    order = [c for c in first if c in rows.columns] + [c for c in rows.columns if c not in first]
    return tuple(
        {k: _jsonable(v) for k, v in row.items()}
        for row in rows.select(order).iter_rows(named=True)
    )


def _severity(value: str) -> Severity:
    if value not in ("error", "warn"):
        raise DefinitionError(f"check severity must be 'error' or 'warn', not {value!r}")
    return value  # type: ignore[return-value]


# -- row checks: evaluated together in one pass ----------------------------------------------
@dataclass(frozen=True)
class RowCheck:
    """A rule each row must satisfy; `invalid(schema)` is true on failing rows."""

    name: str
    severity: Severity
    columns: tuple[str, ...]
    invalid: Callable[[pl.Schema], pl.Expr]
    what: str  # "rows with a null carrier"
    scope: Scope = "unit"

    def run(self, frame: pl.LazyFrame, env: CheckEnv) -> CheckResult:
        return run_checks([self], frame, env)[0]


# -- checks over the whole frame -------------------------------------------------------------
@dataclass(frozen=True)
class FrameCheck:
    """A rule about the whole frame: `measure(frame, env)` -> (failing, rows, message, examples)."""

    name: str
    severity: Severity
    columns: tuple[str, ...]
    measure: Callable[[pl.LazyFrame, CheckEnv], Measure]
    scope: Scope = "unit"
    needs: tuple[str, ...] = ()  # other assets it reads (they become dependencies)

    def run(self, frame: pl.LazyFrame, env: CheckEnv) -> CheckResult:
        return run_checks([self], frame, env)[0]


# -- running ---------------------------------------------------------------------------------
def _error(item: Any, message: str, started: float) -> CheckResult:
    return CheckResult(
        item.name,
        item.severity,
        "error",
        message=message,
        seconds=time.perf_counter() - started,
        scope=getattr(item, "scope", "unit"),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def run_checks(checks: Sequence[Any], frame: pl.LazyFrame, env: CheckEnv) -> list[CheckResult]:
    """Run `checks` on `frame`; never raises for a check's own failure. Row checks share one pass."""
    try:
        columns = frame.collect_schema()
    except Exception as error:
        return [
            _error(c, f"cannot read the output: {_first_line(error)}", time.perf_counter())
            for c in checks
        ]
    results: dict[int, CheckResult | list[CheckResult]] = {}
    rows_checks: list[tuple[int, RowCheck, pl.Expr]] = []
    for i, item in enumerate(checks):
        started = time.perf_counter()
        missing = [c for c in getattr(item, "columns", ()) if c not in columns]
        if missing:
            shown = ", ".join(list(columns)[:12])
            results[i] = _error(
                item, f"column {missing[0]!r} does not exist (columns: {shown})", started
            )
        elif isinstance(item, RowCheck):
            try:
                rows_checks.append((i, item, item.invalid(columns)))
            except Exception as error:
                results[i] = _error(item, _first_line(error), started)
    if rows_checks:
        _run_row_checks(rows_checks, frame, results)
    for i, item in enumerate(checks):
        if i in results or isinstance(item, RowCheck):
            continue
        started = time.perf_counter()
        try:
            if isinstance(item, FrameCheck):
                failing, rows, message, examples = item.measure(frame, env)
                status: Literal["passed", "failed"] = "passed" if failing == 0 else "failed"
                results[i] = CheckResult(
                    item.name,
                    item.severity,
                    status,
                    failing,
                    rows,
                    examples,
                    message,
                    time.perf_counter() - started,
                    item.scope,
                )
            else:
                results[i] = item.run(frame, env)
        except Exception as error:
            results[i] = _error(item, _first_line(error), started)
    out: list[CheckResult] = []
    for i in range(len(checks)):
        value = results[i]
        out.extend(value if isinstance(value, list) else [value])
    return out


def _run_row_checks(
    items: list[tuple[int, RowCheck, pl.Expr]], frame: pl.LazyFrame, results: dict
) -> None:
    started = time.perf_counter()
    try:
        counts = (
            frame.select(
                pl.len().alias("__rows"), *[expr.sum().alias(f"__c{i}") for i, _, expr in items]
            )
            .collect()
            .row(0)
        )
    except Exception:
        if len(items) > 1:  # attribute the error to the check that caused it
            for single in items:
                _run_row_checks([single], frame, results)
            return
        results[items[0][0]] = _error(items[0][1], "evaluation failed", started)
        try:
            frame.select(items[0][2].sum()).collect()
        except Exception as error:
            results[items[0][0]] = _error(items[0][1], _first_line(error), started)
        return
    rows = int(counts[0])
    shared = (time.perf_counter() - started) / len(items)
    for (i, item, expr), failing in zip(items, counts[1:], strict=True):
        failing = int(failing or 0)
        if failing == 0:
            results[i] = CheckResult(
                item.name, item.severity, "passed", 0, rows, (), "", shared, item.scope
            )
            continue
        clock = time.perf_counter()
        examples = examples_of(frame, expr, first=item.columns)
        message = f"{failing} of {rows} rows: {item.what}"
        results[i] = CheckResult(
            item.name,
            item.severity,
            "failed",
            failing,
            rows,
            examples,
            message,
            shared + time.perf_counter() - clock,
            item.scope,
        )
