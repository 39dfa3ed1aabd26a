"""Finding a pipeline from what a user types: `pipelines/flights.py`, `pipelines.flights`, or
either with `:name` to pick one of several pipelines in the module."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from .errors import DefinitionError
from .graph import Pipeline

__all__ = ["load_pipeline"]


def load_pipeline(target: str) -> Pipeline:
    """The `Pipeline` a module defines (the only one, or the one named after ':')."""
    location, _, attribute = target.partition(":")
    if location.endswith(".py") or "/" in location or Path(location).exists():
        module = _load_file(Path(location))
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as error:
            raise DefinitionError(f"cannot import pipeline module {location!r}: {error}") from error
    if attribute:
        found = getattr(module, attribute, None)
        if not isinstance(found, Pipeline):
            raise DefinitionError(f"{location} has no Pipeline named {attribute!r}")
        return found
    pipelines = {name: value for name, value in vars(module).items() if isinstance(value, Pipeline)}
    if len(pipelines) != 1:
        names = ", ".join(pipelines) or "none"
        raise DefinitionError(
            f"{location} defines {len(pipelines)} pipelines ({names})",
            hint="pick one with FILE:NAME",
        )
    return next(iter(pipelines.values()))


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
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise DefinitionError(f"cannot import pipeline {path} as {name}: {error}") from error
