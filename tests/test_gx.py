"""Great Expectations suites as checks, run by Great Expectations itself."""

import threading

import polars as pl
import pytest

import lakeflow as lf
from lakeflow.define.checks import CheckEnv, run_checks
from lakeflow.define.partitions import Partition

ENV = CheckEnv("orders", Partition("2024-01-01"))
GOOD = pl.LazyFrame({"customer": ["c1", "c2", "c3"], "amount": [5.0, 10.0, 99.0]})
BAD = pl.LazyFrame({"customer": ["c1", None, "c9", "c2"], "amount": [5.0, -1.0, 20000.0, 3.0]})


def run(check, frame):
    return {r.check: r for r in run_checks([check], frame, ENV)}


def test_a_suite_file_gives_one_result_per_expectation():
    suite = lf.gx_suite("suites/orders.json")  # relative to this file
    results = run(suite, GOOD)
    assert list(results) == [
        "gx:orders: expect_column_values_to_not_be_null(customer)",
        "gx:orders: expect_column_values_to_be_between(amount)",
        "gx:orders: expect_column_values_to_be_in_set(customer)",
        "gx:orders: expect_table_row_count_to_be_between",
    ]  # in suite order
    assert all(r.status == "passed" for r in results.values())


def test_failing_expectations_report_counts_and_examples():
    results = run(lf.gx_suite("suites/orders.json"), BAD)
    nulls = results["gx:orders: expect_column_values_to_not_be_null(customer)"]
    assert (nulls.status, nulls.failing, nulls.rows, nulls.blocking) == ("failed", 1, 4, True)
    between = results["gx:orders: expect_column_values_to_be_between(amount)"]
    assert between.failing == 2 and sorted(e["value"] for e in between.examples) == [-1.0, 20000.0]
    in_set = results["gx:orders: expect_column_values_to_be_in_set(customer)"]
    assert in_set.examples == ({"value": "c9"},)


def test_a_misspelled_expectation_type_fails_loudly():
    (result,) = run(lf.gx_suite("suites/misspelled.json"), GOOD).values()
    assert result.status == "error" and result.blocking
    assert "expectation #2 (expect_column_values_to_be_betwen)" in result.message


def test_a_malformed_or_missing_suite_file_is_an_error_naming_the_check():
    (broken,) = run(lf.gx_suite("suites/broken.json"), GOOD).values()
    assert (
        broken.check == "gx:broken"
        and broken.status == "error"
        and "not valid JSON" in broken.message
    )
    (missing,) = run(lf.gx_suite("suites/nope.json"), GOOD).values()
    assert "does not exist" in missing.message and missing.blocking


def test_an_expectation_that_errors_counts_as_failed():
    suite = lf.gx_suite("suites/orders.json")
    results = run(suite, GOOD.rename({"customer": "client"}))
    errored = results["gx:orders: expect_column_values_to_not_be_null(customer)"]
    assert errored.status == "error" and errored.blocking and "does not exist" in errored.message


def test_a_suite_built_in_code_and_warn_severity():
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations import ExpectColumnValuesToNotBeNull

    suite = ExpectationSuite(
        name="inline", expectations=[ExpectColumnValuesToNotBeNull(column="customer")]
    )
    (result,) = run(lf.gx_suite(suite, severity="warn"), BAD).values()
    assert result.check == "gx:inline: expect_column_values_to_not_be_null(customer)"
    assert result.status == "failed" and not result.blocking


def test_threads_each_get_their_own_context_and_right_counts():
    suite = lf.gx_suite("suites/orders.json")
    frames = [BAD if i % 2 else GOOD for i in range(8)]
    counts: dict[int, int] = {}

    def work(i: int) -> None:
        results = run(suite, frames[i])
        counts[i] = results["gx:orders: expect_column_values_to_be_between(amount)"].failing

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == {i: (2 if i % 2 else 0) for i in range(8)}


@pytest.mark.parametrize("bad", [42, "not-a-suite"])
def test_gx_suite_refuses_what_is_not_a_suite(bad):
    if isinstance(bad, str):
        (result,) = run(lf.gx_suite(bad), GOOD).values()
        assert result.status == "error"
    else:
        with pytest.raises(lf.DefinitionError):
            lf.gx_suite(bad)
