"""Finding a pipeline from what a user types: `pipelines/flights.py`, `pipelines.flights`, or
either with `:name` to pick one of several pipelines in the module."""

from __future__ import annotations

import importlib
import importlib.util
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
        raise DefinitionError(f"{location} defines {len(pipelines)} pipelines ({names})", hint="pick one with FILE:NAME")
    return next(iter(pipelines.values()))


def _load_file(path: Path) -> object:
    path = path.resolve()
    if not path.exists():
        raise DefinitionError(f"pipeline file {path} does not exist")
    name = "lakeflow_pipeline_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    try:  # workers cannot import a file-loaded module: ship its functions by value
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(module)
    except ImportError:
        pass
    return module
