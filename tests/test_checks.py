"""Native checks on polars frames: counts, examples, severities, and errors that count as failed."""

import datetime as dt

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.define.checks import CheckEnv, run_checks
from lakeflow.define.partitions import Partition
from lakeflow.errors import DefinitionError

FRAME = pl.LazyFrame({
    "id": [1, 2, 3, 4, 4, 6, 7],
    "carrier": ["AA", "UA", None, "DL", "AA", "ZZ", "AA"],
    "air_time": [120.0, -5.0, 60.0, None, 2000.0, 45.0, 30.0],
    "day": [dt.date(2013, 1, d) for d in (1, 1, 2, 2, 3, 3, 31)],
    "ts": [dt.datetime(2013, 1, 1, h, tzinfo=dt.UTC) for h in range(7)],
    "tail": ["N1", "N2", "bad tail", "N4", "N5", "N6", None],
})  # fmt: skip
ENV = CheckEnv(
    "flights",
    Partition(
        "2013-01-01", dt.datetime(2013, 1, 1, tzinfo=dt.UTC), dt.datetime(2013, 1, 2, tzinfo=dt.UTC)
    ),
)


def run(*checks, frame=FRAME, env=ENV):
    return {r.check: r for r in run_checks(list(checks), frame, env)}


def test_row_checks_count_failing_rows_and_keep_a_few_examples():
    results = run(
        lf.not_null("carrier"),
        lf.between("air_time", 0, 1000),
        lf.in_set("carrier", ["AA", "UA", "DL"]),
        lf.matches("tail", r"^N\d+$"),
    )
    null = results["not_null(carrier)"]
    assert (null.status, null.failing, null.rows) == ("failed", 1, 7) and null.examples[0][
        "id"
    ] == 3
    air = results["between(air_time, 0, 1000)"]
    assert air.failing == 2 and sorted(e["air_time"] for e in air.examples) == [
        -5.0,
        2000.0,
    ]  # nulls are not_null's business
    assert "2 of 7 rows" in air.message and air.blocking
    assert (
        results["in_set(carrier)"].failing == 1
        and results["in_set(carrier)"].examples[0]["carrier"] == "ZZ"
    )
    assert results["matches(tail, '^N\\\\d+$')"].failing == 1


def test_passing_checks_pass():
    results = run(
        lf.not_null("id"),
        lf.between("day", "2013-01-01", "2013-01-31"),
        lf.row_count(min=1, max=10),
        lf.unique("ts"),
    )
    assert all(r.status == "passed" and not r.blocking for r in results.values())


def test_date_and_timestamp_bounds_given_as_text():
    results = run(
        lf.between("day", "2013-01-02", None), lf.between("ts", None, "2013-01-01T03:00:00")
    )
    assert results["between(day, 2013-01-02, None)"].failing == 2
    assert results["between(ts, None, 2013-01-01T03:00:00)"].failing == 3


def test_unique_reports_duplicates_with_their_copies():
    result = run(lf.unique("id"))["unique(id)"]
    assert (result.status, result.failing) == ("failed", 1)
    assert result.examples == ({"id": 4, "copies": 2},)
    assert run(lf.unique("id", "carrier"))["unique(id, carrier)"].status == "passed"


def test_row_count_schema_and_freshness():
    assert run(lf.row_count(min=10))["row_count(10, None)"].status == "failed"
    schema = run(lf.schema({"id": pl.Int64, "carrier": "String", "missing": pl.Int64}))["schema"]
    assert schema.status == "failed" and schema.message == "missing missing"
    assert run(lf.schema({"id": pl.Int64}, exact=True))["schema"].failing == 5
    fresh = lf.freshness("ts", dt.timedelta(hours=20), relative_to="partition_end")
    assert run(fresh)[fresh.name].status == "passed"  # newest 06:00, window ends 24:00 -> 18 h
    stale = lf.freshness("ts", dt.timedelta(hours=1))
    assert "old (max 1:00:00)" in run(stale)[stale.name].message


def test_custom_checks_from_an_expression_or_a_function():
    results = run(
        lf.check(pl.col("air_time") < 1500, name="air_time < 1500"),
        lf.check(lambda frame: frame.select(pl.len()).collect().item() > 3, name="enough rows"),
        lf.check(lambda frame: 2, name="two bad", severity="warn"),
    )
    assert results["air_time < 1500"].failing == 1  # null air_time is not counted as failing
    assert results["enough rows"].status == "passed"
    two = results["two bad"]
    assert (two.status, two.failing, two.blocking) == ("failed", 2, False)


def test_a_missing_column_is_an_error_naming_the_check_and_the_column():
    results = run(lf.not_null("carier"), lf.between("air_time", 0, 10))
    error = results["not_null(carier)"]
    assert error.status == "error" and error.blocking
    assert "column 'carier' does not exist (columns: id, carrier" in error.message
    assert results["between(air_time, 0, 10)"].status == "failed"  # the others still ran


def test_a_check_that_raises_counts_as_failed_with_its_message():
    def explode(frame):
        raise RuntimeError("lookup service down")

    result = run(lf.check(explode, name="lookup"))["lookup"]
    assert result.status == "error" and result.blocking
    assert "RuntimeError: lookup service down" in result.summary()


def test_a_bad_expression_is_attributed_to_its_check():
    results = run(lf.check(pl.col("carrier") > 5, name="nonsense"), lf.not_null("id"))
    assert results["nonsense"].status == "error"
    assert results["not_null(id)"].status == "passed"


def test_references_read_the_other_table():
    airlines = pl.LazyFrame({"code": ["AA", "UA", "DL"]})
    env = CheckEnv("flights", ENV.partition, inputs={"airlines": airlines})
    result = run(lf.references("carrier", "airlines", "code"), env=env)[
        "references(carrier -> airlines.code)"
    ]
    assert (result.status, result.failing) == ("failed", 1) and result.examples == (
        {"carrier": "ZZ", "rows": 1},
    )


def test_definitions_are_validated():
    with pytest.raises(DefinitionError, match="severity must be"):
        lf.not_null("a", severity="fatal")
    with pytest.raises(DefinitionError, match="needs a low or a high"):
        lf.between("a")
    with pytest.raises(DefinitionError, match="bad pattern"):
        lf.matches("a", "(")

    def orders() -> pl.DataFrame:
        return pl.DataFrame()

    with pytest.raises(DefinitionError, match="is not a check"):
        lf.asset(checks=["not_null"])(orders)


def test_references_make_the_other_asset_a_dependency():
    @lf.asset(checks=[lf.references("carrier", "airlines")])
    def flights() -> pl.DataFrame:
        return pl.DataFrame()

    assert "airlines" in flights.inputs and "airlines" not in flights.data_inputs
    assert [c.scope for c in flights.checks] == ["unit"]
    assert lf.unique("id", scope="table").scope == "table"


def test_unique_may_set_rows_with_a_null_aside_as_sql_does():
    frame = pl.LazyFrame({"code": ["a", None, None, "b"], "part": [1, 1, None, None]})
    counted = run(lf.unique("code"), frame=frame)["unique(code)"]
    assert (counted.status, counted.failing) == ("failed", 1)  # by default a null is a value
    assert run(lf.unique("code", ignore_nulls=True), frame=frame)["unique(code)"].status == "passed"
    # a null in any of the columns sets its row aside; the rest must still be unique
    both = run(lf.unique("code", "part", ignore_nulls=True), frame=frame.with_columns(part=1))
    assert both["unique(code, part)"].status == "passed"
    repeated = pl.LazyFrame({"code": ["a", "a", None, None]})
    kept = run(lf.unique("code", ignore_nulls=True), frame=repeated)["unique(code)"]
    assert (kept.failing, kept.rows, kept.examples) == (1, 2, ({"code": "a", "copies": 2},))


def test_in_set_compares_values_as_the_column_type():
    results = run(
        lf.in_set("id", ["1", "2", "3", "4"]),  # quoted numbers, as a YAML list often has them
        lf.in_set("carrier", [1, 2]),
        lf.in_set("day", ["2013-01-01", "2013-01-02"]),
    )
    assert results["in_set(id)"].failing == 2  # 6 and 7
    assert results["in_set(carrier)"].failing == 6  # every carrier but the null one
    assert results["in_set(day)"].failing == 3
    bad = run(lf.in_set("id", ["1", "x"]))["in_set(id)"]
    assert bad.status == "error" and bad.blocking
    assert "in_set(id): value 'x' is not a Int64, the type of column 'id'" in bad.message
