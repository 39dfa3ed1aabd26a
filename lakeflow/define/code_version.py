"""The default code version of an asset: a hash of the code its function can reach in its module.

A unit is fresh only while its asset's code version is the one it was published with, so the
hash must move whenever the numbers could. It covers, starting from the asset function:

- the source text of the function (dedented; the compiled code when there is no source);
- every global name its code (nested functions, lambdas and comprehensions included) uses that is
  a function or class defined in the same module: its source, then what *it* reaches, recursively;
- every such global whose value is a plain constant (None, bool, int, float, complex, str, bytes,
  and tuples, lists, sets, frozensets and dicts of them): its name and value;
- the same plain constants held in the function's closure.

It leaves out what other modules and packages define (polars, your own library modules: pin those
with `code_version=`), and module-level objects that are not plain constants (a partitions
definition, a client), whose `repr` is not stable across processes.
"""

from __future__ import annotations

import hashlib
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["code_version"]

_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def code_version(fn: Callable[..., Any]) -> str:
    """A 12-hex-digit hash of `fn` and the helpers and constants it reaches in its module.

    >>> code_version(priced)
    '3f1c0a9b2d4e'
    """
    fn = inspect.unwrap(fn)
    module = getattr(fn, "__module__", None)
    namespace: dict[str, Any] = getattr(fn, "__globals__", {})
    digest = hashlib.sha256()
    seen: set[int] = set()
    pending: list[Any] = [fn]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        digest.update(_source(item).encode())
        for name in sorted(_global_names(item)):
            if name not in namespace:
                continue
            value = namespace[name]
            reached = _same_module_code(value, module)
            if reached is not None:
                if id(reached) not in seen:
                    pending.append(reached)
                    digest.update(f"\0ref {name}".encode())
            elif _is_constant(value):
                digest.update(f"\0const {name}={_stable_repr(value)}".encode())
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if _is_constant(value):
            digest.update(f"\0closure {_stable_repr(value)}".encode())
    return digest.hexdigest()[:12]


def _same_module_code(value: Any, module: str | None) -> Any:
    """The function or class `value` names if it is defined in `module` (an asset: its function)."""
    if not (inspect.isfunction(value) or inspect.isclass(value)):
        inner = getattr(value, "fn", None)  # another asset, called directly
        value = inner if inspect.isfunction(inner) else None
    if value is None:
        return None
    value = inspect.unwrap(value) if inspect.isfunction(value) else value
    return value if getattr(value, "__module__", None) == module else None


def _source(item: Any) -> str:
    try:
        return textwrap.dedent(inspect.getsource(item))
    except (OSError, TypeError):
        code = getattr(item, "__code__", None)
        if code is None:
            return getattr(item, "__qualname__", repr(type(item)))
        return repr((code.co_code, _plain_consts(code), code.co_names))


def _plain_consts(code: types.CodeType) -> tuple[Any, ...]:
    return tuple(_plain_consts(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)


def _codes(item: Any) -> Iterator[types.CodeType]:
    """The code objects of a function (and those nested in it), or of a class's methods."""
    if inspect.isclass(item):
        for member in vars(item).values():
            member = getattr(member, "__func__", member)  # staticmethod, classmethod
            if inspect.isfunction(member):
                yield from _codes(member)
        return
    code = getattr(item, "__code__", None)
    stack = [code] if code is not None else []
    while stack:
        current = stack.pop()
        yield current
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def _global_names(item: Any) -> set[str]:
    # co_names also holds attribute names (`pl.col` gives "pl" and "col"); a global that merely
    # shares an attribute's name is hashed too, which can only make the version more cautious
    return {name for code in _codes(item) for name in code.co_names}


def _is_constant(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(_is_constant(v) for v in value)
    if isinstance(value, dict):
        return all(_is_constant(k) and _is_constant(v) for k, v in value.items())
    return False


def _stable_repr(value: Any) -> str:
    """repr with sets and dicts in sorted order (a set of strings iterates differently in each
    process: string hashes are salted)."""
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(map(_stable_repr, value))})"
    if isinstance(value, dict):
        return f"dict({sorted((_stable_repr(k), _stable_repr(v)) for k, v in value.items())})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({[_stable_repr(v) for v in value]})"
    return repr(value)
