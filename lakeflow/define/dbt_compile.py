"""Compiling a dbt project through dbt-core's Python API, and remembering what it compiled to.

`compile_project` returns a `CompiledProject`: what `lf.dbt_project` needs of dbt's manifest,
distilled to plain JSON values (each model's compiled SQL, relation name, materialization, meta
and parents; each test's kind, arguments, config and compiled SQL; each source's relation name
and meta). dbt runs as `dbt compile --full-refresh`, so an incremental model compiles to its
non-incremental form (lakeflow makes it incremental by running it per partition), with its
target and log output in a temporary folder and its console silent.

A pipeline file that declares a dbt project runs on every CLI command, and compiling costs
seconds (importing dbt alone is about two). So the result is kept in
`<project>/target/lakeflow/`, one file per (profile location, target, vars, selection), the
newest `CACHE_FILES` of them. A file is valid while what dbt reads is unchanged: dbt_project.yml,
the packages' and selectors' files, the folders dbt_project.yml names (models, macros, tests,
seeds, snapshots, analyses, functions, docs; outside the project too), the installed packages
(each by the same rule), the profile, the environment variables all of these read
(`env_var('NAME')`, and every `DBT_*` variable) and the settings; and while the lakeflow and the
dbt installed are the ones that wrote it. Nothing else under the project is read: a DuckDB file or
notes beside dbt_project.yml, or what dbt wrote (target/, logs/), leave the cache valid.

The profile may hold secrets, so the file's name comes from where the profile is, never from
its text, and the digest that validates the file is salted (a random salt per file). A valid
cache is read without importing dbt, so a machine without dbt can load a project compiled
elsewhere.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lakeflow.errors import DefinitionError

__all__ = ["CompiledProject", "compile_project"]

CACHE_FORMAT = 2  # the shape of `CompiledProject.to_json`: a new shape is a new number
CACHE_FILES = 8  # cache files kept per project, the newest
# the files of a project's root that dbt reads, beside the folders dbt_project.yml names
_ROOT_FILES = (
    "dbt_project.yml", "packages.yml", "dependencies.yml", "package-lock.yml", "selectors.yml",
    ".dbtignore",
)  # fmt: skip
# dbt_project.yml's settings naming the folders dbt reads, each with dbt's default
_FOLDER_SETTINGS = {
    "model-paths": ["models"], "macro-paths": ["macros"], "test-paths": ["tests"],
    "seed-paths": ["seeds"], "snapshot-paths": ["snapshots"], "analysis-paths": ["analyses"],
    "function-paths": ["functions"], "docs-paths": [],
    "source-paths": [], "data-paths": [],  # older names of model-paths and seed-paths
}  # fmt: skip
_ENV_VAR = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")
# a macro that replaces one of dbt's generic tests: `test_unique`, or what `test_unique`
# dispatches to (`default__test_unique`, `duckdb__test_unique`)
_TEST_MACRO = re.compile(r"(?:\w+__)?test_(\w+)")
# what dbt says when a macro queries the database while compiling: lakeflow compiles with
# --no-introspect, so any query finds no connection ("Connection already closed!" in a fresh
# process, "connection never acquired for thread" after an earlier dbt command in it)
_INTROSPECTION = re.compile(r"in (\w+) (\S+) \(([^)]*)\)\s+[^\n]*\b[Cc]onnection\b")
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
_PACKAGES = ("lakeflow", "dbt-core", "dbt-duckdb")


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
    variables = dict(vars or {})
    settings = {"target": target, "vars": variables, "select": selection}
    where = str(profiles.resolve()) if profiles else None  # the profile's place, not its text
    cache = (
        project / "target" / "lakeflow" / f"{_digest({**settings, 'profiles': where})[:16]}.json"
    )
    profile = (profiles / "profiles.yml").read_text() if profiles else _BUILTIN_PROFILE
    inputs = {
        "format": CACHE_FORMAT,
        **settings,
        "profile": profile,
        "project": _project_digest(project, profile, variables),
    }
    cached = _read_cache(cache, inputs)
    if cached is not None:
        return cached
    compiled = _run_dbt(project, profiles, target, variables, selection)
    _write_cache(cache, inputs, compiled)
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
def _digest(value: Any, salt: str = "") -> str:
    text = salt + json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _project_config(project: Path) -> Mapping[str, Any]:
    """dbt_project.yml's settings (none when it cannot be read: dbt will say why)."""
    try:
        config = yaml.safe_load((project / "dbt_project.yml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, Mapping) else {}


def _rendered(setting: Any, variables: Mapping[str, Any]) -> str:
    """A setting of dbt_project.yml as dbt reads it: `{{ env_var(...) }}` and `{{ var(...) }}`
    rendered."""
    text = str(setting)
    if "{{" not in text:
        return text
    import jinja2  # only for a project whose paths are templates

    def env_var(name: str, default: str = "") -> str:
        return os.environ.get(name, default)

    def var(name: str, default: Any = "") -> Any:
        return variables.get(name, default)

    try:
        return jinja2.Environment().from_string(text).render(env_var=env_var, var=var)
    except jinja2.TemplateError:
        return text  # dbt will refuse it


def _read_files(
    project: Path, variables: Mapping[str, Any], *, root: bool = True
) -> Iterator[Path]:
    """The files dbt reads of a project: its root files, the files under the folders its
    dbt_project.yml names (hidden and __pycache__ folders aside) and, for the root project, those
    of each installed package, by the same rule."""
    config = _project_config(project)
    for name in _ROOT_FILES:
        if (project / name).is_file():
            yield project / name
    for setting, default in _FOLDER_SETTINGS.items():
        folders = config.get(setting) or default  # dbt reads an empty setting as its default
        for folder in folders if isinstance(folders, list) else [folders]:
            yield from _walk(project / _rendered(folder, variables))
    if not root:
        return
    packages = project / _rendered(config.get("packages-install-path") or "dbt_packages", variables)
    if packages.is_dir():
        for package in sorted(packages.iterdir()):
            if (package / "dbt_project.yml").is_file():
                yield from _read_files(package, variables, root=False)


def _walk(folder: Path) -> Iterator[Path]:
    for parent, subfolders, files in os.walk(folder, followlinks=True):  # a local package links
        subfolders[:] = sorted(
            s for s in subfolders if not s.startswith(".") and s != "__pycache__"
        )
        for name in sorted(files):
            yield Path(parent, name)


def _project_digest(project: Path, profile: str, variables: Mapping[str, Any]) -> str:
    """A hash of the files dbt reads (`_read_files`) and of the environment variables they and
    the profile read."""
    digest = hashlib.sha256()
    names = set(_ENV_VAR.findall(profile))
    seen: set[Path] = set()
    for path in _read_files(project, variables):
        if path.resolve() in seen:  # folders named twice (docs-paths) or overlapping
            continue
        seen.add(path.resolve())
        data = path.read_bytes()
        digest.update(os.path.relpath(path, project).encode() + b"\0" + data + b"\0")
        names.update(_ENV_VAR.findall(data.decode(errors="replace")))
    names.update(n for n in os.environ if n.startswith("DBT_"))
    digest.update(json.dumps({n: os.environ.get(n) for n in sorted(names)}).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str | None]:
    """The installed lakeflow, dbt-core and dbt-duckdb versions (None: not installed), without
    importing them."""
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _read_cache(path: Path, inputs: Mapping[str, Any]) -> CompiledProject | None:
    """The cached project if `path` holds one compiled from `inputs`, written by this lakeflow
    and the dbt installed here (any dbt when none is installed); else None."""
    try:
        data = json.loads(path.read_text())
        if data["key"] != _digest(inputs, data["salt"]):
            return None
        written, installed = data["versions"], _versions()
        if written["lakeflow"] != installed["lakeflow"]:
            return None
        dbt = {k: v for k, v in installed.items() if k != "lakeflow"}
        if any(dbt.values()) and any(written[k] != v for k, v in dbt.items()):
            return None
        return CompiledProject.from_json(data["project"])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable, or of another shape
        return None


def _write_cache(path: Path, inputs: Mapping[str, Any], compiled: CompiledProject) -> None:
    """Keep the result for the next load, and only the newest `CACHE_FILES` files; a project
    folder we cannot write just is not cached."""
    salt = secrets.token_hex(16)
    payload = json.dumps({
        "key": _digest(inputs, salt), "salt": salt, "versions": _versions(),
        "project": compiled.to_json(),
    })  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(payload)
        os.replace(temporary, path)  # readers see the old file or the new one, never half
        _prune(path.parent)
    except OSError:
        return


def _prune(folder: Path) -> None:
    """Remove all but the newest `CACHE_FILES` cache files (other vars, selections, targets)."""
    dated = []
    for path in folder.glob("*.json"):
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except OSError:  # another process pruned it
            continue
    for _, path in sorted(dated, reverse=True)[CACHE_FILES:]:
        path.unlink(missing_ok=True)


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
            introspecting = _INTROSPECTION.search(str(outcome.exception or ""))
            if introspecting:
                kind, name, path = introspecting.groups()
                raise DefinitionError(
                    f"dbt project {project}: {kind} {name} ({path}) queries the database while "
                    "dbt compiles it (run_query, adapter.get_columns_in_relation, ...): lakeflow "
                    "compiles without a database, so introspective macros are not supported",
                    hint="write out in the SQL what the query would have found (columns, values)",
                )
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


def _node(node: Mapping[str, Any], replaced_tests: set[str]) -> dict[str, Any]:
    """What lakeflow reads of a model, test, seed or snapshot. A test is `builtin` when it is one
    of dbt's generic tests and no macro of the project or of a package replaces it."""
    config = node.get("config", {})
    test = node.get("test_metadata") or {}
    return {
        "type": node["resource_type"],
        "name": node["name"],
        "package": node.get("package_name"),
        "version": node.get("version"),
        "alias": node.get("alias"),
        "path": node.get("original_file_path", ""),
        "language": node.get("language", "sql"),
        "materialized": config.get("materialized"),
        "description": node.get("description", ""),
        "meta": _meta(f"{node['resource_type']} {node['name']}", node.get("meta"), config.get("meta")),
        "relation": node.get("relation_name"),
        "sql": node.get("compiled_code"),
        "parents": list(node.get("depends_on", {}).get("nodes", [])),
        "test": test.get("name"),
        "builtin": test.get("namespace") in (None, "dbt") and test.get("name") not in replaced_tests,
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


def _replaced_tests(manifest: Mapping[str, Any]) -> set[str]:
    """The generic tests of dbt that a macro outside dbt and its adapter replaces (a root
    project's `test_unique` or `default__test_unique` is what dbt runs for `unique`)."""
    internal = {"dbt", f"dbt_{manifest['metadata'].get('adapter_type')}"}
    return {
        found.group(1)
        for macro in manifest.get("macros", {}).values()
        if macro.get("package_name") not in internal
        and (found := _TEST_MACRO.fullmatch(macro.get("name", "")))
    }


def _distill(manifest: Mapping[str, Any], selected: tuple[str, ...]) -> CompiledProject:
    """The manifest as lakeflow maps it; dbt's unit tests (of a model's logic on fixed rows,
    not of its data) are left out."""
    replaced = _replaced_tests(manifest)
    return CompiledProject(
        name=manifest["metadata"].get("project_name") or "dbt",
        nodes={uid: _node(node, replaced) for uid, node in manifest["nodes"].items()},
        sources={uid: _source(source) for uid, source in manifest["sources"].items()},
        selected=tuple(uid for uid in selected if uid in manifest["nodes"]),
    )
