"""dbt projects as assets: real dbt-core compiles a small project in tmp_path, real DuckDB runs the
models per partition on the local executor, and dbt's tests gate what is published. One project
is also built by plain `dbt build` (dbt-duckdb, sources as Parquet) and compared row for row."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

import lakeflow as lf
from lakeflow.cli import main
from lakeflow.define import dbt_compile
from lakeflow.define.checks import CheckEnv, run_checks
from lakeflow.define.dbt import DbtTest
from lakeflow.define.partitions import Partition
from lakeflow.define.sql import sql_model
from tests.conftest import ROOT, lake_fingerprint

DAYS = lf.DailyPartitions(start="2024-01-01", end="2024-01-04", column="day")
WINDOW = '{partitions: daily, start: "2024-01-01", end: "2024-01-04", column: day}'
ORDERS = {
    "order_id": [1, 2, 3, 4, 5, 6],
    "customer_id": [10, 20, 10, 30, 20, 10],
    "status": ["open", "done", "done", "lost", "open", "done"],
    "amount": [1.5, 2.0, 3.25, 4.0, 0.5, 7.0],
    "coupon": [None, "a", None, None, "b", None],  # unique, as dbt's unique is: nulls aside
    "day": ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03", "2024-01-03"],
}
CUSTOMERS = {"id": [10, 20, 30], "name": ["ann", "bob", "cy"]}

PROJECT = {
    "dbt_project.yml": "name: shop\nversion: '1.0'\nprofile: shop\nconfig-version: 2\n"
    "vars:\n  rate: 100\n",
    "models/sources.yml": f"""\
version: 2
sources:
  - name: raw
    config:
      meta: {{EXTERNAL}}
    tables:
      - name: orders
        config:
          meta: {{lakeflow: {WINDOW}}}
      - name: customers
        columns:
          - name: id
            data_tests: [not_null]
""",
    "models/schema.yml": f"""\
version: 2
models:
  - name: stg_orders
    config:
      meta: {{lakeflow: {WINDOW}}}
    columns:
      - name: order_id
        data_tests: [not_null, unique]
      - name: status
        data_tests:
          - accepted_values:
              arguments: {{values: [open, done]}}
              config: {{severity: warn}}
      - name: customer_id
        data_tests:
          - relationships:
              arguments: {{to: "ref('dim_customers')", field: id}}
          - accepted_values:  # quoted numbers on an integer column: SQL compares them as numbers
              arguments: {{values: ['10', '20', '30']}}
      - name: coupon
        data_tests: [unique]
  - name: dim_customers
    columns:
      - name: id
        data_tests: [unique]
""",
    "models/stg_orders.sql": """\
{{ config(materialized='incremental') }}
select order_id, customer_id, status, coupon, {{ cents('amount') }} as amount_cents, day
from {{ source('raw', 'orders') }}
{% if is_incremental() %}where day > (select max(day) from {{ this }}){% endif %}
""",
    "models/customer_names.sql": "{{ config(materialized='ephemeral') }}\n"
    "select id, upper(name) as name from {{ source('raw', 'customers') }}\n",
    "models/dim_customers.sql": "{{ config(materialized='table') }}\n"
    "select id, name from {{ ref('customer_names') }}\n",
    "models/revenue.sql": """\
select c.name, sum(o.amount_cents) as revenue_cents, count(*) as orders
from {{ ref('stg_orders') }} o join {{ ref('dim_customers') }} c on o.customer_id = c.id
group by c.name
""",
    "macros/cents.sql": "{% macro cents(column) %}cast(round({{ column }} * {{ var('rate') }}) "
    "as bigint){% endmacro %}\n",
    "tests/positive_amounts.sql": "select * from {{ ref('stg_orders') }} where amount_cents < 0\n",
    "tests/few_lost.sql": "{{ config(warn_if='>0', error_if='>5') }}\n"
    "select * from {{ ref('stg_orders') }} where status = 'lost'\n",
}


def write_project(root: Path, external: str = "{}") -> Path:
    """The test project under `root`; `external` is the sources' meta (dbt-duckdb's Parquet)."""
    edit_project(
        root, {name: text.replace("{EXTERNAL}", external) for name, text in PROJECT.items()}
    )
    return root


def edit_project(root: Path, changes: dict[str, str | None]) -> None:
    """Write (or, for None, remove) files of the project."""
    for name, text in changes.items():
        path = root / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def write_sources(lake: str | Path, orders: dict | None = None) -> None:
    """The source tables as an outside producer writes them: Delta, orders partitioned by day."""
    write_deltalake(f"{lake}/orders", pa.table(orders or ORDERS), partition_by=["day"])
    write_deltalake(f"{lake}/customers", pa.table(CUSTOMERS))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """The project, compiled once (its cache under target/ serves copies of it)."""
    root = write_project(tmp_path_factory.mktemp("dbt") / "shop")
    lf.dbt_project(root)
    return root


@pytest.fixture
def project(compiled, tmp_path) -> Path:
    """A copy of the compiled project that a test may edit."""
    return Path(shutil.copytree(compiled, tmp_path / "shop"))


def by_name(assets):
    return {a.name: a for a in assets}


def outcomes(result):
    return {
        (a, p): o for a, p, o in result.units.select("asset", "partition", "outcome").iter_rows()
    }


def rows(frame: pl.DataFrame) -> list[dict]:
    return frame.select(sorted(frame.columns)).sort(sorted(frame.columns)).to_dicts()


# -- the mapping -----------------------------------------------------------------------------------
def test_each_model_is_an_asset_with_lineage_partitions_and_its_tests_as_checks(project, caplog):
    assets = by_name(lf.dbt_project(project))
    # a source is someone else's table: nothing of lakeflow's to hold back, so its test is not run
    assert (
        "test source_not_null_raw_customers_id (models/sources.yml) tests no model" in caplog.text
    )
    assert sorted(assets) == ["customers", "dim_customers", "orders", "revenue", "stg_orders"]
    assert assets["orders"].source and assets["orders"].partitions == DAYS
    assert assets["customers"].source and not assets["customers"].partitions.is_partitioned
    stg, dim, revenue = assets["stg_orders"], assets["dim_customers"], assets["revenue"]
    # the ephemeral model is inlined: dim_customers reads its source
    assert (stg.deps, dim.deps, revenue.deps) == (
        ("orders", "dim_customers"),  # dim_customers: read by its relationships test
        ("customers",),
        ("stg_orders", "dim_customers"),
    )
    assert stg.partitions == DAYS and not revenue.partitions.is_partitioned
    assert stg.group == "shop" and stg.sql is not None
    sql = revenue.sql.render()
    assert 'from "stg_orders" o join "dim_customers" c' in sql and "memory" not in sql
    assert "cast(round(amount * 100) as bigint)" in stg.sql.render()
    assert "is_incremental" not in stg.sql.template and "max(day)" not in stg.sql.render()
    checks = {c.name: c for c in stg.checks}
    assert {name: (type(c).__name__, c.severity, getattr(c, "scope", "unit")) for name, c in checks.items()} == {
        "not_null_stg_orders_order_id": ("RowCheck", "error", "unit"),
        "unique_stg_orders_order_id": ("FrameCheck", "error", "table"),  # whole-table, as dbt's
        "accepted_values_stg_orders_status__open__done": ("RowCheck", "warn", "unit"),
        "relationships_stg_orders_customer_id__id__ref_dim_customers_": ("FrameCheck", "error", "unit"),
        "accepted_values_stg_orders_customer_id__10__20__30": ("RowCheck", "error", "unit"),
        "unique_stg_orders_coupon": ("FrameCheck", "error", "table"),
        # any other test's thresholds apply to the table, as dbt applies them
        "positive_amounts": ("DbtTest", "error", "table"),
        "few_lost": ("DbtTest", "error", "table"),
    }  # fmt: skip
    assert checks["relationships_stg_orders_customer_id__id__ref_dim_customers_"].needs == (
        "dim_customers",
    )
    # an unpartitioned model's unique is the same on its one unit
    assert [(c.name, c.scope) for c in dim.checks] == [("unique_dim_customers_id", "unit")]


def test_select_and_declare_sources_false_leave_the_rest_to_the_pipeline(project):
    assets = by_name(lf.dbt_project(project, select="revenue", declare_sources=False))
    assert sorted(assets) == ["revenue"]
    assert assets["revenue"].deps == ("stg_orders", "dim_customers")
    with pytest.raises(lf.DefinitionError, match="select=\\['nope'\\] matches no model"):
        lf.dbt_project(project, select="nope")


def test_overrides_and_shared_options_reach_the_assets(project):
    assets = by_name(
        lf.dbt_project(project, retry=2, group="analytics", overrides={"revenue": {"timeout": 60}})
    )
    assert assets["revenue"].timeout == 60 and assets["stg_orders"].timeout is None
    assert {assets[n].retry.attempts for n in ("revenue", "stg_orders")} == {2}
    assert assets["dim_customers"].group == "analytics"
    with pytest.raises(lf.DefinitionError, match="overrides name nope"):
        lf.dbt_project(project, overrides={"nope": {}})


def test_an_incremental_model_without_partitions_is_rebuilt_whole(project):
    schema = PROJECT["models/schema.yml"].replace(f"meta: {{lakeflow: {WINDOW}}}", "meta: {}")
    (project / "models/schema.yml").write_text(schema)
    stg = by_name(lf.dbt_project(project))["stg_orders"]
    assert not stg.partitions.is_partitioned
    unique = next(c for c in stg.checks if c.name.startswith("unique"))
    assert unique.scope == "unit"


def test_static_partitions_and_a_named_source_asset(project):
    schema = PROJECT["models/schema.yml"].replace(
        f"meta: {{lakeflow: {WINDOW}}}", "meta: {lakeflow: {static: [eu, us], column: region}}"
    )
    sources = PROJECT["models/sources.yml"].replace("      - name: customers\n", "      - name: customers\n        config: {meta: {lakeflow: {asset: people}}}\n")  # fmt: skip
    (project / "models/schema.yml").write_text(schema)
    (project / "models/sources.yml").write_text(sources.replace("{EXTERNAL}", "{}"))
    assets = by_name(lf.dbt_project(project))
    assert assets["stg_orders"].partitions == lf.StaticPartitions(["eu", "us"], column="region")
    assert "people" in assets and "customers" not in assets
    assert assets["dim_customers"].deps == ("people",)
    assert 'from "people"' in assets["dim_customers"].sql.render()


def test_each_version_of_a_versioned_model_is_an_asset_named_by_its_relation(tmp_path, lake):
    """`dim` in two versions is two tables in dbt (dim_v1, dim_v2): two assets, each read by
    the model that refs its version."""
    project = tmp_path / "versions"
    edit_project(project, {
        "dbt_project.yml": "name: versions\nversion: '1.0'\nprofile: versions\nconfig-version: 2\n",
        "models/schema.yml": "version: 2\nmodels:\n  - name: dim\n    latest_version: 2\n"
        "    columns: [{name: id, data_tests: [unique]}]\n    versions: [{v: 1}, {v: 2}]\n",
        "models/dim_v1.sql": "select 1 as id, 'old' as kind\n",
        "models/dim_v2.sql": "select 1 as id, 'new' as kind\n",
        "models/uses_v1.sql": "select kind from {{ ref('dim', v=1) }}\n",
        "models/uses_latest.sql": "select kind from {{ ref('dim') }}\n",
    })  # fmt: skip
    assets = by_name(lf.dbt_project(project, overrides={"dim_v1": {"timeout": 60}}))
    assert sorted(assets) == ["dim_v1", "dim_v2", "uses_latest", "uses_v1"]
    assert (assets["uses_v1"].deps, assets["uses_latest"].deps) == (("dim_v1",), ("dim_v2",))
    assert (assets["dim_v1"].timeout, assets["dim_v2"].timeout) == (60, None)
    assert [c.name for c in assets["dim_v1"].checks] == ["unique_dim_v1_id"]
    pipeline = lf.Pipeline(list(assets.values()), lake=lake)
    assert pipeline.materialize(executor="local").ok
    kinds = {n: pl.read_delta(f"{lake}/{n}")["kind"].to_list() for n in ("uses_v1", "uses_latest")}
    assert kinds == {"uses_v1": ["old"], "uses_latest": ["new"]}


def test_partitions_given_by_keyword_decide_how_the_tests_run(project):
    """Partitions from `partitions=` or `overrides=` are the model's partitions for its tests as
    much as meta's: unique and the other tests run on the table, and a test may name the partition
    column lakeflow adds."""
    schema = PROJECT["models/schema.yml"].replace(f"meta: {{lakeflow: {WINDOW}}}", "meta: {}")
    schema = schema.replace("      - name: coupon\n", "      - name: day\n        data_tests: [not_null]\n      - name: coupon\n")  # fmt: skip
    sql = PROJECT["models/stg_orders.sql"].replace(", day\n", "\n")  # lakeflow adds day
    edit_project(project, {"models/schema.yml": schema, "models/stg_orders.sql": sql})
    for options in ({"overrides": {"stg_orders": {"partitions": DAYS}}}, {"partitions": DAYS}):
        stg = by_name(lf.dbt_project(project, **options))["stg_orders"]
        scopes = {c.name: c.scope for c in stg.checks}
        assert stg.partitions == DAYS
        assert scopes["unique_stg_orders_order_id"] == scopes["few_lost"] == "table"
        assert scopes["not_null_stg_orders_day"] == "unit"
    # meta and an override both partitioning one model: which one is meant is not guessed
    edit_project(project, {"models/schema.yml": PROJECT["models/schema.yml"]})
    with pytest.raises(lf.DefinitionError, match="model stg_orders .*partitions both in"):
        lf.dbt_project(project, overrides={"stg_orders": {"partitions": DAYS}})


def test_a_project_macro_replacing_a_builtin_test_runs_as_the_project_wrote_it(project):
    """A root-project `test_not_null` (or `default__test_unique`, which dbt dispatches to) is
    what dbt runs: lakeflow runs its SQL rather than its own check."""
    edit_project(project, {
        "macros/tests.sql": "{% test not_null(model, column_name) %}\nselect * from {{ model }} "
        "where {{ column_name }} is null or cast({{ column_name }} as varchar) = ''\n{% endtest %}\n"
        "{% macro default__test_unique(model, column_name) %}\nselect {{ column_name }} from "
        "{{ model }} group by 1 having count(*) > 2\n{% endmacro %}\n",
    })  # fmt: skip
    stg = by_name(lf.dbt_project(project))["stg_orders"]
    checks = {c.name: c for c in stg.checks}
    for name in ("not_null_stg_orders_order_id", "unique_stg_orders_order_id"):
        assert isinstance(checks[name], DbtTest), name
    frame = pl.LazyFrame({"order_id": ["1", "", "2", "2"]})
    env = CheckEnv("stg_orders", Partition("2024-01-01"))
    not_null, unique = run_checks(
        [checks["not_null_stg_orders_order_id"], checks["unique_stg_orders_order_id"]], frame, env
    )
    assert (not_null.status, not_null.failing) == ("failed", 1)  # '' is null to the macro
    assert unique.status == "passed"  # twice is allowed by this project's unique


# -- code versions and the compile cache -----------------------------------------------------------
def test_the_code_version_moves_for_the_edited_model_only(project, capfd, caplog):
    def versions():
        return {a.name: a.code_version for a in lf.dbt_project(project) if not a.source}

    root = (list(logging.root.handlers), logging.root.level)
    before = versions()
    (project / "models/revenue.sql").write_text(
        PROJECT["models/revenue.sql"].replace("count(*) as orders", "count(*) as n_orders")
    )
    edited = versions()
    assert {n for n in before if before[n] != edited[n]} == {"revenue"}
    # a macro only stg_orders uses: stg_orders moves, revenue (which reads it) does not
    (project / "macros/cents.sql").write_text(PROJECT["macros/cents.sql"].replace("round", "floor"))
    macro = versions()
    assert {n for n in edited if edited[n] != macro[n]} == {"stg_orders"}
    # a var it uses, given by the pipeline
    rate = {
        a.name: a.code_version for a in lf.dbt_project(project, vars={"rate": 1000}) if not a.source
    }
    assert {n for n in macro if macro[n] != rate[n]} == {"stg_orders"}
    # four compiles by dbt: not a line on the console, and lakeflow's logging as it was
    assert capfd.readouterr() == ("", "")
    assert (list(logging.root.handlers), logging.root.level) == root
    logging.getLogger("lakeflow.test").warning("still heard")
    assert "still heard" in caplog.text


def test_a_valid_cache_is_read_without_importing_dbt(project):
    code = (
        "import sys, lakeflow as lf\n"
        f"assets = lf.dbt_project({str(project)!r})\n"
        "print(len(assets), 'dbt' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.stdout.split() == ["5", "False"], run.stderr
    # an edit invalidates it: the new SQL is compiled (dbt is imported again)
    (project / "models/revenue.sql").write_text(PROJECT["models/revenue.sql"] + "-- edited\n")
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert run.stdout.split() == ["5", "True"], run.stderr
    assert not (project / "logs").exists()  # dbt's logs and artifacts went to a temporary folder
    assert sorted(p.name for p in (project / "target").iterdir()) == ["lakeflow"]


@pytest.fixture
def compiles(monkeypatch) -> list[Path]:
    """The projects dbt compiles from here on (a load the cache serves is not one)."""
    calls: list[Path] = []
    compile_with_dbt = dbt_compile._run_dbt

    def counted(project, *args):
        calls.append(project)
        return compile_with_dbt(project, *args)

    monkeypatch.setattr(dbt_compile, "_run_dbt", counted)
    return calls


def test_the_cache_holds_while_what_dbt_reads_is_unchanged(
    project, tmp_path, compiles, monkeypatch
):
    def versions(**options):
        return {a.name: a.code_version for a in lf.dbt_project(project, **options) if not a.source}

    def moved(before, after):
        return {name for name in after if before.get(name) != after[name]}

    before = versions()
    # what dbt does not read: a database file at the root (dbt-duckdb's usual place), notes, logs
    (project / "dev.duckdb").write_bytes(b"\0" * 4096)
    (project / "README.md").write_text("notes\n")
    edit_project(project, {"logs/dbt.log": "a run\n", "target/run_results.json": "{}"})
    assert (versions(), compiles) == (before, [])
    # a model folder outside the project, named by dbt_project.yml (through an env var)
    shared = tmp_path / "shared"
    edit_project(shared, {"totals.sql": "select count(*) as n from {{ ref('dim_customers') }}\n"})
    monkeypatch.setenv("SHOP_SHARED_MODELS", "../shared")
    edit_project(project, {"dbt_project.yml": PROJECT["dbt_project.yml"] + "model-paths: [models, \"{{ env_var('SHOP_SHARED_MODELS') }}\"]\n"})  # fmt: skip
    first = versions()
    edit_project(shared, {"totals.sql": "select count(*) as m from {{ ref('dim_customers') }}\n"})
    assert moved(first, versions()) == {"totals"} and len(compiles) == 2
    # a profile outside the project and an environment variable it reads
    profiles = tmp_path / "profiles"
    edit_project(profiles, {"profiles.yml": "shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: ':memory:'\n      schema: \"{{ env_var('SHOP_SCHEMA') }}\"\n"})  # fmt: skip
    edit_project(project, {"models/schema_name.sql": "select '{{ target.schema }}' as name\n"})
    monkeypatch.setenv("SHOP_SCHEMA", "one")
    one = versions(profiles_dir=profiles)
    monkeypatch.setenv("SHOP_SCHEMA", "two")
    assert moved(one, versions(profiles_dir=profiles)) == {"schema_name"} and len(compiles) == 4
    # a cache written by another lakeflow, or in a shape this one does not read: compiled again
    cache = max((project / "target/lakeflow").glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    written = json.loads(cache.read_text())
    for edit in ({"versions": {**written["versions"], "lakeflow": "0.0.1"}},
                 {"project": {k: v for k, v in written["project"].items() if k != "selected"}}):  # fmt: skip
        cache.write_text(json.dumps({**written, **edit}))
        compiled = len(compiles)
        assert versions(profiles_dir=profiles)["schema_name"] and len(compiles) == compiled + 1


def test_cache_files_are_pruned_and_named_without_the_profiles_secrets(
    project, tmp_path, compiles, monkeypatch
):
    monkeypatch.setattr(dbt_compile, "CACHE_FILES", 2)
    cache = project / "target" / "lakeflow"
    profiles = tmp_path / "profiles"

    def load(secret: str, rate: int) -> set[str]:
        edit_project(profiles, {"profiles.yml": "shop:\n  target: dev\n  outputs:\n    dev: {type: duckdb, path: ':memory:'}\n    prod: {type: postgres, host: db, user: shop, password: " + secret + "}\n"})  # fmt: skip
        lf.dbt_project(project, profiles_dir=profiles, vars={"rate": rate})
        return {p.name for p in cache.iterdir()}

    before = {p.name for p in cache.iterdir()}  # the default profile's, from the fixture
    first = load("hunter2", 1)
    # only the secret changed: compiled again, into the same file, which holds no trace of it
    assert load("swordfish", 1) == first and len(compiles) == 2
    assert not any("swordfish" in p.read_text() for p in cache.iterdir())
    # other vars: another file, and the oldest (the default profile's) is pruned
    second = load("swordfish", 2)
    assert len(second) == 2 and (first - before) < second and not (before & second)
    load("swordfish", 1)  # still there, still valid
    assert len(compiles) == 3


# -- running ---------------------------------------------------------------------------------------
def test_a_mixed_pipeline_and_a_failing_dbt_test_quarantine_only_its_partition(project, lake):
    """Python asset -> dbt models -> Python asset; a negative amount on one day fails that day's
    singular test: only that partition is held, and what reads it is blocked."""
    data = {"orders": dict(ORDERS)}

    @lf.asset(partitions=DAYS)
    def orders(ctx) -> pl.DataFrame:
        return pl.DataFrame(data["orders"]).filter(pl.col("day") == ctx.partition.key)

    @lf.asset
    def customers() -> pl.DataFrame:
        return pl.DataFrame(CUSTOMERS)

    @lf.asset
    def report(revenue: pl.LazyFrame) -> pl.LazyFrame:
        return revenue.select(pl.col("revenue_cents").sum().alias("total"))

    dbt = lf.dbt_project(project, declare_sources=False)
    pipeline = lf.Pipeline([orders, customers, *dbt, report], lake=lake)
    data["orders"] = {**ORDERS, "amount": [1.5, 2.0, -3.25, 4.0, 0.5, 7.0]}
    result = pipeline.materialize(executor="local")
    got = outcomes(result)
    assert got[("stg_orders", "2024-01-02")] == "check_failed"
    assert got[("stg_orders", "2024-01-01")] == got[("stg_orders", "2024-01-03")] == "published"
    assert got[("revenue", "")] == got[("report", "")] == "blocked"
    error = result.units.filter(pl.col("outcome") == "check_failed")["error"][0]
    assert "positive_amounts failed: got 1 results, configured to error if != 0" in error
    assert "amount_cents=-325" in error
    assert sorted(pl.read_delta(f"{lake}/stg_orders")["day"].unique()) == [
        "2024-01-01",
        "2024-01-03",
    ]
    quarantine = Path(lake) / "_lakeflow" / "quarantine" / "stg_orders"
    assert [p.name for p in quarantine.iterdir()] == ["2024-01-02"]
    # the producer fixes the day: it is published and its consumers run
    data["orders"] = dict(ORDERS)
    again = pipeline.materialize("orders+", partitions="2024-01-02", force=True, executor="local")
    assert again.ok, again.units["error"].to_list()
    assert pl.read_delta(f"{lake}/report")["total"].to_list() == [1825]
    stg = pl.read_delta(f"{lake}/stg_orders")
    assert stg.filter(pl.col("day") == "2024-01-02")["amount_cents"].sort().to_list() == [325, 400]


def test_a_test_on_a_column_the_select_does_not_name_fails_at_run_time(project, lake):
    """`select *` hides the model's columns until it runs: the check then fails, saying which."""
    (project / "models/dim_customers.sql").write_text(
        "{{ config(materialized='table') }}\nselect * from {{ ref('customer_names') }}\n"
    )
    schema = PROJECT["models/schema.yml"].replace("      - name: id\n", "      - name: ident\n")
    (project / "models/schema.yml").write_text(schema)
    write_sources(lake)
    pipeline = lf.Pipeline(lf.dbt_project(project), lake=lake)
    result = pipeline.materialize(select="dim_customers", executor="local")
    assert outcomes(result)[("dim_customers", "")] == "check_failed"
    error = result.units["error"][0]
    assert "unique_dim_customers_ident could not run: column 'ident' does not exist" in error


# -- the same project built by plain dbt -----------------------------------------------------------
# Data on which a test run on each day alone and the same test run on the whole table disagree:
# order 3 on two days (each day is unique), two lost orders a day (few_lost errors above 5), and
# repeated nulls in coupon (dbt's unique leaves nulls aside).
ACROSS_DAYS = {**ORDERS, "order_id": [1, 2, 3, 4, 3, 6], "status": ["lost"] * 6}


@pytest.mark.parametrize(
    ("orders", "partitioned_by"),
    [(ORDERS, "meta"), (ACROSS_DAYS, "overrides")],
    ids=["clean data, meta partitions", "failures only in total, partitions= keyword"],
)
def test_lakeflow_builds_what_dbt_build_builds_and_the_tests_agree(
    orders, partitioned_by, tmp_path, lake
):
    from dbt.cli.main import dbtRunner

    parquet = tmp_path / "parquet"
    parquet.mkdir()
    pq.write_table(pa.table(orders), parquet / "orders.parquet")
    pq.write_table(pa.table(CUSTOMERS), parquet / "customers.parquet")
    external = "{external_location: '" + str(parquet) + "/{name}.parquet'}"
    project = write_project(tmp_path / "shop", external=external)
    (project / "profiles.yml").write_text(
        f"shop:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: '{tmp_path / 'dbt.duckdb'}'\n      threads: 1\n"
    )
    built = dbtRunner().invoke([
        "build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet",
        "--target-path", str(tmp_path / "dbt-target"), "--log-path", str(tmp_path / "dbt-logs"),
    ])  # fmt: skip
    dbt_tests = {
        r.node.name: str(r.status)
        for r in built.result.results
        if r.node.resource_type == "test"
        and not all(parent.startswith("source.") for parent in r.node.depends_on.nodes)
    }
    dbt_models = {
        r.node.name: str(r.status) for r in built.result.results if r.node.resource_type == "model"
    }

    write_sources(lake, orders)
    options = {}
    if partitioned_by == "overrides":  # the same days, given by the pipeline instead of meta
        schema = PROJECT["models/schema.yml"].replace(f"meta: {{lakeflow: {WINDOW}}}", "meta: {}")
        (project / "models/schema.yml").write_text(schema)
        options["overrides"] = {"stg_orders": {"partitions": DAYS}}
    pipeline = lf.Pipeline(lf.dbt_project(project, **options), lake=lake)
    result = pipeline.materialize(executor="local")
    assert pipeline.assets["stg_orders"].partitions == DAYS

    checks = lf.check_results(pipeline)
    rank = ["pass", "warn", "fail"]  # a test's outcome over partitions: its worst
    ours: dict[str, str] = {}
    for check, status, severity in checks.select("check", "status", "severity").iter_rows():
        outcome = "pass" if status == "passed" else ("warn" if severity == "warn" else "fail")
        ours[check] = max(ours.get(check, "pass"), outcome, key=rank.index)
    assert ours == dbt_tests
    assert dbt_tests["unique_stg_orders_coupon"] == "pass"  # two null coupons are not duplicates
    assert dbt_tests["accepted_values_stg_orders_customer_id__10__20__30"] == "pass"
    assert dbt_tests["accepted_values_stg_orders_status__open__done"] == "warn"
    if orders is ORDERS:
        assert built.success and result.ok, (dbt_tests, result.units["error"].to_list())
        assert (dbt_tests["few_lost"], dbt_tests["unique_stg_orders_order_id"]) == ("warn", "pass")
        import duckdb

        with duckdb.connect(str(tmp_path / "dbt.duckdb")) as con:  # dbt-duckdb holds it open
            for model in ("stg_orders", "dim_customers", "revenue"):
                theirs = pl.from_arrow(con.sql(f"select * from main.{model}").to_arrow_table())
                table = pl.read_delta(f"{lake}/{model}")
                assert rows(table) == rows(theirs), model
                assert table.height == {"stg_orders": 6, "dim_customers": 3, "revenue": 3}[model]
        return
    # each day alone passes; the table fails, in dbt and in lakeflow alike
    assert (dbt_tests["few_lost"], dbt_tests["unique_stg_orders_order_id"]) == ("fail", "fail")
    assert dbt_models["revenue"] == "skipped" and outcomes(result)[("revenue", "")] == "blocked"
    # and no version of lakeflow's table ever held what failed
    published = pl.read_delta(f"{lake}/stg_orders")
    assert published["order_id"].is_unique().all() and published.height <= 5


# -- bad input: a clear error, exit 2, the lake as it was ------------------------------------------
BAD = [
    ("not a dbt project", {"dbt_project.yml": None}, "is not a dbt project: it has no dbt_project.yml"),
    ("ref to a missing model", {"models/revenue.sql": "select * from {{ ref('nope') }}\n"}, "depends on a node named 'nope' which was not found"),
    ("SQL syntax error", {"models/revenue.sql": "select name,, from {{ ref('dim_customers') }}\n"}, 'models/revenue.sql (compiled SQL line 1: select name,, from "dim_customers"): Parser Error: syntax error at or near ","'),
    ("Jinja error", {"models/revenue.sql": "select {{ name( }} from x\n"}, "Compilation Error in model revenue (models/revenue.sql)"),
    ("test on a missing column", {"models/schema.yml": PROJECT["models/schema.yml"].replace("name: order_id", "name: order_no")}, "column 'order_no' is not a column of model stg_orders (its columns: order_id, customer_id, status, coupon, amount_cents, day)"),
    ("unsupported materialization", {"models/revenue.sql": "{{ config(materialized='materialized_view') }}\n" + PROJECT["models/revenue.sql"]}, "model revenue (models/revenue.sql): materialized='materialized_view' is not supported"),
    ("snapshot", {"snapshots/orders_snap.sql": "{% snapshot orders_snap %}{{ config(unique_key='order_id', strategy='check', check_cols='all') }}select * from {{ source('raw', 'orders') }}{% endsnapshot %}\n"}, "snapshot orders_snap (snapshots/orders_snap.sql): snapshots are not supported"),
    ("bad partitions meta", {"models/schema.yml": PROJECT["models/schema.yml"].replace("partitions: daily", "partitions: weekly")}, "model stg_orders (models/stg_orders.sql): meta.lakeflow.partitions 'weekly' is not one of daily, hourly, monthly"),
    ("introspective macro", {"models/revenue.sql": "{% set columns = adapter.get_columns_in_relation(ref('dim_customers')) %}\n" + PROJECT["models/revenue.sql"]}, "model revenue (models/revenue.sql) queries the database while dbt compiles it"),
    ("two models of one name", {"dbt_packages/other/dbt_project.yml": "name: other\nversion: '1.0'\nconfig-version: 2\n", "dbt_packages/other/models/revenue.sql": "{{ config(alias='other_revenue') }}\nselect 1 as n\n"}, "model revenue (models/revenue.sql) and model revenue (package other: models/revenue.sql) would both be asset 'revenue'"),
    ("dbt not installed", {"models/revenue.sql": PROJECT["models/revenue.sql"] + "-- new\n"}, "pip install 'lakeflow[dbt]'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def built_lake(compiled, tmp_path_factory) -> Path:
    """A lake holding the sources and every model, built from the compiled project."""
    lake = tmp_path_factory.mktemp("built") / "lake"
    write_sources(lake)
    assert lf.Pipeline(lf.dbt_project(compiled), lake=str(lake)).materialize(executor="local").ok
    lf.stop(str(lake))
    return lake


@pytest.mark.parametrize(("why", "changes", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_exit_2_naming_the_model_and_leaves_the_lake(
    why, changes, message, compiled, built_lake, tmp_path, capsys, monkeypatch
):
    project = Path(shutil.copytree(compiled, tmp_path / "shop"))
    edit_project(project, changes)
    if why == "dbt not installed":
        monkeypatch.setitem(sys.modules, "dbt.cli.main", None)
    lake = Path(shutil.copytree(built_lake, tmp_path / "lake"))
    (tmp_path / "pipe.py").write_text(
        f"import lakeflow as lf\npipeline = lf.Pipeline(lf.dbt_project({str(project)!r}))\n"
    )
    sys.modules.pop("pipe", None)
    before = lake_fingerprint(lake)
    argv = ["materialize", str(tmp_path / "pipe.py"), "--lake", str(lake), "--executor", "local"]
    code = main([*argv, "--no-progress"])
    out, err = capsys.readouterr()
    assert (code, message in out + err) == (2, True), out + err
    assert "Traceback" not in out + err
    assert lake_fingerprint(lake) == before
    lf.stop(str(lake))


def test_dbt_test_severity_follows_warn_if_and_error_if():
    """fail_calc's value against error_if blocks, against warn_if only records (dbt's rule); a
    test of severity warn never blocks."""

    def test(error_if: str, severity: str = "error") -> DbtTest:
        sql = 'select * from "m" where x < 0'
        measure = sql_model(
            "m",
            f"select count(*) as failures, count(*) > 0 as should_warn, count(*) {error_if} as "
            f"should_error from ({sql}) t",
            origin="t.sql",
            jinja=False,
        )
        rows = sql_model("m", f"select * from ({sql}) t limit 5", origin="t.sql", jinja=False)
        return DbtTest("t", severity, "m", measure, rows, ("> 0", error_if))

    env = CheckEnv("m", Partition(""))
    bad = pl.LazyFrame({"x": [1, -1, -2]})
    error, warned, warn_only = run_checks([test("> 1"), test("> 2"), test("> 1", "warn")], bad, env)
    assert (error.status, error.severity, error.failing, error.rows) == ("failed", "error", 2, 3)
    assert error.blocking and "configured to error if > 1" in error.message
    assert sorted(e["x"] for e in error.examples) == [-2, -1]
    assert (warned.status, warned.severity, warned.blocking) == ("failed", "warn", False)
    assert "configured to warn if > 0" in warned.message
    assert (warn_only.status, warn_only.blocking) == ("failed", False)
    (good,) = run_checks([test("> 1")], pl.LazyFrame({"x": [1]}), env)
    assert (good.status, good.failing, good.examples) == ("passed", 0, ())
