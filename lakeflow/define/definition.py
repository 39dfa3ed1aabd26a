"""A pipeline as data: where its definition lives (a module and a name in it, with the file
that defines it) and a hash of what it does. This is what the lake keeps of a pipeline for a
stored run or for triggers that are up, never the pipeline object itself: what the lake holds
is read back as data, so a writer of the bucket cannot make a reader run code, and no storage
option (a secret) ever lands there. Importing the module again gives the pipeline back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any

from lakeflow.define.graph import Pipeline
from lakeflow.errors import DefinitionError, LakeflowError

__all__ = [
    "NotImportable",
    "PipelineRef",
    "ResumeError",
    "definition_hash",
    "import_pipeline",
    "pipeline_factory",
    "reference",
]


class ResumeError(LakeflowError):
    """A stored pipeline cannot be brought back here: no module, an import failure, or a
    definition that changed since the run was stored."""


class NotImportable(ResumeError):
    """The stored pipeline was defined where no other process can import it (a notebook)."""


@dataclass(frozen=True, slots=True)
class PipelineRef:
    """Where a pipeline is defined, and its definition hash when it was stored."""

    module: str  # import name, e.g. "pipelines.flights"
    attribute: str  # the module-level name holding the Pipeline (or its factory)
    file: str | None  # the module's file, for a process whose sys.path lacks its root
    root: str | None  # the directory to put on sys.path to import `module` from `file`
    definition: str  # definition_hash() when stored
    args: dict[str, Any] | None = None  # a factory's arguments (JSON); None: not a factory

    def describe(self) -> str:
        call = "(...)" if self.args is not None else ""
        return f"{self.module}:{self.attribute}{call}" + (f" ({self.file})" if self.file else "")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineRef:
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


# -- the definition hash ---------------------------------------------------------------------
def _fingerprint(value: Any, depth: int = 0) -> Any:
    """A JSON-able description of a definition part, stable across processes (no addresses)."""
    if depth > 6:
        return type(value).__name__
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_fingerprint(v, depth + 1) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(k): _fingerprint(v, depth + 1) for k, v in sorted(value.items(), key=repr)}
    if isinstance(value, FunctionType):
        cells = [c.cell_contents for c in value.__closure__ or () if _has_contents(c)]
        return {
            "fn": value.__qualname__,
            "code": hashlib.sha256(_code_text(value.__code__).encode()).hexdigest()[:16],
            "closure": [_fingerprint(c, depth + 1) for c in cells],
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{
                f.name: _fingerprint(getattr(value, f.name), depth + 1)
                for f in dataclasses.fields(value)
            },
        }
    describe = getattr(value, "describe", None)
    if callable(describe) and not isinstance(value, type):
        try:
            return {"type": type(value).__name__, "describe": str(describe())}
        except TypeError:
            pass
    if type(value).__module__.startswith("polars"):
        return {"type": type(value).__name__, "repr": str(value)}
    return {"type": type(value).__name__}


def _code_text(code: CodeType) -> str:
    """A code object as text without addresses (nested code objects are expanded)."""
    consts = [_code_text(c) if isinstance(c, CodeType) else repr(c) for c in code.co_consts]
    return repr((code.co_code, consts, code.co_names))


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def definition_hash(pipeline: Pipeline) -> str:
    """A hash of what the pipeline's assets do: each asset's code version, partitions, inputs
    and their mappings, and checks. The lake, its storage options and the triggers are left
    out: a run stored from one lake resumes in it whatever `--lake` said."""
    parts = []
    for name in sorted(pipeline.assets):
        asset = pipeline.assets[name]
        parts.append({
            "name": name,
            "code": asset.code_version,
            "source": asset.source,
            "url": asset.url,
            "partitions": asset.partitions.definition(),
            "inputs": {e.up: e.mapping.describe() for e in pipeline.upstream(name)},
            "data_inputs": list(asset.data_inputs),
            "checks": [_fingerprint(c) for c in asset.checks],
            "on_fail": asset.on_fail,
        })  # fmt: skip
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- pipelines built by a function ------------------------------------------------------------
def pipeline_factory(fn: Callable[..., Pipeline]) -> Callable[..., Pipeline]:
    """Mark a module-level function that builds a pipeline from plain arguments (a region, a
    lake, a list of sources), so that its runs and triggers can be brought back by another
    process: the lake keeps the function's import path and its arguments, as JSON.

    >>> @lf.pipeline_factory
    ... def regional(region: str, lake: str) -> lf.Pipeline: ...
    >>> pipeline = regional("eu", lake="s3://lake/eu")

    The arguments are stored in the lake: they must be JSON values (strings, numbers, lists,
    dicts), and never credentials — pass those as `lf.EnvVar` storage options or through the
    environment.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Pipeline:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        try:
            json.dumps(arguments)
        except TypeError as error:
            raise DefinitionError(
                f"pipeline factory {fn.__qualname__}: its arguments are stored in the lake and "
                f"must be JSON values: {error}",
                hint="pass credentials as lf.EnvVar storage options, not as arguments",
            ) from None
        pipeline = fn(**arguments)
        if not isinstance(pipeline, Pipeline):
            raise DefinitionError(f"pipeline factory {fn.__qualname__} returned {pipeline!r}")
        pipeline.__dict__["_factory"] = (fn.__module__, fn.__qualname__, arguments)
        pipeline.__dict__.pop("_reference", None)
        return pipeline

    build.__dict__["_pipeline_factory"] = True
    return build


# -- where it is defined ---------------------------------------------------------------------
def reference(pipeline: Pipeline) -> PipelineRef | str:
    """The pipeline's `PipelineRef`, or the reason it has none (a string). Computed once, in
    the process that has the module loaded, and kept on the pipeline so it travels with it."""
    cached = pipeline.__dict__.get("_reference")
    if cached is not None:
        return cached
    found = _find(pipeline)
    pipeline.__dict__["_reference"] = found
    return found


def _find(pipeline: Pipeline) -> PipelineRef | str:
    factory = pipeline.__dict__.get("_factory")
    if factory is not None:
        return _factory_ref(pipeline, *factory)
    found = _bound_in(pipeline, pipeline.defined_in)
    loaded = pipeline.__dict__.get("_loaded_from")  # the module `load_pipeline` took it from
    if not isinstance(found, PipelineRef) and loaded and loaded != pipeline.defined_in:
        bound = _bound_in(pipeline, loaded)
        if isinstance(bound, PipelineRef):
            return bound
    return found


def _bound_in(pipeline: Pipeline, name: str | None) -> PipelineRef | str:
    """The reference to `pipeline` under a module-level name of module `name`, or why not."""
    if name is None or name == "__main__":
        return (
            f"pipeline {pipeline.name!r} was defined in a notebook or a script's __main__, "
            "which another process cannot import"
        )
    module = sys.modules.get(name)
    if module is None:
        return f"pipeline {pipeline.name!r} comes from module {name}, which is not loaded"
    definition = definition_hash(pipeline)
    matches = [
        (attr, value)
        for attr, value in vars(module).items()
        if isinstance(value, Pipeline) and not attr.startswith("__")
    ]
    same = [(a, v) for a, v in matches if v is pipeline] or [
        (a, v)
        for a, v in matches
        if definition_hash(v) == definition and _behaviour(v) == _behaviour(pipeline)
    ]
    if not same:
        return (
            f"pipeline {pipeline.name!r} was built inside a function of {name}, not bound to a "
            "module-level name another process could import"
        )
    file = getattr(module, "__file__", None)
    return PipelineRef(
        name, same[0][0], str(Path(file).resolve()) if file else None, _root(file, name), definition
    )


def _factory_ref(
    pipeline: Pipeline, name: str, qualname: str, arguments: dict[str, Any]
) -> PipelineRef | str:
    module = sys.modules.get(name)
    if name == "__main__" or module is None or "." in qualname:
        return (
            f"pipeline {pipeline.name!r} comes from factory {name}.{qualname}, which another "
            "process cannot import (define the factory at module level in a .py file)"
        )
    file = getattr(module, "__file__", None)
    return PipelineRef(
        name,
        qualname,
        str(Path(file).resolve()) if file else None,
        _root(file, name),
        definition_hash(pipeline),
        arguments,
    )


def _root(file: str | None, module: str) -> str | None:
    """The directory to put on sys.path to import `module` from its `file`."""
    if not file:
        return None
    root = Path(file).resolve().parent
    for _ in module.split(".")[1:]:
        root = root.parent
    return str(root)


def _behaviour(pipeline: Pipeline) -> str:
    """What tells apart pipelines of the same assets: their name, automation and triggers."""
    automation = {n: _fingerprint(a.automation) for n, a in pipeline.assets.items()}
    triggers = [_fingerprint(t) for t in pipeline.triggers]
    return json.dumps([pipeline.name, automation, triggers], sort_keys=True, default=str)


def import_pipeline(ref: PipelineRef, *, what: str, accept_changed_code: bool = False) -> Pipeline:
    """The pipeline `ref` names, imported here; `ResumeError` if it cannot be, or if its
    definition hash differs from the stored one (unless `accept_changed_code`)."""
    try:
        module = importlib.import_module(ref.module)
    except ImportError as first:
        if not (ref.file and ref.root and Path(ref.file).exists()):
            raise ResumeError(
                f"{what}: cannot import its pipeline module {ref.describe()} here: {first}",
                hint="run it where the module is importable (on a cluster: the job's "
                "working_dir or PYTHONPATH, as lakeflow submit sets)",
            ) from first
        if ref.root not in sys.path:
            sys.path.insert(0, ref.root)
        try:
            module = importlib.import_module(ref.module)
        except ImportError as error:
            raise ResumeError(
                f"{what}: cannot import its pipeline {ref.describe()}: {error}"
            ) from error
    except Exception as error:  # the module itself raised while importing
        raise ResumeError(
            f"{what}: importing its pipeline module {ref.module} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    found = getattr(module, ref.attribute, None)
    if ref.args is not None and callable(found):  # a factory: build it again from its arguments
        try:
            found = found(**ref.args)
        except LakeflowError:
            raise
        except Exception as error:
            raise ResumeError(
                f"{what}: its pipeline factory {ref.describe()} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    if not isinstance(found, Pipeline):
        raise ResumeError(
            f"{what}: {ref.module} has no Pipeline named {ref.attribute!r} any more",
            hint="restore it, or start a new run",
        )
    current = definition_hash(found)
    if current != ref.definition and not accept_changed_code:
        raise ResumeError(
            f"{what}: the definition of pipeline {ref.describe()} changed since the run was "
            f"stored (definition {ref.definition}, now {current}): an asset's code, "
            "partitions, inputs or checks differ",
            hint="resume with --accept-changed-code (accept_changed_code=True) to carry on "
            "with the new code, or start a new backfill",
        )
    found.__dict__["_reference"] = PipelineRef(
        ref.module, ref.attribute, ref.file, ref.root, current, ref.args
    )
    return found
