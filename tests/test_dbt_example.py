"""The example dbt project (`pipelines/flights_dbt`) over January of the flights lake, built by
lakeflow (`pipelines/flights_dbt.py`: each model an asset) and by plain `dbt build` with dbt-duckdb
from the same inputs: every row of every model equal, every test passing in both, the marts
agreeing with the Python pipeline's, and the planted weather day failing exactly the test written
for it in both — where lakeflow holds that one day and dbt skips the whole mart."""

import os
import subprocess
import sys

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import lakeflow as lf
from pipelines import flights, flights_dbt
from tests.dbt_reference import FLIGHTS_DBT, ROOT, dbt_build, export_sources

MODELS = {"stg_flights", "stg_weather", "daily_carrier_delays", "carrier_summary"}


@pytest.fixture(scope="module")
def january(tmp_path_factory):
    lake = str(tmp_path_factory.mktemp("flights") / "lake")
    result = lf.materialize(
        flights_dbt.pipeline, partitions="2013-01-01..2013-01-31", lake=lake, executor="local"
    )
    assert result.ok, result
    assert result.counts() == {"published": 1 + 4 * 31 + 1 + 3 * 31 + 1 + 1}  # flights, dbt, Python
    yield lake
    lf.stop(lake)


@pytest.fixture(scope="module")
def reference(january, tmp_path_factory):
    work = tmp_path_factory.mktemp("dbt")
    before = _writable()
    built = dbt_build(FLIGHTS_DBT, export_sources(january, work / "sources"), work / "run")
    assert _writable() == before  # dbt wrote nothing into the repository
    return built


def _writable() -> dict[str, tuple[int, int] | None]:
    """What running dbt or loading the example could write in the repository: every file under
    pipelines/ (the project and its pipeline module), with its size and modification time, and
    the names at the top (dbt's logs/ and target/, DuckDB's .tmp/ would land in the working
    folder). The rest is left out: an edit made elsewhere while the tests run is not theirs."""
    files = [p for p in (ROOT / "pipelines").rglob("*") if p.is_file()]
    return {
        **{str(p.relative_to(ROOT)): None for p in ROOT.iterdir()},
        **{str(p.relative_to(ROOT)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files},
    }


def test_loading_the_example_writes_its_compile_cache_and_nothing_else(tmp_path):
    """Importing pipelines/flights_dbt.py compiles the dbt project when its cache is not valid
    (a new DBT_ variable makes it so): the one thing written is that cache, in the project's
    target/lakeflow/ that git ignores."""
    status = ["git", "status", "--porcelain", "--", "pipelines"]
    tracked = subprocess.run(status, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    before = _writable()
    environment = {**os.environ, "DBT_LAKEFLOW_TEST_RUN": tmp_path.name, "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    code = "import sys, pipelines.flights_dbt; print('dbt' in sys.modules)"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    after = _writable()
    written = sorted(
        name for name in after.keys() | before.keys() if after.get(name, 0) != before.get(name, 0)
    )
    cache = "pipelines/flights_dbt/target/lakeflow/"
    try:
        assert run.stdout.split() == ["True"], run.stderr  # it compiled, with dbt
        assert written and all(name.startswith(cache) for name in written), written
        assert subprocess.run(status, cwd=ROOT, capture_output=True, text=True).stdout == tracked
    finally:
        for name in written:
            if name not in before:
                (ROOT / name).unlink()


def test_every_model_builds_and_every_test_passes(reference):
    assert reference.model_status == dict.fromkeys(MODELS, "success")
    tests = reference.results.filter(pl.col("resource_type") == "test")
    assert tests.height == 20 and set(tests["status"].to_list()) == {"pass"}
    unique_obs_id = tests.filter(pl.col("name") == "unique_stg_weather_obs_id")["unique_id"][0]
    assert unique_obs_id.startswith("test.flights_dbt.unique_stg_weather_obs_id.")
    assert (
        reference.test_status[unique_obs_id] == reference.test_status["unique_stg_weather_obs_id"]
    )
    assert set(reference.tables) == MODELS


def test_the_models_count_what_the_data_holds(reference):
    january = flights._all_flights().filter(pl.col("month") == 1)
    departed = january.filter(pl.col("dep_time").is_not_null() & pl.col("air_time").is_not_null())
    tables = reference.tables
    assert tables["stg_flights"].height == departed.height == 26_398
    assert (
        tables["stg_weather"].height == flights._all_weather().filter(pl.col("month") == 1).height
    )
    assert (
        tables["stg_flights"]["date"].n_unique() == tables["stg_weather"]["date"].n_unique() == 31
    )
    assert tables["daily_carrier_delays"]["flights"].sum() == departed.height
    summary = tables["carrier_summary"]
    assert (
        summary.height == departed["carrier"].n_unique()
        and summary["carrier_name"].null_count() == 0
    )


def test_the_daily_mart_equals_the_pipelines_daily_delays(january, reference):
    """The dbt mart and the Python asset compute the same figures in different languages."""
    ours = pl.read_delta(f"{january}/daily_delays").rename(
        {"mean_dep_delay": "mean_dep_delay_minutes", "mean_arr_delay": "mean_arr_delay_minutes",
         "precip_in": "precipitation_in"}
    )  # fmt: skip
    key = ["date", "carrier", "origin"]
    columns = ["flights", "mean_dep_delay_minutes", "mean_arr_delay_minutes", "share_delayed",
               "mean_wind_mph", "precipitation_in", "mean_visibility_mi"]  # fmt: skip
    dbt = reference.tables["daily_carrier_delays"].select(*key, *columns).sort(key)
    assert dbt.height == ours.height == 974
    assert_frame_equal(dbt, ours.select(*key, *columns).sort(key), check_dtypes=False, rel_tol=1e-9)


def _dbt_checks(lake):
    checks = lf.check_results(flights_dbt.pipeline, lake=lake)
    return checks.filter(pl.col("asset").is_in([m.name for m in flights_dbt.models]))


def test_lakeflow_builds_every_row_dbt_builds(january, reference):
    for model in sorted(MODELS):
        dbt = reference.tables[
            model
        ]  # DuckDB calls the lake's UTC zone Etc/UTC: the one difference
        dbt = dbt.with_columns(pl.col(pl.Datetime(time_zone="Etc/UTC")).dt.convert_time_zone("UTC"))
        ours = pl.read_delta(f"{january}/{model}").select(dbt.columns)
        assert ours.height == dbt.height > 0, model
        exact = [c for c, t in dbt.schema.items() if not t.is_float()]  # row order: exact columns
        assert_frame_equal(ours.sort(exact), dbt.sort(exact), rel_tol=1e-9)  # sums: any order


def test_lakeflow_runs_every_dbt_test_and_agrees_with_dbt(january, reference):
    checks = _dbt_checks(january)
    dbt_tests = reference.results.filter(pl.col("resource_type") == "test")
    assert set(checks["check"].to_list()) == set(dbt_tests["name"].to_list())
    assert set(checks["status"].to_list()) == {"passed"}
    assert set(dbt_tests["status"].to_list()) == {"pass"}


def test_a_feed_delivered_twice_fails_only_the_unique_obs_id_test(january, tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTS_PLANT_BAD_DAY", "2013-01-15")
    rerun = dict(
        select="raw_weather+", partitions="2013-01-15", force=True, lake=january, executor="local"
    )
    before = pl.read_delta(f"{january}/stg_weather")
    planted = lf.materialize(flights_dbt.pipeline, **rerun)
    try:
        built = dbt_build(FLIGHTS_DBT, export_sources(january, tmp_path / "sources"), tmp_path)
        after = pl.read_delta(f"{january}/stg_weather")
        failing = _dbt_checks(january).filter(pl.col("status") == "failed")
    finally:
        monkeypatch.delenv("FLIGHTS_PLANT_BAD_DAY")
        restored = lf.materialize(flights_dbt.pipeline, **rerun)
        assert restored.ok, restored
    # plain dbt: the one test fails, on that day's three repeated observations
    assert built.failed_tests() == {"unique_stg_weather_obs_id"}
    failed = built.results.filter(pl.col("name") == "unique_stg_weather_obs_id")
    assert failed["failures"].to_list() == [3]  # one repeated observation per airport
    duplicated = built.tables["stg_weather"].filter(pl.col("obs_id").is_duplicated())
    assert set(duplicated["date"].to_list()) == {"2013-01-15"}
    # dbt build skips what depends on a failed test: the whole daily mart and its tests
    skipped = built.results.filter(pl.col("status") == "skipped")["name"].to_list()
    assert "daily_carrier_delays" in skipped and "assert_share_delayed_within_0_and_1" in skipped
    assert built.model_status["carrier_summary"] == "success"
    # lakeflow: the same test fails, and only that day of stg_weather is held; readers never saw it
    assert set(failing["check"].to_list()) == {"unique_stg_weather_obs_id"}
    assert set(failing["partition"].to_list()) <= {"2013-01-15", ""}
    outcome = {
        (a, p): o for a, p, o in planted.units.select("asset", "partition", "outcome").iter_rows()
    }
    assert outcome[("stg_weather", "2013-01-15")] == "check_failed"
    assert outcome[("daily_carrier_delays", "2013-01-15")] == "blocked"
    assert outcome[("raw_weather", "2013-01-15")] == "published"
    assert after.sort(after.columns).equals(before.sort(before.columns))
