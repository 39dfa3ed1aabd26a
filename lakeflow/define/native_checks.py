"""The native checks: rules built on polars expressions, evaluated by `checks.run_checks`.

Row rules (not_null, between, in_set, matches, a custom expression) become one `RowCheck` each
and share one pass over the data; rules about the whole frame (unique, row_count, schema,
freshness, references, a custom function) are `FrameCheck`s.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import polars as pl

from lakeflow.define.checks import (
    CheckEnv,
    CheckResult,
    FrameCheck,
    Measure,
    RowCheck,
    Scope,
    _severity,
    examples_of,
)
from lakeflow.errors import DefinitionError

__all__ = [
    "between",
    "check",
    "freshness",
    "in_set",
    "matches",
    "not_null",
    "references",
    "row_count",
    "schema",
    "unique",
]


def not_null(*columns: str, severity: str = "error", name: str | None = None) -> RowCheck:
    """Every row has a value in each of `columns`."""
    if not columns:
        raise DefinitionError("not_null needs at least one column")
    return RowCheck(
        name or f"not_null({', '.join(columns)})",
        _severity(severity),
        columns,
        lambda schema: pl.any_horizontal([pl.col(c).is_null() for c in columns]),
        f"rows with a null {' or '.join(columns)}",
    )


def _bound(value: Any, dtype: pl.DataType) -> Any:
    """A bound given as text compares as the column's type (dates and timestamps)."""
    if isinstance(value, str) and dtype == pl.Date:
        return dt.date.fromisoformat(value)
    if isinstance(value, str) and isinstance(dtype, pl.Datetime):
        parsed = dt.datetime.fromisoformat(value)
        if dtype.time_zone and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed
    return value


def between(
    column: str,
    low: Any = None,
    high: Any = None,
    *,
    severity: str = "error",
    name: str | None = None,
) -> RowCheck:
    """Every non-null value of `column` lies in [low, high] (either bound may be None).
    Bounds may be numbers, dates, datetimes or ISO strings for date/timestamp columns."""
    if low is None and high is None:
        raise DefinitionError("between needs a low or a high bound")

    def invalid(schema: pl.Schema) -> pl.Expr:
        col, dtype = pl.col(column), schema[column]
        bad = pl.lit(False)
        if low is not None:
            bad = bad | (col < _bound(low, dtype))
        if high is not None:
            bad = bad | (col > _bound(high, dtype))
        return col.is_not_null() & bad

    if high is None:
        shown = f"{column} below {low}"
    elif low is None:
        shown = f"{column} above {high}"
    else:
        shown = f"{column} outside [{low}, {high}]"
    return RowCheck(
        name or f"between({column}, {low}, {high})",
        _severity(severity),
        (column,),
        invalid,
        f"rows with {shown}",
    )


def in_set(
    column: str, values: Iterable[Any], *, severity: str = "error", name: str | None = None
) -> RowCheck:
    """Every non-null value of `column` is one of `values`, compared as the column's type: "1"
    matches an integer 1 and "2013-01-05" a date, as SQL compares a quoted literal (a YAML list of
    values, dbt's `accepted_values`, often quotes numbers)."""
    allowed = list(values)
    label = name or f"in_set({column})"

    def invalid(schema: pl.Schema) -> pl.Expr:
        accepted = _as_type(allowed, schema[column], f"{label}: value {{!r}} is not a {{}}, the "
                            f"type of column {column!r}")  # fmt: skip
        return pl.col(column).is_not_null() & ~pl.col(column).is_in(accepted)

    return RowCheck(
        label,
        _severity(severity),
        (column,),
        invalid,
        f"rows with {column} not in {allowed[:5]}{'…' if len(allowed) > 5 else ''}",
    )


def _as_type(values: list[Any], dtype: pl.DataType, refusal: str) -> pl.Series:
    """`values` as a Series of `dtype`; one that is not of that type is a ValueError, `refusal`
    formatted with the value and the type."""
    series = pl.Series([_bound(v, dtype) for v in values], strict=False)
    try:
        return series.cast(dtype)
    except pl.exceptions.PolarsError:
        lost = series.cast(dtype, strict=False).is_null() & series.is_not_null()
        raise ValueError(refusal.format(series.filter(lost)[0], dtype)) from None


def matches(
    column: str, pattern: str, *, severity: str = "error", name: str | None = None
) -> RowCheck:
    """Every non-null value of `column` matches the regular expression `pattern` (anywhere;
    anchor it with ^…$ to match whole values)."""
    try:
        re.compile(pattern)
    except re.error as error:
        raise DefinitionError(f"matches({column}): bad pattern {pattern!r}: {error}") from None
    return RowCheck(
        name or f"matches({column}, {pattern!r})",
        _severity(severity),
        (column,),
        lambda schema: (
            pl.col(column).is_not_null() & ~pl.col(column).cast(pl.String).str.contains(pattern)
        ),
        f"rows with {column} not matching {pattern!r}",
    )


def unique(
    *columns: str,
    scope: Scope = "unit",
    ignore_nulls: bool = False,
    severity: str = "error",
    name: str | None = None,
) -> FrameCheck:
    """No two rows share the values of `columns`: in the unit's output (scope="unit"), or in the
    whole table as each commit would leave it, checked before the commit (scope="table").

    A null is a value like any other here, so two rows with a null id are duplicates: a key
    column that repeats nulls is a defect worth a failure. `ignore_nulls=True` sets aside the
    rows with a null in any of `columns`, as a SQL UNIQUE constraint and dbt's `unique` do."""
    if not columns:
        raise DefinitionError("unique needs at least one column")
    cols = list(columns)

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        if ignore_nulls:
            frame = frame.drop_nulls(cols)
        counts = (
            frame.select(pl.len().alias("rows"), pl.struct(cols).n_unique().alias("distinct"))
            .collect()
            .row(0)
        )
        rows, distinct = int(counts[0]), int(counts[1])
        if rows == distinct:
            return 0, rows, "", ()
        dupes = (
            frame.group_by(cols)
            .agg(pl.len().alias("copies"))
            .filter(pl.col("copies") > 1)
            .sort("copies", descending=True)
        )
        return (
            rows - distinct,
            rows,
            f"{rows - distinct} duplicate rows of {', '.join(cols)}",
            examples_of(dupes),
        )

    return FrameCheck(
        name or f"unique({', '.join(columns)})", _severity(severity), tuple(columns), measure, scope
    )


def row_count(
    min: int | None = None,
    max: int | None = None,
    *,
    severity: str = "error",
    name: str | None = None,
) -> FrameCheck:
    """The number of rows lies in [min, max]."""
    if min is None and max is None:
        raise DefinitionError("row_count needs min or max")

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        rows = int(frame.select(pl.len()).collect().item())
        ok = (min is None or rows >= min) and (max is None or rows <= max)
        return (
            (0 if ok else 1),
            rows,
            ("" if ok else f"{rows} rows, expected [{min or ''}, {max or ''}]"),
            (),
        )

    return FrameCheck(name or f"row_count({min}, {max})", _severity(severity), (), measure)


def schema(
    columns: Mapping[str, Any],
    *,
    exact: bool = False,
    severity: str = "error",
    name: str | None = None,
) -> FrameCheck:
    """The output has these columns with these polars types (`pl.Int64`, or a name like "Int64");
    with `exact`, no other columns."""

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        actual = frame.collect_schema()
        problems = []
        for column, wanted in columns.items():
            if column not in actual:
                problems.append(f"missing {column}")
            elif str(actual[column]) != str(wanted) and actual[column] != wanted:
                problems.append(f"{column} is {actual[column]}, expected {wanted}")
        if exact:
            problems += [f"unexpected {c}" for c in actual if c not in columns]
        return len(problems), len(actual), "; ".join(problems), ()

    return FrameCheck(name or "schema", _severity(severity), (), measure)


def freshness(
    column: str,
    max_age: dt.timedelta,
    *,
    relative_to: Literal["now", "partition_end"] = "now",
    severity: str = "error",
    name: str | None = None,
) -> FrameCheck:
    """The newest `column` timestamp is at most `max_age` old (against now, or the end of the
    unit's time window)."""

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        newest, rows = frame.select(pl.col(column).max(), pl.len()).collect().row(0)
        reference = env.now if relative_to == "now" else (env.partition.end or env.now)
        if newest is None:
            return 1, int(rows), f"no {column} values", ()
        if isinstance(newest, dt.datetime) and newest.tzinfo is None:
            newest = newest.replace(tzinfo=dt.UTC)
        elif not isinstance(newest, dt.datetime):
            newest = dt.datetime.combine(newest, dt.time(), dt.UTC)
        age = reference - newest
        ok = age <= max_age
        return (
            (0 if ok else 1),
            int(rows),
            ("" if ok else f"newest {column} is {newest.isoformat()}, {age} old (max {max_age})"),
            (),
        )

    return FrameCheck(
        name or f"freshness({column}, {max_age})", _severity(severity), (column,), measure
    )


def references(
    column: str,
    asset: str,
    other_column: str | None = None,
    *,
    scope: Scope = "unit",
    severity: str = "error",
    name: str | None = None,
) -> FrameCheck:
    """Every non-null `column` value appears in `other_column` of `asset`'s table. `asset` becomes
    a dependency; with scope="unit" its table is read at the version the run pinned, with
    scope="table" the whole table as each commit would leave it is checked, before the commit,
    against `asset`'s newest version."""
    target = other_column or column

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        known = env.inputs.get(asset)
        if known is None:
            raise DefinitionError(f"references: the table of {asset} was not given to the check")
        values = frame.select(column).filter(pl.col(column).is_not_null())
        orphans = values.join(
            known.select(pl.col(target).alias(column)).unique(), on=column, how="anti"
        )
        failing, rows = (
            orphans.select(pl.len()).collect().item(),
            values.select(pl.len()).collect().item(),
        )
        if not failing:
            return 0, int(rows), "", ()
        shown = orphans.group_by(column).agg(pl.len().alias("rows")).sort("rows", descending=True)
        return (
            int(failing),
            int(rows),
            f"{failing} rows with a {column} missing from {asset}.{target}",
            examples_of(shown),
        )

    return FrameCheck(
        name or f"references({column} -> {asset}.{target})",
        _severity(severity),
        (column,),
        measure,
        scope,
        needs=(asset,),
    )


def check(
    rule: pl.Expr | Callable[..., Any],
    *,
    name: str | None = None,
    severity: str = "error",
    scope: Scope = "unit",
) -> RowCheck | FrameCheck:
    """A custom check.

    - a polars expression that is true on valid rows: `lf.check(pl.col("a") <= pl.col("b"), name="a<=b")`
      (a null result passes, as in a SQL CHECK constraint: nulls are not_null's business)
    - a function of the frame (a LazyFrame) returning True/False, a number of failing rows, or a
      `CheckResult`: `lf.check(lambda df: df.select(pl.len()).collect().item() > 0, name="not empty")`
    """
    if isinstance(rule, pl.Expr):
        label_expr = name or f"check({rule})"
        return RowCheck(
            label_expr,
            _severity(severity),
            (),
            lambda schema: ~rule.fill_null(True),
            f"rows failing {label_expr}",
            scope,
        )
    if not callable(rule):
        raise DefinitionError("check() takes a polars expression or a function")
    label: str = name or str(getattr(rule, "__name__", "check"))

    def measure(frame: pl.LazyFrame, env: CheckEnv) -> Measure:
        outcome = rule(frame)
        if isinstance(outcome, CheckResult):
            return outcome.failing, outcome.rows, outcome.message, outcome.examples
        if isinstance(outcome, bool):
            return (0 if outcome else 1), 0, ("" if outcome else "returned False"), ()
        if isinstance(outcome, int):
            return outcome, 0, (f"{outcome} failing rows" if outcome else ""), ()
        raise TypeError(
            f"a check function must return bool, int or CheckResult, not {type(outcome).__name__}"
        )

    return FrameCheck(label, _severity(severity), (), measure, scope)
