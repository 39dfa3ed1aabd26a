"""Compiling a dbt project through dbt-core's Python API, and remembering what it compiled to.

`compile_project` returns a `CompiledProject`: what `lf.dbt_project` needs of dbt's manifest,
distilled to plain JSON values (each model's compiled SQL, relation name, materialization, meta
and parents; each test's kind, arguments, config and compiled SQL; each source's relation name
and meta). dbt runs as `dbt compile --full-refresh`, so an incremental model compiles to its
non-incremental form (lakeflow makes it incremental by running it per partition), with its
target and log output in a temporary folder and its console silent.

A pipeline file that declares a dbt project runs on every CLI command, and compiling costs
seconds (importing dbt alone is about two). So the result is kept in
`<project>/target/lakeflow/`, one file per (profile, target, vars, selection), valid while a hash
of the project's files (dbt_packages included), of those settings and of the environment
variables the project reads (`env_var('NAME')`, and every `DBT_*` variable) is unchanged and the
installed dbt is the one that compiled it. A valid cache is read without importing dbt, so a
machine without dbt can load a project compiled elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakeflow.errors import DefinitionError

__all__ = ["CompiledProject", "compile_project"]

CACHE_FORMAT = 1
# top folders of a dbt project that hold what dbt wrote, not what it reads
_OUTPUT_FOLDERS = frozenset({"target", "logs"})
_ENV_VAR = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")
# the profile used when the project brings none: compiling needs only the adapter's dialect,
# and DuckDB's is the one lakeflow runs
_BUILTIN_PROFILE = """\
lakeflow:
  target: lakeflow
  outputs:
    lakeflow:
      type: duckdb
      path: ":memory:"
      threads: 1
"""
_DBT_PACKAGES = ("dbt-core", "dbt-duckdb")


@dataclass(frozen=True)
class CompiledProject:
    """A compiled dbt project, as `lf.dbt_project` maps it.

    - name: the project's name.
    - nodes: unique_id -> a model, test, seed or snapshot (see `_node`).
    - sources: unique_id -> a source table (see `_source`).
    - selected: the unique_ids dbt compiled for the selection, in its order.
    """

    name: str
    nodes: Mapping[str, Mapping[str, Any]]
    sources: Mapping[str, Mapping[str, Any]]
    selected: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "sources": self.sources,
            "selected": list(self.selected),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CompiledProject:
        return cls(data["name"], data["nodes"], data["sources"], tuple(data["selected"]))


def compile_project(
    project: Path,
    *,
    profiles_dir: str | Path | None = None,
    target: str | None = None,
    vars: Mapping[str, Any] | None = None,
    select: str | Sequence[str] | None = None,
) -> CompiledProject:
    """The compiled project: from the cache when it is valid, else by dbt (and cached)."""
    if not (project / "dbt_project.yml").is_file():
        raise DefinitionError(f"{project} is not a dbt project: it has no dbt_project.yml")
    profiles = _profiles_dir(profiles_dir)
    if profiles is None and target is not None:
        raise DefinitionError(
            f"dbt project {project}: target={target!r} needs a profiles.yml",
            hint="pass profiles_dir=, the folder of the profiles.yml that defines it",
        )
    selection = [select] if isinstance(select, str) else list(select or [])
    settings = {
        "format": CACHE_FORMAT,
        "profiles": (profiles / "profiles.yml").read_text() if profiles else _BUILTIN_PROFILE,
        "target": target,
        "vars": dict(vars or {}),
        "select": selection,
    }
    settings_key = _digest(settings)
    key = _digest([settings_key, _project_digest(project)])
    cache = project / "target" / "lakeflow" / f"{settings_key[:16]}.json"
    cached = _read_cache(cache, key)
    if cached is not None:
        return cached
    compiled = _run_dbt(project, profiles, target, settings["vars"], selection)
    _write_cache(cache, key, compiled)
    return compiled


def _profiles_dir(given: str | Path | None) -> Path | None:
    """Where profiles.yml is: the folder given, else None (the built-in in-memory DuckDB profile).
    A project's own profiles.yml is for plain dbt runs: the database file it names need not exist
    (nor be creatable) where lakeflow compiles, and the units run in DuckDB whatever it says."""
    if given is None:
        return None
    folder = Path(given)
    if not (folder / "profiles.yml").is_file():
        raise DefinitionError(f"profiles_dir {str(folder)!r} has no profiles.yml")
    return folder


# -- the cache -----------------------------------------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _project_files(project: Path) -> Iterator[Path]:
    """The files dbt may read: everything under the project but its outputs (target/, logs/)
    and hidden and __pycache__ folders."""
    for folder, subfolders, files in os.walk(project):
        top = Path(folder) == project
        subfolders[:] = sorted(
            s
            for s in subfolders
            if not (top and s in _OUTPUT_FOLDERS) and not s.startswith(".") and s != "__pycache__"
        )
        for name in sorted(files):
            yield Path(folder, name)


def _project_digest(project: Path) -> str:
    """A hash of the project's files and of the environment variables it reads."""
    digest = hashlib.sha256()
    names: set[str] = set()
    for path in _project_files(project):
        data = path.read_bytes()
        digest.update(str(path.relative_to(project)).encode() + b"\0" + data + b"\0")
        names.update(_ENV_VAR.findall(data.decode(errors="replace")))
    names.update(n for n in os.environ if n.startswith("DBT_"))
    digest.update(json.dumps({n: os.environ.get(n) for n in sorted(names)}).encode())
    return digest.hexdigest()


def _dbt_versions() -> dict[str, str | None]:
    """The installed dbt-core and dbt-duckdb versions (None: not installed), without importing."""
    versions: dict[str, str | None] = {}
    for package in _DBT_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _read_cache(path: Path, key: str) -> CompiledProject | None:
    """The cached project if `path` holds one for `key`, compiled by the dbt installed here (any
    dbt when none is installed); else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    installed = _dbt_versions()
    if any(installed.values()) and data.get("dbt") != installed:
        return None
    return CompiledProject.from_json(data["project"])


def _write_cache(path: Path, key: str, compiled: CompiledProject) -> None:
    """Keep the result for the next load; a project folder we cannot write just is not cached."""
    payload = json.dumps({"key": key, "dbt": _dbt_versions(), "project": compiled.to_json()})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(payload)
        os.replace(temporary, path)  # readers see the old file or the new one, never half
    except OSError:
        return


# -- running dbt ---------------------------------------------------------------------------------
def _run_dbt(
    project: Path,
    profiles: Path | None,
    target: str | None,
    variables: Mapping[str, Any],
    selection: Sequence[str],
) -> CompiledProject:
    """`dbt compile --full-refresh` in this process, its output in a temporary folder."""
    try:
        from dbt.cli.main import dbtRunner  # deferred: dbt is the optional extra lakeflow[dbt]
    except ImportError:
        raise DefinitionError(
            f"dbt project {project}: dbt-core is not installed", hint="pip install 'lakeflow[dbt]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="lakeflow-dbt-") as scratch:
        if profiles is None:
            profiles = Path(scratch, "profiles")
            profiles.mkdir()
            (profiles / "profiles.yml").write_text(_BUILTIN_PROFILE)
        args = [
            "compile", "--project-dir", str(project), "--profiles-dir", str(profiles),
            "--target-path", str(Path(scratch, "target")), "--log-path", str(Path(scratch, "logs")),
            "--log-level", "none", "--log-level-file", "none", "--full-refresh", "--no-introspect",
            "--no-partial-parse", "--no-send-anonymous-usage-stats", "--no-version-check",
            "--vars", json.dumps(dict(variables), default=str),
        ]  # fmt: skip
        if profiles.parent == Path(scratch):
            args += ["--profile", "lakeflow"]
        if target is not None:
            args += ["--target", target]
        for item in selection:
            args += ["--select", item]
        outcome = dbtRunner().invoke(args)
        if not outcome.success:
            raise DefinitionError(f"dbt project {project}: {_failure(outcome)}")
        manifest = json.loads(Path(scratch, "target", "manifest.json").read_text())
    selected = tuple(result.node.unique_id for result in outcome.result.results)
    if selection and not any(uid.startswith("model.") for uid in selected):
        raise DefinitionError(f"dbt project {project}: select={selection} matches no model")
    return _distill(manifest, selected)


def _failure(outcome: Any) -> str:
    """What dbt said went wrong, its category lines dropped ("Runtime Error", ...)."""
    if outcome.exception is not None:
        text = str(outcome.exception)
    else:
        text = "\n".join(
            f"{r.node.unique_id}: {r.message}"
            for r in outcome.result.results
            if str(r.status) not in ("success", "pass", "skipped")
        )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    while len(lines) > 1 and lines[0] in ("Runtime Error", "Compilation Error", "Parsing Error"):
        lines.pop(0)
    return "\n  ".join(lines) or type(outcome.exception).__name__


def _meta(where: str, *metas: Mapping[str, Any] | None) -> dict[str, Any]:
    """The `lakeflow` entries of a node's metas merged, later ones winning."""
    merged: dict[str, Any] = {}
    for meta in metas:
        entry = (meta or {}).get("lakeflow")
        if entry is not None and not isinstance(entry, Mapping):
            raise DefinitionError(f"{where}: meta.lakeflow must be a mapping, got {entry!r}")
        merged.update(entry or {})
    return merged


def _node(node: Mapping[str, Any]) -> dict[str, Any]:
    """What lakeflow reads of a model, test, seed or snapshot."""
    config = node.get("config", {})
    test = node.get("test_metadata") or {}
    return {
        "type": node["resource_type"],
        "name": node["name"],
        "path": node.get("original_file_path", ""),
        "language": node.get("language", "sql"),
        "materialized": config.get("materialized"),
        "description": node.get("description", ""),
        "meta": _meta(f"{node['resource_type']} {node['name']}", node.get("meta"), config.get("meta")),
        "relation": node.get("relation_name"),
        "sql": node.get("compiled_code"),
        "parents": list(node.get("depends_on", {}).get("nodes", [])),
        "test": test.get("name"),
        "namespace": test.get("namespace"),
        "kwargs": {k: v for k, v in test.get("kwargs", {}).items() if k != "model"},
        "attached": node.get("attached_node"),
        "column": node.get("column_name"),
        "config": {
            k: config.get(k) for k in ("severity", "fail_calc", "warn_if", "error_if", "where", "limit")
        },
    }  # fmt: skip


def _source(source: Mapping[str, Any]) -> dict[str, Any]:
    """What lakeflow reads of a source table."""
    return {
        "name": source["name"],
        "source": source["source_name"],
        "path": source.get("original_file_path", ""),
        "description": source.get("description", ""),
        "meta": _meta(
            f"source {source['source_name']}.{source['name']}",
            source.get("source_meta"),
            source.get("meta"),
            source.get("config", {}).get("meta"),
        ),
        "relation": source.get("relation_name"),
    }


def _distill(manifest: Mapping[str, Any], selected: tuple[str, ...]) -> CompiledProject:
    """The manifest as lakeflow maps it; dbt's unit tests (of a model's logic on fixed rows,
    not of its data) are left out."""
    return CompiledProject(
        name=manifest["metadata"].get("project_name") or "dbt",
        nodes={uid: _node(node) for uid, node in manifest["nodes"].items()},
        sources={uid: _source(source) for uid, source in manifest["sources"].items()},
        selected=tuple(uid for uid in selected if uid in manifest["nodes"]),
    )
