"""dbt projects as assets: one asset per model, run by DuckDB, gated by the model's dbt tests.

    assets = lf.dbt_project("analytics/", vars={"currency": "EUR"})
    pipeline = lf.Pipeline([orders, *assets, report], lake="./lake")

dbt compiles the project (its Jinja, macros, vars; `dbt_compile.py`), and each model becomes a
SQL asset (`define/sql.py`) named after the model (a versioned model: each version after its
relation, `dim_v2`), whose SQL is the compiled SQL with the relation names of the model's parents
(models and sources, seen through ephemeral models, which dbt inlines) standing for those
upstream assets. Its code version is the hash of that SQL, so an edit to a model, or to a macro or
var it uses, makes that model's partitions stale and no other's.

Partitions come from the model's meta, `meta: {lakeflow: {partitions: daily, start: ...,
end: ..., column: ...}}` (or `static: [keys]`), else from `partitions=` or `overrides=`; without
them a model is one partition, rebuilt whole. An incremental model is expected to carry them: dbt
compiles it in its full-refresh form and lakeflow runs that SQL per partition over exactly the
partition's mapped inputs, which is what makes it incremental; without them it is rebuilt whole.

Tests become checks run before publish, each judged as dbt judges it, on the whole table:
`not_null`, `accepted_values` and `relationships` test rows, so lakeflow's own row checks run
them on each unit; `unique` (nulls aside, as dbt's) is a table check on a partitioned model. Any
other test (singular ones, packages' generic ones, one configured with `where`, `limit`,
`fail_calc`, `warn_if` or `error_if`, or one of dbt's four that the project's macros replace)
runs its compiled SQL in DuckDB (`DbtTest`), on a partitioned model over the table as each commit
would leave it, since its thresholds count the table's rows; `meta: {lakeflow: {scope: unit}}`
runs it on each unit's output instead.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from lakeflow.define.assets import AssetDef, define_asset, source
from lakeflow.define.checks import EXAMPLES, CheckEnv, CheckResult, Scope, Severity
from lakeflow.define.dbt_compile import CompiledProject, compile_project
from lakeflow.define.native_checks import in_set, not_null, references, unique
from lakeflow.define.partitions import Partitions, StaticPartitions
from lakeflow.define.sql import SqlModel, connect, per_asset, sql_model, views
from lakeflow.define.time_windows import WINDOWS
from lakeflow.errors import DefinitionError

__all__ = ["DbtTest", "dbt_project"]

log = logging.getLogger("lakeflow.dbt")

MATERIALIZATIONS = ("table", "view", "incremental", "ephemeral")
_META_KEYS = {
    "model": {"partitions", "static", "column", "start", "end"},
    "source": {"partitions", "static", "column", "start", "end", "asset", "url"},
    "test": {"scope"},
}
_NATIVE = {"not_null", "unique", "accepted_values", "relationships"}
_DEFAULT_TEST_CONFIG = {"fail_calc": "count(*)", "warn_if": "!= 0", "error_if": "!= 0"}
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def dbt_project(
    project_dir: str | Path,
    *,
    profiles_dir: str | Path | None = None,
    target: str | None = None,
    vars: Mapping[str, Any] | None = None,
    select: str | Sequence[str] | None = None,
    declare_sources: bool = True,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> list[AssetDef]:
    """The assets of a dbt project: one per model, and one `lf.source` per source table it reads.

    >>> assets = lf.dbt_project("analytics/", select="staging+", vars={"since": "2024-01-01"})

    - profiles_dir, target: the profile dbt compiles with; default an in-memory DuckDB (lakeflow
      runs the SQL in DuckDB either way; the project's own profiles.yml is for plain dbt).
    - vars, select: dbt's `--vars` and `--select`; models outside the selection that a selected
      one reads are upstream assets the pipeline must supply.
    - declare_sources: declare each source table read as `lf.source(name)` (named by its
      table, or its `meta.lakeflow.asset`); False when other assets of the pipeline write them.
    - overrides: per model (by its asset's name), keywords that replace the shared ones
      (`{"orders": {"retry": 3}}`).
    - the other keywords are `lf.asset`'s, given to every model (`resources=`, `retry=`,
      `group=` (default: the project's name), `automation=`, ...); a model's meta partitions
      win over `partitions=` (an override of them too is refused), and `checks=` adds to its
      tests.
    """
    project = Path(project_dir).resolve()
    compiled = compile_project(
        project, profiles_dir=profiles_dir, target=target, vars=vars, select=select
    )
    return _Mapper(project, compiled).assets(declare_sources, overrides or {}, options)


@dataclass(frozen=True)
class DbtTest:
    """A dbt test run as its compiled SQL in DuckDB, as dbt runs it: the model's relation is the
    unit's staged output (or the would-be table, scope "table"), other relations the upstream
    tables the check reads (`needs`), and `fail_calc` over the test's rows is compared with
    `error_if` and `warn_if` (a warn-only outcome is recorded, not blocking)."""

    name: str
    severity: Severity
    model: str  # the asset whose output the test gates
    measure: SqlModel  # one row: failures, should_warn, should_error
    failing_rows: SqlModel  # a few of the rows the test returns, as examples
    conditions: tuple[str, str]  # warn_if, error_if, for the message
    scope: Scope = "unit"
    needs: tuple[str, ...] = ()

    def run(self, frame: pl.LazyFrame, env: CheckEnv) -> CheckResult:
        started = time.perf_counter()
        output = frame.collect().to_arrow()
        missing = [name for name in self.needs if name not in env.inputs]
        if missing:
            raise DefinitionError(f"the table of {missing[0]} was not given to the check")
        tables = {self.model: output, **{name: env.inputs[name] for name in self.needs}}
        with views(tables, threads=1) as con:
            row = self.measure.run(con, env.partition).to_pylist()[0]
            failures = int(row["failures"] or 0)
            if self.severity == "error" and row["should_error"]:
                severity: Severity = "error"
            elif row["should_warn"]:
                severity = "warn"
            else:
                return CheckResult(
                    self.name, self.severity, "passed", 0, output.num_rows,
                    seconds=time.perf_counter() - started, scope=self.scope,
                )  # fmt: skip
            examples = tuple(self.failing_rows.run(con, env.partition).to_pylist())
        condition = self.conditions[severity == "error"]
        return CheckResult(
            self.name, severity, "failed", failures, output.num_rows, examples,
            f"got {failures} results, configured to {severity} if {condition}",
            time.perf_counter() - started, self.scope,
        )  # fmt: skip


class _Mapper:
    """Turns a compiled project into assets: names, relations, partitions, checks."""

    def __init__(self, project: Path, compiled: CompiledProject) -> None:
        self.project = project
        self.compiled = compiled
        self.nodes = compiled.nodes
        self.source_names = self._source_names()
        self._partitioning: dict[str, Partitions | None] = {}  # model -> its final partitions
        self._ancestors: dict[str, frozenset[str]] = {}
        self._columns: dict[str, list[str] | None] = {}

    # -- names ---------------------------------------------------------------------------------
    def _source_names(self) -> dict[str, str]:
        """Each source table's asset: its `meta.lakeflow.asset`, else the table's name."""
        return {
            uid: table["meta"].get("asset", table["name"])
            for uid, table in self.compiled.sources.items()
        }

    def _distinct(self, uids: Iterable[str]) -> None:
        """No two of these tables (models of any package, sources) may stand for one asset."""
        seen: dict[str, str] = {}
        for uid in sorted(uids, key=lambda u: (not self._in_project(u), u)):
            name = self.asset_name(uid)
            if name in seen:
                raise DefinitionError(
                    f"{self.where(seen[name])} and {self.where(uid)} would both be asset {name!r}",
                    hint="a source takes another name with meta: {lakeflow: {asset: ...}}; "
                    "a model can be left out with select=",
                )
            seen[name] = uid

    def _in_project(self, uid: str) -> bool:
        """A node of the project itself (not of an installed package)."""
        return self.nodes.get(uid, {}).get("package") in (None, self.compiled.name)

    def where(self, uid: str) -> str:
        """A node as an error message names it: kind, name (and version) and file."""
        node = self.nodes.get(uid)
        if node is None:
            table = self.compiled.sources[uid]
            return f"source {table['source']}.{table['name']} ({table['path']})"
        version = f" v{node['version']}" if node["version"] is not None else ""
        package = "" if self._in_project(uid) else f"package {node['package']}: "
        return f"{node['type']} {node['name']}{version} ({package}{node['path']})"

    def origin(self, uid: str) -> str:
        """The file of a node, for messages about its SQL."""
        node = self.nodes[uid]
        if self._in_project(uid):
            return str(self.project / node["path"])
        return f"{node['path']} of dbt package {node['package']}"

    def is_model(self, uid: str) -> bool:
        node = self.nodes.get(uid)
        return node is not None and node["type"] == "model"

    def is_asset(self, uid: str) -> bool:
        """A model that is a table of the lake (not an ephemeral one), or a source."""
        if uid in self.source_names:
            return True
        return self.is_model(uid) and self.nodes[uid]["materialized"] != "ephemeral"

    def asset_name(self, uid: str) -> str:
        """A source's asset, or a model's: its name, or for a version of a versioned model, its
        relation's (`dim_v1`), as each version is a table of its own."""
        if uid in self.source_names:
            return self.source_names[uid]
        node = self.nodes[uid]
        return node["alias"] if node["version"] is not None else node["name"]

    # -- lineage -------------------------------------------------------------------------------
    def parents(self, uid: str, who: str) -> list[str]:
        """The tables a node reads: its parents, seen through ephemeral models (dbt inlines
        them as CTEs, so the compiled SQL names their parents' relations)."""
        out: list[str] = []
        for parent in self.nodes[uid]["parents"]:
            if self.is_asset(parent):
                found = [parent]
            elif self.is_model(parent):
                found = self.parents(parent, who)
            else:
                node = self.nodes.get(parent, {"type": "node", "name": parent})
                raise DefinitionError(
                    f"{who} reads {node['type']} {node['name']}, which lakeflow does not map",
                    hint="models and sources are mapped; load a seed as a source or a Python asset",
                )
            out.extend(p for p in found if p not in out)
        return out

    def ancestors(self, uid: str) -> frozenset[str]:
        """Every table upstream of a model."""
        if uid not in self._ancestors:
            found: set[str] = set()
            for parent in self.nodes[uid]["parents"] if uid in self.nodes else ():
                found.add(parent)
                found |= self.ancestors(parent)
            self._ancestors[uid] = frozenset(found)
        return self._ancestors[uid]

    def relations(self, uids: Iterable[str]) -> dict[str, str]:
        """dbt's relation name of each table -> the asset standing for it."""
        out: dict[str, str] = {}
        for uid in uids:
            relation = (self.nodes.get(uid) or self.compiled.sources[uid])["relation"]
            if relation:
                out[relation] = self.asset_name(uid)
        return out

    # -- assets --------------------------------------------------------------------------------
    def assets(
        self,
        declare_sources: bool,
        overrides: Mapping[str, Mapping[str, Any]],
        options: Mapping[str, Any],
    ) -> list[AssetDef]:
        models = [
            uid for uid in self.compiled.selected
            if self.is_model(uid) and self.nodes[uid]["materialized"] != "ephemeral"
        ]  # fmt: skip
        for uid in self.compiled.selected:
            node = self.nodes[uid]
            if node["type"] == "snapshot":
                raise DefinitionError(
                    f"{self.where(uid)}: snapshots are not supported",
                    hint=f"lakeflow maps materializations {', '.join(MATERIALIZATIONS)}",
                )
            if node["type"] == "model":
                self._check_model(uid)
        tests = self._tests(set(models))
        read = {p for uid in [*models, *tests] for p in self.parents(uid, self.where(uid))}
        self._distinct([*models, *(read & set(self.source_names))])
        names = {uid: self.asset_name(uid) for uid in models}
        settings = per_asset(
            "dbt_project", names.values(), options, overrides,
            f"which are not selected models of {self.project}",
        )  # fmt: skip
        for uid, name in names.items():
            self._partitioning[uid] = self._partitions_of(uid, settings[name], overrides.get(name))
        checks: dict[str, list[Any]] = {}
        for uid, owner in tests.items():
            checks.setdefault(owner, []).append(self._check(uid, owner))
        out = [self._model(uid, checks.get(uid, []), settings[name]) for uid, name in names.items()]
        if declare_sources:
            out[:0] = [self._source(uid) for uid in self.compiled.sources if uid in read]
        return out

    def _partitions_of(
        self, uid: str, settings: Mapping[str, Any], override: Mapping[str, Any] | None
    ) -> Partitions | None:
        """A model's partitions: its meta's, else the keywords' (`partitions=`, `overrides=`)."""
        who = self.where(uid)
        partitions = _partitions(self.nodes[uid]["meta"], who, "model")
        if partitions is None:
            return settings.get("partitions")
        if "partitions" in (override or {}):
            raise DefinitionError(
                f"{who}: partitions both in meta.lakeflow and in overrides=",
                hint="keep one of them",
            )
        return partitions

    def _is_partitioned(self, uid: str) -> bool:
        partitions = self._partitioning[uid]
        return partitions is not None and partitions.is_partitioned

    def _check_model(self, uid: str) -> None:
        node = self.nodes[uid]
        if node["language"] != "sql":
            raise DefinitionError(
                f"{self.where(uid)}: a {node['language']} model is not supported",
                hint="write it as an @lf.asset",
            )
        if node["materialized"] not in MATERIALIZATIONS:
            raise DefinitionError(
                f"{self.where(uid)}: materialized={node['materialized']!r} is not supported",
                hint=f"lakeflow maps materializations {', '.join(MATERIALIZATIONS)}",
            )

    def _model(self, uid: str, checks: list[Any], settings: dict[str, Any]) -> AssetDef:
        node = self.nodes[uid]
        name = self.asset_name(uid)
        model = sql_model(
            name,
            node["sql"],
            origin=self.origin(uid),
            relations=self.relations(self.parents(uid, self.where(uid))),
            jinja=False,
        )
        settings["partitions"] = self._partitioning[uid]
        settings.setdefault("group", self.compiled.name)
        settings.setdefault("description", node["description"] or None)
        settings["checks"] = [*checks, *settings.get("checks", ())]
        return define_asset(name, model, sql=model, **settings)

    def _source(self, uid: str) -> AssetDef:
        table = self.compiled.sources[uid]
        who = self.where(uid)
        return source(
            self.source_names[uid],
            partitions=_partitions(table["meta"], who, "source"),
            url=table["meta"].get("url"),
            description=table["description"] or f"dbt {who}",
        )

    # -- tests ---------------------------------------------------------------------------------
    def _tests(self, models: set[str]) -> dict[str, str]:
        """The selected tests that gate one of `models`, and that model."""
        out: dict[str, str] = {}
        for uid in self.compiled.selected:
            if self.nodes[uid]["type"] != "test":
                continue
            owner = self._owner(uid)
            if owner is None:
                log.warning("%s tests no model (a source or seed): not run", self.where(uid))
            elif owner in models:
                out[uid] = owner
        return out

    def _owner(self, uid: str) -> str | None:
        """The model a test gates: the one it is attached to, else among the models it reads,
        the one no other of them reads (so what it reads besides is upstream of it)."""
        test = self.nodes[uid]
        attached = test["attached"]
        if attached is not None and not self.is_model(attached):
            return None
        if attached is not None and not self.is_asset(attached):
            raise DefinitionError(
                f"{self.where(uid)} tests ephemeral model {self.nodes[attached]['name']}, "
                "which is never a table"
            )
        if attached is not None:
            return attached
        models = [p for p in self.parents(uid, self.where(uid)) if self.is_model(p)]
        sinks = [m for m in models if not any(m in self.ancestors(o) for o in models)]
        return sinks[0] if sinks else None

    def _check(self, uid: str, owner: str) -> Any:
        test = self.nodes[uid]
        who = self.where(uid)
        _unknown_keys(test["meta"], "test", who)
        config = test["config"]
        severity = str(config.get("severity") or "error").lower()
        if severity not in ("error", "warn"):
            raise DefinitionError(f"{who}: severity {config['severity']!r} is not error or warn")
        native = self._native(uid, owner, severity)
        if native is not None:
            return native
        parents = self.parents(uid, who)
        relations = self.relations(parents)
        sql = test["sql"]
        limit = f"\nlimit {int(config['limit'])}" if config.get("limit") is not None else ""
        conditions = {k: config.get(k) or v for k, v in _DEFAULT_TEST_CONFIG.items()}
        fail_calc = conditions["fail_calc"]
        measure = (
            f"select {fail_calc} as failures, {fail_calc} {conditions['warn_if']} as should_warn,"
            f" {fail_calc} {conditions['error_if']} as should_error\n"
            f"from (\n{sql}{limit}\n) dbt_internal_test"
        )
        origin = f"{self.origin(uid)} (dbt {who})"
        model = self.asset_name(owner)
        # dbt's thresholds count the test's rows over the table: on a partitioned model, a unit's
        # rows alone could pass a test the table fails (two lost a day, error_if '>5')
        scope = test["meta"].get("scope", "table" if self._is_partitioned(owner) else "unit")
        if scope not in ("unit", "table"):
            raise DefinitionError(f"{who}: meta.lakeflow.scope must be 'unit' or 'table'")
        return DbtTest(
            name=test["name"],
            severity=severity,  # type: ignore[arg-type]
            model=model,
            measure=sql_model(model, measure, origin=origin, relations=relations, jinja=False),
            failing_rows=sql_model(
                model,
                f"select * from (\n{sql}\n) dbt_internal_test limit {EXAMPLES}",
                origin=origin,
                relations=relations,
                jinja=False,
            ),
            conditions=(conditions["warn_if"], conditions["error_if"]),
            scope=scope,
            needs=tuple(n for n in relations.values() if n != model),
        )

    def _native(self, uid: str, owner: str, severity: str) -> Any:
        """dbt's built-in test as lakeflow's own check, when it is dbt's own (no macro of the
        project replaces it) configured as dbt's default (no where, limit, fail_calc, warn_if or
        error_if) on a plain column; else None.

        not_null, accepted_values and relationships test each row, so running them on each
        unit's output is running them on the table. unique is about the whole table: on a
        partitioned model it is a table check, run on the version each commit would make; and
        like dbt's (`where column is not null`) it sets nulls aside.
        """
        test = self.nodes[uid]
        config = test["config"]
        default = all(
            config.get(k) in (None, v) for k, v in _DEFAULT_TEST_CONFIG.items()
        ) and config.get("where") is None and config.get("limit") is None  # fmt: skip
        column = test["column"]
        kind = test["test"] if test["builtin"] else None
        if kind not in _NATIVE or not default or not column or not _COLUMN.match(column):
            return None
        if test["meta"].get("scope"):
            return None
        column = self._output_column(owner, column, self.where(uid))
        kwargs = test["kwargs"]
        name = test["name"]
        if kind == "not_null":
            return not_null(column, severity=severity, name=name)
        if kind == "unique":
            scope: Scope = "table" if self._is_partitioned(owner) else "unit"
            return unique(column, scope=scope, ignore_nulls=True, severity=severity, name=name)
        if kind == "accepted_values":
            if not kwargs.get("quote", True):
                return None
            return in_set(column, kwargs.get("values", ()), severity=severity, name=name)
        others = [p for p in self.parents(uid, self.where(uid)) if p != owner]
        field = kwargs.get("field")
        if len(others) != 1 or not isinstance(field, str) or not _COLUMN.match(field):
            return None
        return references(column, self.asset_name(others[0]), field, severity=severity, name=name)

    def _output_column(self, owner: str, column: str, who: str) -> str:
        """`column` as the model's SQL spells it; a DefinitionError when the model's SELECT
        names its columns and this is not one of them (a `*` leaves it to the run)."""
        node = self.nodes[owner]
        if owner not in self._columns:
            self._columns[owner] = _select_columns(node["sql"])
        if self._columns[owner] is None:
            return column
        columns = list(self._columns[owner] or ())
        partitions = self._partitioning[owner]
        known = {name.lower() for name in columns}
        if partitions is not None and partitions.column and partitions.column.lower() not in known:
            columns.append(partitions.column)  # lakeflow adds it to the output
        for name in columns:
            if name.lower() == column.lower():
                return name
        raise DefinitionError(
            f"{who}: column {column!r} is not a column of model {self.asset_name(owner)} "
            f"(its columns: {', '.join(columns)})"
        )


def _unknown_keys(meta: Mapping[str, Any], kind: str, who: str) -> None:
    unknown = sorted(set(meta) - _META_KEYS[kind])
    if unknown:
        raise DefinitionError(
            f"{who}: meta.lakeflow has unknown key {unknown[0]!r}",
            hint=f"a {kind} takes {', '.join(sorted(_META_KEYS[kind]))}",
        )


def _partitions(meta: Mapping[str, Any], who: str, kind: str) -> Partitions | None:
    """The partitions a model's or source's `meta.lakeflow` names (None: unpartitioned)."""
    _unknown_keys(meta, kind, who)
    column = {"column": meta["column"]} if meta.get("column") else {}
    if "static" in meta:
        if "partitions" in meta:
            raise DefinitionError(f"{who}: meta.lakeflow names both partitions and static")
        keys = meta["static"]
        if not isinstance(keys, list) or not keys:
            raise DefinitionError(f"{who}: meta.lakeflow.static must be a list of keys")
        return StaticPartitions([str(k) for k in keys], **column)
    if "partitions" not in meta:
        for key in ("start", "end", "column"):
            if key in meta:
                raise DefinitionError(
                    f"{who}: meta.lakeflow.{key} without partitions",
                    hint="add partitions: daily, hourly or monthly",
                )
        return None
    window = WINDOWS.get(str(meta["partitions"]))
    if window is None:
        raise DefinitionError(
            f"{who}: meta.lakeflow.partitions {meta['partitions']!r} is not one of "
            f"{', '.join(WINDOWS)}",
            hint="or static: [keys]",
        )
    if not meta.get("start"):
        raise DefinitionError(f"{who}: meta.lakeflow.partitions needs start")
    end = {"end": str(meta["end"])} if meta.get("end") else {}
    try:
        return window(start=str(meta["start"]), **end, **column)
    except DefinitionError as error:
        raise DefinitionError(f"{who}: {error.message}", hint=error.hint) from None


def _select_columns(sql: str) -> list[str] | None:
    """The names of the columns a SELECT returns when it names each of them (a column or an
    alias); None when it does not (`*`, an unnamed expression, a UNION)."""
    con = connect(threads=1)
    try:
        tree = json.loads(con.execute("select json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    statements = tree.get("statements") or [{}]
    node = statements[0].get("node", {})
    if node.get("type") != "SELECT_NODE":
        return None
    names = []
    for expression in node.get("select_list", []):
        if expression.get("alias"):
            names.append(expression["alias"])
        elif expression.get("class") == "COLUMN_REF":
            names.append(expression["column_names"][-1])
        else:
            return None
    return names
