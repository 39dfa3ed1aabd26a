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
asset's code version is the hash of that rendered SQL and of the template itself, so editing the
SQL makes its partitions stale and nothing else's. dbt models (`lf.dbt_project`) arrive here
already compiled by dbt, with `relations` saying which upstream each of dbt's relation names
stands for.

DuckDB and Jinja are the optional extra `lakeflow[sql]`; this module imports them only when a
pipeline declares SQL.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import shutil
import tempfile
import threading
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from lakeflow.define.assets import define_asset
from lakeflow.define.graph import user_frame
from lakeflow.define.partitions import Partition
from lakeflow.errors import DefinitionError, LakeError

__all__ = [
    "Connection",
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


def connect(*, threads: float | None = None, memory: int | None = None) -> Connection:
    """A DuckDB connection to an in-memory database sized to a unit's resources, which no other
    unit uses until this one is closed: DuckDB limits memory (and threads) per database, and
    would otherwise take every core and most of the memory of the node, which runs as many
    units as it has CPUs. The views a unit registers are its connection's, and go with it.

    Databases are kept per size and used again: opening one costs about 25 ms, more than a
    small unit's whole work, and holds a few MB; a connection to an open one, microseconds. A
    process opens as many of a size as it runs units of that size at once (one in a Ray
    worker). Each spills to a folder of its own under the process's scratch folder, removed at
    exit: DuckDB's default is `.tmp` in the working directory, the user's repository, say. The
    session time zone is UTC, as lakeflow's partitions and timestamps are: DuckDB would take
    the machine's, and `ts::date` or `date_trunc('day', ts)` of a zoned timestamp would then
    give another day on a machine set to another zone."""
    size = (max(1, round(threads)) if threads is not None else None, memory or None)
    with _POOL_LOCK:
        idle = _IDLE.setdefault(size, [])
        database = idle.pop() if idle else None
    if database is None:
        database = _open_database(*size)
    return Connection(database, idle)


class Connection:
    """A connection to a database of the pool (`connect`), DuckDB's methods and all; `close()`
    hands the database back for the next unit of its size."""

    def __init__(self, database: Any, idle: list[Any]) -> None:
        self._cursor = database.cursor()
        self._database = database
        self._idle = idle

    def __getattr__(self, name: str) -> Any:  # register, sql, execute, interrupt, ...
        return getattr(self._cursor, name)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._cursor.close()
        with _POOL_LOCK:
            self._idle.append(self._database)


_IDLE: dict[tuple[int | None, int | None], list[Any]] = {}  # (threads, memory) -> databases
_POOL_LOCK = threading.Lock()  # units of the local executor connect from several threads


def _open_database(threads: int | None, memory: int | None) -> Any:
    duckdb = duckdb_module()
    config: dict[str, Any] = {"temp_directory": tempfile.mkdtemp(dir=_scratch())}
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


@cache
def _scratch() -> str:
    """This process's scratch folder for DuckDB's spills, removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="lakeflow-duckdb-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# DuckDB types Delta lacks: integers that become BIGINT (a value beyond it is an error), and
# unsigned ones that widen to the next signed type, as a Python asset's polars output does
_NARROWED = {
    "hugeint": "HUGEINT (a sum of integers, say)",
    "uhugeint": "UHUGEINT",
    "ubigint": "UBIGINT (hash() gives one, say)",
}
_WIDENED = {"utinyint": pa.int16(), "usmallint": pa.int32(), "uinteger": pa.int64()}


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
    @cached_property
    def views(self) -> dict[str, str]:
        """Upstream -> the name of its DuckDB view: its own name, but for upstreams whose names
        differ only in case (DuckDB's names ignore case, asset names do not), each of which gets
        `name#position` among the refs (no asset name holds a `#`)."""
        folded = Counter(name.casefold() for name in self.refs)
        return {
            name: name if folded[name.casefold()] == 1 else f"{name}#{position}"
            for position, name in enumerate(self.refs)
        }

    def view(self, upstream: str) -> str:
        """The name to register `upstream`'s data under on a connection this SQL runs on."""
        return self.views.get(upstream, upstream)

    def render(self, partition: Partition | None = None) -> str:
        """The SQL DuckDB runs for `partition` (None: a placeholder, for parsing and hashing)."""
        if not self.jinja:
            return _replace_relations(self.template, self.relations, self.views)
        return _render(self.template, self.origin, self.line, self.vars, partition, self.views)[0]

    def code_version(self) -> str:
        """The hash of the SQL as rendered for a placeholder partition, of the template's source
        and of the vars it reads.

        The rendering alone would miss what the placeholder partition does not reach: an edit in
        a branch it does not take, a var read only there. Vars the template never reads are left
        out, so that `sql_assets(folder, vars=...)` rebuilds only the assets that read the var
        that changed. SQL compiled by dbt has no template beyond its rendering, and of its
        relations only the upstream names count, not the text dbt compiled them to: that holds
        the target database's name or, for a source read from files, a path from the
        environment, neither of which changes what the SQL computes."""
        read = _vars_read(self.template) if self.jinja else None
        variables = {k: v for k, v in self.vars.items() if read is None or k in read}
        source = self.template if self.jinja else None
        text = json.dumps(
            [self.render(), source, variables, sorted(set(self.relations.values()))],
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
            raise DefinitionError(self.explain(error, sql, None)) from None
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
            raise self._failure(_located(con, sql, error), sql, partition) from None
        except duckdb.Error as error:  # a file the SQL names could not be read, say
            raise self._failure(error, sql, partition) from None
        try:
            table = relation.to_arrow_table()
        except duckdb.Error as error:  # conversion, out of memory, a file it could not read
            raise self._failure(error, sql, partition) from None
        return self._stored(table, relation.types)

    def _failure(self, error: Exception, sql: str, partition: Partition | None) -> Exception:
        """DuckDB's error as lakeflow's: the storage's failure (`LakeError`, retried like any)
        when DuckDB could not read a file, be it one of an upstream's, which reach it through
        Arrow, or one the SQL names; else the SQL's (`SqlError`)."""
        duckdb = duckdb_module()
        message = self.explain(error, sql, partition)
        if isinstance(error, duckdb.IOException | duckdb.HTTPException) or _ARROW_IO.search(
            str(error)
        ):
            return LakeError(message, hint="the storage failed while DuckDB read it")
        return SqlError(message)

    def _stored(self, table: pa.Table, kinds: list[Any]) -> pa.Table:
        """The result in the types lakeflow stores, for DuckDB's types that Delta lacks (`kinds`:
        DuckDB's type of each column). Unsigned integers widen as a Python asset's do
        (`normalize_output`); HUGEINTs, which DuckDB sums integers into and Arrow would hold as
        DECIMAL(38, 0), and UBIGINTs (`hash()`) become BIGINT, as the same query in polars (or
        Spark, or a Python asset) gives 64-bit integers, and a value beyond BIGINT is an error
        naming the column; so inside structs, lists and maps. An INTERVAL is refused by name."""
        for index, kind in enumerate(kinds):
            name, arrow = table.schema.names[index], table.schema.types[index]
            seen: list[tuple[str, str]] = []
            stored = _stored_type(kind, arrow, "", seen)
            for interval in [path for kind_id, path in seen if kind_id == "interval"]:
                raise SqlError(
                    f"{self.origin}: {_where(name, interval)} is an INTERVAL, which a Delta table "
                    "cannot store; give it as a number in the SQL: date_diff('second', start, "
                    "end) or epoch(end - start) for seconds, say"
                )
            if stored == arrow:
                continue
            try:
                column = table.column(index).cast(stored)
            except pa.ArrowInvalid:
                found = " or ".join(f"{_where(name, p)} is a {_NARROWED[k]}" for k, p in seen)
                raise SqlError(
                    f"{self.origin}: {found} holding a value beyond BIGINT, the largest integer "
                    "lakeflow stores; cast it to DOUBLE or DECIMAL(38, 0) in the SQL"
                ) from None
            table = table.set_column(index, name, column)
        return table

    def explain(self, error: BaseException, sql: str, partition: Partition | None) -> str:
        """DuckDB's message about `sql` (rendered for `partition`), led by the file and line it
        points at, speaking of the upstreams by their names rather than by their views'."""
        message = str(error).strip()
        found = _LOCATION.search(message)
        where = self.origin
        if found and self.jinja:  # the line of the template the rendered text came from
            marked = _render(
                self.template, self.origin, self.line, self.vars, partition, self.views, marked=True
            )[0]
            where += f", line {_source_line(marked, _offset(found, sql)) + self.line - 1}"
        elif found:
            lines = sql.splitlines()
            number = int(found.group(1))
            if 0 < number <= len(lines):
                where += f" (compiled SQL line {number}: {lines[number - 1].strip()[:120]})"
        renamed = {view: name for name, view in self.views.items() if view != name}
        for view in sorted(renamed, key=len, reverse=True):  # `a#1` is in `a#12`
            message = message.replace(view, renamed[view])
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
        with connect() as con:
            for name in self.refs:
                frame = frames[name]
                if isinstance(frame, pl.LazyFrame):
                    frame = frame.collect()
                data = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
                con.register(self.view(name), data)
            return pl.from_arrow(self.run(con, partition))


def _stored_type(kind: Any, arrow: pa.DataType, path: str, seen: list[tuple[str, str]]) -> Any:
    """The Arrow type a value of DuckDB type `kind` (in Arrow `arrow`) is stored as; adds to
    `seen` the (type, path) of what becomes BIGINT and of INTERVALs, for the errors."""
    if kind.id in _NARROWED or kind.id == "interval":
        seen.append((kind.id, path))
        return pa.int64()
    if kind.id in _WIDENED:
        return _WIDENED[kind.id]
    if kind.id not in ("struct", "list", "array", "map"):
        return arrow
    children = [child for _, child in kind.children]
    if kind.id == "struct":
        return pa.struct([
            f.with_type(_stored_type(child, f.type, f"{path}.{f.name}", seen))
            for f, child in zip(arrow, children, strict=True)
        ])  # fmt: skip
    if kind.id == "map":
        key, value = arrow.key_field, arrow.item_field
        return pa.map_(
            key.with_type(_stored_type(children[0], key.type, f"{path}.key", seen)),
            value.with_type(_stored_type(children[1], value.type, f"{path}.value", seen)),
        )
    item = arrow.value_field
    stored = item.with_type(_stored_type(children[0], item.type, f"{path}[]", seen))
    if kind.id == "array":
        return pa.list_(stored, arrow.list_size)
    return pa.large_list(stored) if pa.types.is_large_list(arrow) else pa.list_(stored)


def _where(column: str, path: str) -> str:
    """A column, or a value inside it (`path`: `.field`, `[]` for a list's items)."""
    return f"column {column!r}" + (f" (at {column}{path})" if path else "")


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
    views: Mapping[str, str],
    *,
    marked: bool = False,
) -> tuple[str, tuple[str, ...]]:
    """Render `template`, each ref as its upstream's view (`views`, the upstream's name when
    absent); returns the SQL and the upstream assets it read, in order. `marked`: with the
    template's line numbers in the text (`_source_line`)."""
    import jinja2

    reads: list[str] = []

    def ref(name: str) -> str:
        if name not in reads:
            reads.append(name)
        return quote(views.get(name, name))

    def source(source_name: str, table: str) -> str:
        return ref(table)

    def var(name: str, default: Any = jinja2.Undefined) -> Any:
        if name in variables:
            return variables[name]
        if default is jinja2.Undefined:
            raise _VarNotSet(f"var({name!r}) is not set")
        return default

    try:
        compiled = _environment(marked).from_string(template)
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


@cache
def _environment(marked: bool) -> Any:
    """The Jinja environment templates render in. `marked`: each line of the template's text
    renders led by its number between NULs, after Jinja's whitespace control (`{%- ... -%}`)
    has joined lines; the text without the marks is the plain rendering."""
    import jinja2
    from jinja2.ext import Extension
    from jinja2.lexer import Token

    class LineMarks(Extension):
        def filter_stream(self, stream: Any) -> Iterable[Any]:
            for token in stream:
                if token.type == "data":
                    lines = token.value.split("\n")
                    value = "\n".join(
                        f"\0{token.lineno + i}\0{text}" for i, text in enumerate(lines)
                    )
                    token = Token(token.lineno, "data", value)
                yield token

    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        extensions=[LineMarks] if marked else [],
    )


# how DuckDB reports a registered Arrow dataset failing to read a file
_ARROW_IO = re.compile(r"reading the stream registered as .* failed: IOError")
_MARK = re.compile(r"\0(\d+)\0")
# DuckDB's pointer into the SQL: the line's number and text (a window of a long line, its cuts
# shown as "..."), and a caret under the place
_LOCATION = re.compile(r"LINE (\d+): (.*)(?:\n( *)\^)?")


def _offset(found: re.Match[str], sql: str) -> int:
    """The offset in `sql` that DuckDB's `LINE n: ...` and caret point at (the line's start when
    the caret cannot be placed)."""
    number = int(found.group(1))
    lines = sql.split("\n")
    start = sum(len(line) + 1 for line in lines[: number - 1])
    if found.group(3) is None or number > len(lines):
        return start
    shown = found.group(2)
    cut = 3 if shown.startswith("...") else 0
    at = lines[number - 1].find(shown[cut:].removesuffix("..."))
    if at < 0:
        return start
    return start + at + max(0, len(found.group(3)) - len(f"LINE {number}: ") - cut)


def _source_line(marked: str, offset: int) -> int:
    """The template line the text at `offset` of the plain rendering came from, read off the
    marked rendering (`_environment(marked=True)`); text a Jinja expression printed counts as
    the line of the template's text before it."""
    line, position = 1, 0
    for index, piece in enumerate(_MARK.split(marked)):
        if index % 2:  # a mark's number
            line = int(piece)
            continue
        position += len(piece)
        if position > offset:
            break
    return line


class _VarNotSet(Exception):
    """`var(name)` without a value or a default, raised through Jinja to `_render`."""


def _template_line(error: BaseException, origin: str, line: int) -> str:
    """`origin, line N` for an error raised while rendering: Jinja maps the template's frames
    in the traceback back to template lines."""
    lines = [
        f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == "<template>"
    ]
    return f"{origin}, line {lines[-1] + line - 1}" if lines and lines[-1] else origin


def _replace_relations(sql: str, relations: Mapping[str, str], views: Mapping[str, str]) -> str:
    """dbt's compiled relation names replaced by the views of the upstreams they stand for
    (longest first: one name may contain another)."""
    for text in sorted(relations, key=len, reverse=True):
        sql = sql.replace(text, quote(views.get(relations[text], relations[text])))
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
    refs = _render(template, origin, line, variables, None, {})[1] if jinja else ()
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
    """`file:line` of the user's code declaring a SQL asset, so that an error in SQL given as a
    string points at the file it is in."""
    frame = user_frame()
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
    settings = per_asset(
        "sql_assets", names, options, overrides, f"which no .sql file under {str(root)!r} defines"
    )
    assets = []
    for name, path in names.items():
        assets.append(
            sql_asset(name, path.read_text(), vars=vars, origin=str(path), **settings[name])
        )
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
