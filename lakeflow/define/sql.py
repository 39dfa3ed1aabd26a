"""SQL assets: a SELECT over upstream tables, run by DuckDB inside the unit's task.

    daily_revenue = lf.sql_asset(
        "daily_revenue",
        "select customer, sum(amount) as revenue from {{ ref('orders') }} group by customer",
        partitions=days,
    )

The SQL is a Jinja template. `{{ ref('orders') }}` names an upstream asset and
`{{ source('shop', 'orders') }}` a table someone else writes (an `lf.source` named `orders`);
either way the SQL reads exactly the upstream partitions the asset's mapping gives for the unit,
pinned at the versions the run planned with, straight from their Parquet files. `{{ partition.key }}`,
`{{ partition.start }}` and `{{ partition.end }}` are the unit's partition; `{{ var('name') }}` reads
the `vars=` given to the asset. A unit runs like any other: its output is staged, checked and
group-committed; only the computing is DuckDB's.

The template is rendered once when the asset is declared (with a placeholder partition) to find
what it reads, to refuse a Jinja or SQL syntax error before anything runs, and to hash it: the
asset's code version is the hash of that rendered SQL, so editing the SQL makes its partitions
stale and nothing else's. dbt models (`lf.dbt_project`) arrive here already compiled by dbt, with
`relations` saying which upstream each of dbt's relation names stands for.

DuckDB and Jinja are the optional extra `lakeflow[sql]`; this module imports them only when a
pipeline declares SQL.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakeflow.define.assets import define_asset
from lakeflow.define.partitions import Partition
from lakeflow.errors import DefinitionError

__all__ = [
    "SqlError",
    "SqlModel",
    "connect",
    "duckdb_module",
    "quote",
    "sql_asset",
    "sql_assets",
    "sql_model",
]

_PLACEHOLDER_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class SqlError(Exception):
    """DuckDB refused a unit's SQL: its message, with the file and line it points at."""


def duckdb_module() -> Any:
    """DuckDB, or a clear error naming the extra that installs it."""
    try:
        import duckdb
    except ImportError:
        raise DefinitionError(
            "SQL assets need DuckDB", hint="pip install 'lakeflow[sql]'"
        ) from None
    return duckdb


def quote(name: str) -> str:
    """`name` as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def connect(*, threads: float | None = None, memory: int | None = None) -> Any:
    """A DuckDB connection of its own (the views a unit registers are its own, and go with it
    when it is closed) to an in-memory database sized to the unit's resources: DuckDB would
    otherwise take every core of the node, and a node runs as many units as it has CPUs.

    The database is opened once per process for each size and shared by the units of that size:
    opening one costs about 20 ms, more than a small unit's whole work; a connection to it, some
    microseconds. Its session time zone is UTC, as lakeflow's partitions and timestamps are:
    DuckDB would take the machine's, and `ts::date` or `date_trunc('day', ts)` of a zoned
    timestamp would then give another day on a machine set to another zone."""
    size = (max(1, round(threads)) if threads is not None else None, memory or None)
    with _DATABASES_LOCK:
        database = _DATABASES.get(size)
        if database is None:
            database = _DATABASES[size] = _open_database(*size)
        return database.cursor()


_DATABASES: dict[tuple[int | None, int | None], Any] = {}  # (threads, memory) -> database
_DATABASES_LOCK = threading.Lock()  # units of the local executor connect from several threads


def _open_database(threads: int | None, memory: int | None) -> Any:
    duckdb = duckdb_module()
    config: dict[str, Any] = {}
    if threads is not None:
        config["threads"] = threads
    if memory:
        config["memory_limit"] = f"{max(1, memory // 2**20)}MiB"
    database = duckdb.connect(":memory:", config=config)
    # not in config=, which cannot load the ICU extension that time zones need
    database.execute("SET GLOBAL TimeZone = 'UTC'")
    # the SQL reads the views lakeflow registers, never a Python variable that shares a name
    database.execute("SET GLOBAL python_enable_replacements = false")
    return database


@dataclass(frozen=True)
class _PartitionVars:
    """What `{{ partition }}` shows a template: the key, and a window's start and end (UTC)."""

    key: str
    start: datetime | None
    end: datetime | None

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class SqlModel:
    """What a SQL asset runs. Calling the asset runs the SQL over frames you pass (a notebook, a
    test), for the partition a key names:

    >>> daily_revenue(orders=orders_frame, partition="2024-01-02")

    - template: Jinja SQL (`sql_asset`), or SQL already compiled by dbt (`jinja=False`).
    - relations: text in the compiled SQL -> the upstream asset it stands for (dbt's
      `"db"."schema"."model"`); replaced by the upstream's view before DuckDB sees it.
    - origin: where the SQL came from (a .sql file, or `sql_asset 'name' (file.py:line)`), for
      error messages.
    - line: the template's first line in `origin` (a SQL string starts at line 1).
    """

    asset: str
    template: str
    origin: str
    refs: tuple[str, ...]
    vars: Mapping[str, Any] = field(default_factory=dict)
    relations: Mapping[str, str] = field(default_factory=dict)
    jinja: bool = True
    line: int = 1

    # -- rendering ------------------------------------------------------------------------------
    def render(self, partition: Partition | None = None) -> str:
        """The SQL DuckDB runs for `partition` (None: a placeholder, for parsing and hashing)."""
        if not self.jinja:
            return _replace_relations(self.template, self.relations)
        return _render(self.template, self.origin, self.line, self.vars, partition)[0]

    def code_version(self) -> str:
        """The hash of the SQL as rendered for a placeholder partition, with the vars it reads.

        The values of the vars the template reads are hashed too, not only the rendered text: a
        var may steer a branch the placeholder partition does not take. Vars it never reads are
        left out, so that `sql_assets(folder, vars=...)` rebuilds only the assets that read the
        var that changed. Of dbt's relations only the upstream names count, not the text dbt
        compiled them to: that holds the target database's name or, for a source read from files,
        a path from the environment, neither of which changes what the SQL computes."""
        read = _vars_read(self.template) if self.jinja else None
        variables = {k: v for k, v in self.vars.items() if read is None or k in read}
        text = json.dumps(
            [self.render(), variables, sorted(set(self.relations.values()))],
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def parse_check(self) -> None:
        """Refuse SQL that is not exactly one SELECT (or WITH/FROM/VALUES ... query), with
        DuckDB's message and the line it points at."""
        duckdb = duckdb_module()
        sql = self.render()
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as error:
            raise DefinitionError(self.explain(error, sql)) from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            got = (
                f"{len(statements)} statements"
                if len(statements) != 1
                else f"a {statements[0].type.name} statement"
            )
            raise DefinitionError(
                f"{self.origin}: a SQL asset is one SELECT statement, got {got}",
                hint="lakeflow writes the query's rows to the asset's table itself",
            )

    # -- running --------------------------------------------------------------------------------
    def run(self, con: Any, partition: Partition | None) -> pa.Table:
        """Run the SQL on `con`, where each ref is a view already; returns a pyarrow Table."""
        duckdb = duckdb_module()
        sql = self.render(partition)
        try:
            relation = con.sql(sql)  # a relation's Arrow result is not copied again, a cursor's is
        except (duckdb.BinderException, duckdb.CatalogException) as error:
            raise SqlError(self.explain(_located(con, sql, error), sql)) from None
        try:
            table = relation.to_arrow_table()
        except duckdb.Error as error:  # conversion, out of memory, a file it could not read
            raise SqlError(self.explain(error, sql)) from None
        return self._narrow_hugeints(table, [kind.id for kind in relation.types])

    def _narrow_hugeints(self, table: pa.Table, kinds: list[str]) -> pa.Table:
        """HUGEINT columns as BIGINT. DuckDB sums integers into 128-bit HUGEINTs, which reach
        Arrow as DECIMAL(38, 0); a table of sums would hold decimals where the same query in
        polars (or Spark, or a Python asset) gives 64-bit integers. A sum beyond BIGINT is an
        error naming the column: a cast to DOUBLE or DECIMAL in the SQL keeps such values."""
        for index, kind in enumerate(kinds):
            if kind not in ("hugeint", "uhugeint"):
                continue
            name = table.schema.names[index]
            try:
                column = table.column(index).cast(pa.int64())
            except pa.ArrowInvalid:
                raise SqlError(
                    f"{self.origin}: column {name!r} is a {kind.upper()} (a sum of integers, say) "
                    "holding a value beyond BIGINT, the largest integer lakeflow stores; cast it "
                    "to DOUBLE or DECIMAL(38, 0) in the SQL"
                ) from None
            table = table.set_column(index, name, column)
        return table

    def explain(self, error: BaseException, sql: str) -> str:
        """DuckDB's message, led by the file and line of the SQL it points at."""
        message = str(error).strip()
        found = re.search(r"LINE (\d+):", message)
        where = self.origin
        if found and self.jinja:  # a template renders line for line (Jinja keeps newlines)
            where += f", line {int(found.group(1)) + self.line - 1}"
        elif found:
            lines = sql.splitlines()
            number = int(found.group(1))
            if 0 < number <= len(lines):
                where += f" (compiled SQL line {number}: {lines[number - 1].strip()[:120]})"
        return f"{where}: {message}"

    def __call__(self, partition: str | Partition | None = None, **frames: Any) -> Any:
        """Run the SQL in this process over `frames` (polars or Arrow), one per ref; a polars
        DataFrame back."""
        import polars as pl

        missing = sorted(set(self.refs) - set(frames))
        if missing:
            raise DefinitionError(
                f"asset {self.asset} reads {', '.join(missing)}: pass each as a keyword argument"
            )
        if isinstance(partition, str):
            partition = Partition(partition)
        con = connect()
        try:
            for name in self.refs:
                frame = frames[name]
                if isinstance(frame, pl.LazyFrame):
                    frame = frame.collect()
                data = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
                con.register(name, data)
            return pl.from_arrow(self.run(con, partition))
        finally:
            con.close()


def _placeholder(partition: Partition | None) -> _PartitionVars:
    if partition is None:
        return _PartitionVars("__partition__", _PLACEHOLDER_TIME, _PLACEHOLDER_TIME)
    return _PartitionVars(partition.key, partition.start, partition.end)


def _render(
    template: str,
    origin: str,
    line: int,
    variables: Mapping[str, Any],
    partition: Partition | None,
) -> tuple[str, tuple[str, ...]]:
    """Render `template`; returns the SQL and the upstream assets it read, in order."""
    import jinja2

    reads: list[str] = []

    def ref(name: str) -> str:
        if name not in reads:
            reads.append(name)
        return quote(name)

    def source(source_name: str, table: str) -> str:
        return ref(table)

    def var(name: str, default: Any = jinja2.Undefined) -> Any:
        if name in variables:
            return variables[name]
        if default is jinja2.Undefined:
            raise _VarNotSet(f"var({name!r}) is not set")
        return default

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    try:
        compiled = environment.from_string(template)
        sql = compiled.render(ref=ref, source=source, var=var, partition=_placeholder(partition))
    except jinja2.TemplateSyntaxError as error:
        raise DefinitionError(
            f"{origin}, line {(error.lineno or 1) + line - 1}: Jinja syntax error: {error.message}"
        ) from None
    except _VarNotSet as error:
        where = _template_line(error, origin, line)
        raise DefinitionError(
            f"{where}: {error}", hint="pass vars={...} or var(name, default)"
        ) from None
    except jinja2.UndefinedError as error:
        where = _template_line(error, origin, line)
        raise DefinitionError(f"{where}: {error.message}", hint="ref('asset'), source('s', 't'), "
                              "partition.key/start/end and var('name') are defined") from None  # fmt: skip
    return sql, tuple(reads)


class _VarNotSet(Exception):
    """`var(name)` without a value or a default, raised through Jinja to `_render`."""


def _template_line(error: BaseException, origin: str, line: int) -> str:
    """`origin, line N` for an error raised while rendering: Jinja maps the template's frames
    in the traceback back to template lines."""
    lines = [
        f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == "<template>"
    ]
    return f"{origin}, line {lines[-1] + line - 1}" if lines and lines[-1] else origin


def _replace_relations(sql: str, relations: Mapping[str, str]) -> str:
    """dbt's compiled relation names replaced by the views of the upstreams they stand for
    (longest first: one name may contain another)."""
    for text in sorted(relations, key=len, reverse=True):
        sql = sql.replace(text, quote(relations[text]))
    return sql


def _located(con: Any, sql: str, error: Exception) -> Exception:
    """The binder's error with the SQL line it points at. `con.sql` binds a parsed statement,
    whose errors lack it; `con.execute` binds the text, and fails the same way before it runs
    anything."""
    if "LINE " in str(error):
        return error
    try:
        con.execute(sql)
    except duckdb_module().Error as located:
        return located
    return error


def _vars_read(template: str) -> set[str] | None:
    """The names the template passes to `var()`; None when one is not a literal (all may be)."""
    import jinja2
    from jinja2 import nodes

    names: set[str] = set()
    parsed = jinja2.Environment().parse(template)  # it rendered already: it parses
    for call in parsed.find_all(nodes.Call):
        if not (isinstance(call.node, nodes.Name) and call.node.name == "var"):
            continue
        first = call.args[0] if call.args else None
        if not (isinstance(first, nodes.Const) and isinstance(first.value, str)):
            return None
        names.add(first.value)
    return names


def sql_model(
    asset: str,
    template: str,
    *,
    origin: str,
    vars: Mapping[str, Any] | None = None,
    relations: Mapping[str, str] | None = None,
    jinja: bool = True,
    line: int = 1,
    reads: Iterable[str] = (),
) -> SqlModel:
    """A checked `SqlModel`: rendered, parsed by DuckDB, its refs found (`reads` adds more)."""
    variables = dict(vars or {})
    refs = _render(template, origin, line, variables, None)[1] if jinja else ()
    ordered = list(refs)
    for name in [*(relations or {}).values(), *reads]:
        if name not in ordered:
            ordered.append(name)
    model = SqlModel(
        asset=asset,
        template=template,
        origin=origin,
        refs=tuple(ordered),
        vars=variables,
        relations=dict(relations or {}),
        jinja=jinja,
        line=line,
    )
    model.parse_check()
    return model


def sql_asset(
    name: str,
    sql: str,
    *,
    vars: Mapping[str, Any] | None = None,
    origin: str | None = None,
    **options: Any,
) -> Any:
    """Declare an asset computed by a SQL query run in DuckDB.

    >>> daily = lf.sql_asset(
    ...     "daily_revenue",
    ...     "select customer, sum(amount) as revenue from {{ ref('orders') }} group by customer",
    ...     partitions=lf.DailyPartitions(start="2024-01-01"),
    ... )

    The other keywords are `lf.asset`'s: partitions, inputs (mappings of the refs), deps, checks,
    retry, resources (DuckDB gets the unit's CPUs and memory), timeout, automation, ...; a
    `code_version=` replaces the hash of the rendered SQL.
    """
    origin = origin or f"sql_asset {name!r} ({_call_site()})"
    model = sql_model(name, sql, origin=origin, vars=vars)
    return define_asset(name, model, sql=model, **options)


def _call_site() -> str:
    """`file:line` of the user's code declaring a SQL asset (the first frame outside lakeflow),
    so that an error in SQL given as a string points at the file it is in."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "lakeflow":
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


def sql_assets(
    folder: str | Path,
    *,
    vars: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> list[Any]:
    """One SQL asset per `*.sql` file under `folder` (subfolders too), named after the file.

    >>> models = lf.sql_assets("models/", partitions=days,
    ...                        overrides={"monthly_revenue": {"partitions": months}})

    Keywords are `sql_asset`'s, given to every asset; `overrides` sets them per asset.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DefinitionError(f"sql_assets: {str(root)!r} is not a folder")
    files = sorted(root.rglob("*.sql"))
    if not files:
        raise DefinitionError(f"sql_assets: no .sql files under {str(root)!r}")
    names: dict[str, Path] = {}
    for path in files:
        if path.stem in names:
            raise DefinitionError(
                f"sql_assets: two files define asset {path.stem!r}: {names[path.stem]} and {path}"
            )
        names[path.stem] = path
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        raise DefinitionError(
            f"sql_assets: overrides name {', '.join(unknown)}, which no .sql file under "
            f"{str(root)!r} defines"
        )
    assets = []
    for name, path in names.items():
        settings = {**options, **(overrides or {}).get(name, {})}
        assets.append(sql_asset(name, path.read_text(), vars=vars, origin=str(path), **settings))
    return assets


@contextmanager
def views(frames: Mapping[str, Any], *, threads: float | None = None) -> Iterator[Any]:
    """A DuckDB connection (`connect`) on which each of `frames` (polars, lazy or not, or Arrow)
    is a view named after its key; closed on leaving, with its views."""
    import polars as pl

    con = connect(threads=threads)
    try:
        for name, frame in frames.items():
            if isinstance(frame, pl.LazyFrame):
                frame = frame.collect()
            con.register(name, frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame)
        yield con
    finally:
        con.close()


def per_asset(
    caller: str,
    names: Iterable[str],
    options: Mapping[str, Any],
    overrides: Mapping[str, Mapping[str, Any]] | None,
    unknown: str,
) -> dict[str, dict[str, Any]]:
    """Each asset's keywords: the shared `options`, replaced by its entry of `overrides`. An
    override naming none of `names` is refused (a typo would otherwise go unnoticed), saying
    why with `unknown` ("which ... defines")."""
    names = list(names)
    strays = sorted(set(overrides or {}) - set(names))
    if strays:
        raise DefinitionError(f"{caller}: overrides name {', '.join(strays)}, {unknown}")
    return {name: {**options, **(overrides or {}).get(name, {})} for name in names}
