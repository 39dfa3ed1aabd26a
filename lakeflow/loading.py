"""Finding a pipeline from what a user types: `pipelines/flights.py`, `pipelines.flights`, or
either with `:name` to pick one of several pipelines in the module. Whatever stops the module from
importing (a syntax error, a NameError, a bad asset definition) comes out as a `DefinitionError`
naming the user's file and line."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from lakeflow.define.graph import Pipeline
from lakeflow.errors import DefinitionError, LakeflowError

__all__ = ["load_pipeline"]


def load_pipeline(target: str) -> Pipeline:
    """The `Pipeline` a module defines (the only one, or the one named after ':')."""
    location, _, attribute = target.partition(":")
    if location.endswith(".py") or "/" in location or Path(location).exists():
        module = _load_file(Path(location))
    else:
        module = _import(location, f"pipeline module {location!r}")
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Pipeline):
            raise DefinitionError(f"{location} has no Pipeline named {attribute!r}")
        return _loaded_from(found, module)
    pipelines = {name: value for name, value in vars(module).items() if isinstance(value, Pipeline)}
    if len(pipelines) != 1:
        names = ", ".join(pipelines) or "none"
        raise DefinitionError(
            f"{location} defines {len(pipelines)} pipelines ({names})",
            hint="pick one with FILE:NAME",
        )
    return _loaded_from(next(iter(pipelines.values())), module)


def _loaded_from(pipeline: Pipeline, module: object) -> Pipeline:
    """Note the module that binds it (a pipeline built by a helper function of another module
    is then still referenced by where it was loaded from: `define.definition.reference`)."""
    pipeline.__dict__.setdefault("_loaded_from", getattr(module, "__name__", None))
    return pipeline


def _load_file(path: Path) -> object:
    """Import a pipeline file under its real module name (`pipelines/flights.py` inside a package
    becomes `pipelines.flights`), with its root on `sys.path` and on `PYTHONPATH`, so that Ray
    workers started from this process import the very same module."""
    path = path.resolve()
    if not path.exists():
        raise DefinitionError(f"pipeline file {path} does not exist")
    root, parts = path.parent, [path.stem]
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    name = ".".join(parts)
    return _import(name, f"pipeline {path} (as {name})")


_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_IMPORTLIB_DIR = str(Path(importlib.__file__).resolve().parent)


def _import(name: str, what: str) -> ModuleType:
    """Import a pipeline module; its failures name the user's file and line, not ours."""
    try:
        return importlib.import_module(name)
    except SyntaxError as error:  # IndentationError too
        where = f"{error.filename}:{error.lineno}" if error.lineno else str(error.filename)
        raise DefinitionError(
            f"cannot import {what}: {where}: {type(error).__name__}: {error.msg}",
            hint=(error.text or "").strip() or None,
        ) from error
    except LakeflowError as error:  # an asset or pipeline definition refused while importing
        raise DefinitionError(
            f"cannot import {what}: {_user_line(error)}{error.message}", hint=error.hint
        ) from error
    except Exception as error:
        raise DefinitionError(
            f"cannot import {what}: {_user_line(error)}{type(error).__name__}: {error}"
        ) from error


def _user_line(error: BaseException) -> str:
    """`file.py:12: ` for the innermost frame outside lakeflow and importlib, or nothing."""
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith((_PACKAGE_DIR, _IMPORTLIB_DIR, "<frozen"))
    ]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""
