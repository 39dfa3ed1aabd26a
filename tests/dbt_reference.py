"""The reference for lakeflow's dbt assets: the example project (`pipelines/flights_dbt`) run by
plain dbt, in this process, through dbt-core's Python API (`dbtRunner`).

Lakeflow's outputs for a dbt project are right when they equal what `dbt build` makes of the same
sources, so tests export the lake's source tables as the Parquet files the project reads
(`export_sources`), build it (`dbt_build`) and compare. Everything dbt writes (its DuckDB file,
`target/`, `logs/`) goes under a working folder the caller gives, never into the repository.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
from dbt.cli.main import dbtRunner

ROOT = Path(__file__).resolve().parent.parent
FLIGHTS_DBT = ROOT / "pipelines" / "flights_dbt"
"""The example project; its sources are the flights pipeline's tables below."""

FLIGHTS_SOURCES = ("raw_flights", "raw_weather", "airlines")

SOURCES_ENV = "FLIGHTS_DBT_SOURCES"
"""The folder of `<table>.parquet` files the project's sources read (models/sources.yml)."""

DUCKDB_ENV = "FLIGHTS_DBT_DUCKDB"
"""The DuckDB file the project's profile builds into (profiles.yml)."""


class DbtFailed(RuntimeError):
    """dbt could not run the command at all (a parse or connection error), as opposed to a run
    whose models or tests failed, which `DbtReference` reports."""


@dataclass(frozen=True)
class DbtReference:
    """What one plain dbt command made of the project.

    `results` has one row per node the command ran: unique_id, name (the short name, e.g.
    `unique_stg_weather_obs_id`), resource_type (model, test, ...), status (models: success,
    error, skipped; tests: pass, fail, warn, error, skipped), failures (rows a test found; null for
    models) and message. `tables` holds each model dbt built, by name, as read back from
    `database` after the command.
    """

    results: pl.DataFrame
    tables: dict[str, pl.DataFrame]
    database: Path
    wall_seconds: float

    @property
    def model_status(self) -> dict[str, str]:
        """Each model's status, by name."""
        return self._status("model", "name")

    @property
    def test_status(self) -> dict[str, str]:
        """Each test's status, keyed both by its unique_id and by its short name."""
        return self._status("test", "unique_id") | self._status("test", "name")

    def failed_tests(self) -> set[str]:
        """The short names of the tests that failed or errored (a `warn` is not a failure)."""
        tests = self.results.filter(
            (pl.col("resource_type") == "test") & pl.col("status").is_in(["fail", "error"])
        )
        return set(tests["name"].to_list())

    def _status(self, resource_type: str, key: str) -> dict[str, str]:
        rows = self.results.filter(pl.col("resource_type") == resource_type)
        return dict(zip(rows[key].to_list(), rows["status"].to_list(), strict=True))


def export_sources(
    lake_path: str | Path, folder: str | Path, tables: Sequence[str] = FLIGHTS_SOURCES
) -> Path:
    """Write each Delta table of the lake as `<folder>/<table>.parquet`, partition column included
    (a Delta table keeps it in its directory names, not in its files); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for table in tables:
        pl.read_delta(f"{lake_path}/{table}").write_parquet(folder / f"{table}.parquet")
    return folder


def dbt_build(
    project_dir: str | Path, sources_dir: str | Path, workdir: str | Path
) -> DbtReference:
    """Run `dbt build` (models, then the tests of each, downstream of a failed test skipped) into
    a new DuckDB file under `workdir`, and read back every model it built."""
    return _invoke("build", project_dir, sources_dir, workdir)


def dbt_test_results(
    project_dir: str | Path, sources_dir: str | Path, workdir: str | Path
) -> DbtReference:
    """Run only `dbt test` against the DuckDB file under `workdir` (built there before, by
    `dbt_build` or by anything that wrote the models' tables into it)."""
    return _invoke("test", project_dir, sources_dir, workdir)


def _invoke(
    command: str, project_dir: str | Path, sources_dir: str | Path, workdir: str | Path
) -> DbtReference:
    project_dir, workdir = Path(project_dir), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "dbt.duckdb"
    args = [
        command,
        "--project-dir", str(project_dir),
        "--profiles-dir", str(project_dir),
        "--target-path", str(workdir / "target"),
        "--log-path", str(workdir / "logs"),
    ]  # fmt: skip
    env = {SOURCES_ENV: str(Path(sources_dir).resolve()), DUCKDB_ENV: str(database)}
    started = time.perf_counter()
    with _environment(env):
        outcome = dbtRunner().invoke(args)
    wall_seconds = time.perf_counter() - started
    if outcome.exception is not None or outcome.result is None:
        raise DbtFailed(f"dbt {command} in {project_dir} did not run: {outcome.exception}")
    results = pl.DataFrame(
        [
            {
                "unique_id": result.node.unique_id,
                "name": result.node.name,
                "resource_type": str(result.node.resource_type),
                "status": str(result.status),
                "failures": result.failures,
                "message": result.message,
            }
            for result in outcome.result.results
        ],
        schema={
            "unique_id": pl.String, "name": pl.String, "resource_type": pl.String,
            "status": pl.String, "failures": pl.Int64, "message": pl.String,
        },
    )  # fmt: skip
    built = results.filter((pl.col("resource_type") == "model") & (pl.col("status") == "success"))
    return DbtReference(
        results=results,
        tables=_read_tables(database, built["name"].to_list()),
        database=database,
        wall_seconds=wall_seconds,
    )


def _read_tables(database: Path, names: Sequence[str]) -> dict[str, pl.DataFrame]:
    """The named tables of the profile's default schema (`main`), read after dbt closed the file."""
    if not names:
        return {}
    with duckdb.connect(str(database), read_only=True) as connection:
        return {name: connection.sql(f'select * from main."{name}"').pl() for name in names}


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for one dbt command (its profile and sources read them through
    `env_var`), then put back what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
