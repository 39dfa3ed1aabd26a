"""Great Expectations suites as lakeflow checks.

    @lf.asset(checks=[lf.gx_suite("suites/flights_clean.json")])

The suite (a JSON file, read when the pipeline is defined, or an `ExpectationSuite` built in code)
runs with Great Expectations itself on the unit's staged output, and each expectation becomes one
check result. Great Expectations is imported only when a suite runs; each thread keeps its own
context (a shared one gave wrong counts, see notes/great-expectations.md). Suites load strictly: a
misspelled expectation type is an error, not a silently dropped rule, and an expectation that
errors (a missing column) counts as failed.
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lakeflow.define.checks import CheckEnv, CheckResult, Severity, _severity
from lakeflow.errors import DefinitionError

__all__ = ["GxSuite", "gx_suite"]

_LOCAL = threading.local()
_MAX_ROWS = 10_000_000


@dataclass(frozen=True)
class GxSuite:
    """A Great Expectations suite run as a check. `suite` is the suite's JSON as a dict, or None
    with `problem` saying why it could not be read (reported when the check runs)."""

    name: str
    severity: Severity
    suite: dict[str, Any] | None
    problem: str | None = None
    scope: str = "unit"

    def run(self, frame: pl.LazyFrame, env: CheckEnv) -> list[CheckResult]:
        started = time.perf_counter()
        if self.suite is None:
            return [self._error(self.problem or "no suite", started)]
        try:
            suite = _load_suite(self.suite)
        except DefinitionError as error:
            return [self._error(error.message, started)]
        data = frame.head(_MAX_ROWS).collect()
        batch = _context_batch().get_batch(batch_parameters={"dataframe": data.to_pandas()})
        outcome = batch.validate(suite)
        share = (time.perf_counter() - started) / max(
            1, len(outcome.results)
        )  # one validation, shared
        results = [self._result(r, data.height, share) for r in outcome.results]
        expectations = self.suite.get("expectations", [])
        order = {
            (e.get("type"), (e.get("kwargs") or {}).get("column")): i
            for i, e in enumerate(expectations)
        }
        results.sort(
            key=lambda pair: order.get(pair[1], len(order))
        )  # GX does not keep suite order
        return [result for result, _ in results]

    def _error(self, message: str, started: float) -> CheckResult:
        return CheckResult(
            self.name,
            self.severity,
            "error",
            message=message,
            seconds=time.perf_counter() - started,
        )

    def _result(
        self, result: Any, rows: int, seconds: float
    ) -> tuple[CheckResult, tuple[str, Any]]:
        config = result.expectation_config
        column = dict(config.kwargs).get("column")
        key = (config.type, column)
        label = f"{self.name}: {config.type}" + (f"({column})" if column else "")
        failure = _exception(result.exception_info)
        if failure is not None:
            return CheckResult(
                label, self.severity, "error", rows=rows, message=failure, seconds=seconds
            ), key
        details = result.result or {}
        failing = int(details.get("unexpected_count") or 0)
        examples = tuple(
            {"value": _plain(v)} for v in (details.get("partial_unexpected_list") or [])[:5]
        )
        if result.success:
            return CheckResult(label, self.severity, "passed", 0, rows, (), "", seconds), key
        observed = details.get("observed_value")
        message = f"{failing} of {rows} rows unexpected" if failing else f"observed {observed!r}"
        return CheckResult(
            label, self.severity, "failed", failing or 1, rows, examples, message, seconds
        ), key


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if value != value else value  # NaN stands for a missing value in pandas
    return str(value)


def _exception(info: Any) -> str | None:
    """The message of an expectation that raised (GX nests it per metric), else None."""
    if not isinstance(info, dict):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message") or "raised an exception")
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message") or "raised an exception")
    return None


def _load_suite(data: dict[str, Any]) -> Any:
    """An ExpectationSuite, built strictly: an unknown expectation type is an error."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for i, item in enumerate(data.get("expectations", [])):
        try:
            expectations.append(ExpectationConfiguration(**item).to_domain_obj())
        except Exception as error:
            kind = item.get("type", "?") if isinstance(item, dict) else "?"
            raise DefinitionError(
                f"expectation #{i + 1} ({kind}): {type(error).__name__}: {error}"
            ) from None
    if not expectations:
        raise DefinitionError("the suite has no expectations")
    return ExpectationSuite(name=data.get("name", "suite"), expectations=expectations)


def _context_batch() -> Any:
    """This thread's GX batch definition over an in-memory pandas frame."""
    batch = getattr(_LOCAL, "batch", None)
    if batch is None:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        source = context.data_sources.add_pandas("lakeflow")
        batch = source.add_dataframe_asset("output").add_batch_definition_whole_dataframe("whole")
        _LOCAL.batch = batch
    return batch


def gx_suite(
    suite: str | Path | Any, *, name: str | None = None, severity: str = "error"
) -> GxSuite:
    """A Great Expectations suite as a check: a JSON file (relative paths are resolved against
    the file that calls this) or an `ExpectationSuite` built in code."""
    level = _severity(severity)
    if isinstance(suite, str | Path):
        path = Path(suite)
        if not path.is_absolute():
            # the caller's frame only: inspect.stack() reads the source of every frame on the
            # stack (0.3 s of loading the example pipeline)
            frame = inspect.currentframe()
            caller = frame.f_back.f_code.co_filename if frame and frame.f_back else "."
            path = Path(caller).resolve().parent / path
        label = name or f"gx:{path.stem}"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return GxSuite(label, level, None, f"suite file {path} does not exist")
        except (OSError, ValueError) as error:
            return GxSuite(label, level, None, f"suite file {path} is not valid JSON: {error}")
        if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
            return GxSuite(label, level, None, f"suite file {path} has no 'expectations' list")
        return GxSuite(label, level, data)
    to_json = getattr(suite, "to_json_dict", None)
    if to_json is None:
        raise DefinitionError("gx_suite takes a JSON file path or an ExpectationSuite")
    data = json.loads(json.dumps(to_json(), default=str))
    return GxSuite(name or f"gx:{data.get('name', 'suite')}", level, data)
