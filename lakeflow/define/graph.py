"""The asset graph of a pipeline: validation, topological order and the selection syntax.

Selection terms, comma separated: `name`, `name+` (and everything downstream), `+name` (and
everything upstream), `+name+` (both), `*` (every asset).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from lakeflow.define.assets import AssetDef, check_table_policies
from lakeflow.define.mappings import PartitionMapping, Previous, default_mapping
from lakeflow.define.tables import Compaction, Retention
from lakeflow.errors import DefinitionError, SelectionError
from lakeflow.secrets import StorageOption

__all__ = ["Edge", "Pipeline", "user_frame"]


@dataclass(frozen=True, slots=True)
class Edge:
    """`down` reads the partitions of `up` that `mapping` names."""

    down: str
    up: str
    mapping: PartitionMapping
    data: bool  # passed to the function as a LazyFrame (False: a dependency only)


def _suggest(name: str, known: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else None


def user_frame() -> FrameType | None:
    """The innermost frame of code outside lakeflow: the user's code declaring an asset or
    building a pipeline (None when lakeflow was called by nothing else)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "lakeflow":
        frame = frame.f_back
    return frame


class Pipeline:
    """A set of assets living in one lake, as declared: the graph, its validation and selection.
    Users hold `lakeflow.Pipeline` (lakeflow/pipeline.py), which adds `materialize` and `status`.
    `timeout=` (seconds) applies to the units of every asset that sets no `timeout=` of its own,
    `optimize=` (`Compaction`) and `retention=` (`Retention`) to the tables of every asset that
    sets none.

    >>> pipeline = Pipeline([flights, delays, monthly], lake="./lake")
    """

    def __init__(
        self,
        assets: Iterable[AssetDef],
        *,
        lake: str | Path = "./lake",
        storage_options: Mapping[str, StorageOption] | None = None,
        name: str = "pipeline",
        triggers: Iterable[Any] = (),
        timeout: float | None = None,
        optimize: Compaction | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.name = name
        if timeout is not None and not timeout > 0:
            raise DefinitionError(
                f"pipeline timeout must be a positive number of seconds, got {timeout!r}"
            )
        check_table_policies("pipeline", optimize, retention)
        self.timeout = timeout  # seconds a unit may run, for assets that set no timeout
        self.optimize = optimize  # compaction, for assets that set none
        self.retention = retention  # table retention, for assets that set none
        self.triggers = tuple(triggers)  # schedules and publish callbacks, run by `lakeflow up`
        self.lake = str(lake)
        # literal values or `lf.EnvVar` references, resolved by whoever opens the lake
        self.storage_options: dict[str, StorageOption] = dict(storage_options or {})
        caller = user_frame()  # the module a stored run re-imports the pipeline from
        self.defined_in = (caller.f_globals.get("__name__") or None) if caller else None
        defined: dict[str, AssetDef] = {}
        for item in assets:
            if not isinstance(item, AssetDef):
                raise DefinitionError(f"{item!r} is not an asset; decorate it with @lf.asset")
            if item.name in defined:
                raise DefinitionError(f"duplicate asset name {item.name!r}")
            defined[item.name] = item
        if not defined:
            raise DefinitionError("a pipeline needs at least one asset")
        self._edges = self._resolve_edges(defined)
        self.assets: dict[str, AssetDef] = {n: defined[n] for n in self._toposort(defined)}
        self._up = {n: tuple(e for e in self._edges if e.down == n) for n in self.assets}
        self._down = {n: tuple(e for e in self._edges if e.up == n) for n in self.assets}
        for trigger in self.triggers:
            check = getattr(trigger, "validate", None)
            if check is None:
                raise DefinitionError(
                    f"{trigger!r} is not a trigger; use lf.schedule(...) or lf.on_publish(...)"
                )
            check(self)

    def with_lake(
        self, lake: str | Path, storage_options: Mapping[str, StorageOption] | None = None
    ) -> Pipeline:
        """The same pipeline on another lake (its storage options kept unless given); it keeps
        the module it was defined in, so its runs stay resumable."""
        other = type(self)(
            self.assets.values(),
            lake=lake,
            storage_options=self.storage_options if storage_options is None else storage_options,
            name=self.name,
            triggers=self.triggers,
            timeout=self.timeout,
            optimize=self.optimize,
            retention=self.retention,
        )
        other.defined_in = self.defined_in
        for kept in ("_reference", "_factory", "_loaded_from"):  # where it is defined travels
            if kept in self.__dict__:
                other.__dict__[kept] = self.__dict__[kept]
        return other

    # -- validation ----------------------------------------------------------------------------
    @staticmethod
    def _resolve_edges(defined: Mapping[str, AssetDef]) -> tuple[Edge, ...]:
        edges = []
        for down in defined.values():
            for up_name, mapping in down.inputs.items():
                if up_name not in defined:
                    where = f" ({down.sql.origin})" if down.sql is not None else ""  # its SQL file
                    raise DefinitionError(
                        f"asset {down.name}{where} depends on unknown asset {up_name!r}",
                        hint=_suggest(up_name, defined) or "add it to the pipeline",
                    )
                up = defined[up_name]
                if up_name == down.name and not isinstance(mapping, Previous):
                    raise DefinitionError(
                        f"asset {down.name} depends on itself",
                        hint="a table that builds on its own earlier partition uses inputs={name: lf.previous()}",
                    )
                resolved = mapping or default_mapping(down.partitions, up.partitions)
                resolved.check(down.partitions, up.partitions)
                edges.append(Edge(down.name, up_name, resolved, up_name in down.data_inputs))
        return tuple(edges)

    def _toposort(self, defined: Mapping[str, AssetDef]) -> list[str]:
        pending = {n: {e.up for e in self._edges if e.down == n and e.up != n} for n in defined}
        order: list[str] = []
        while pending:
            ready = [n for n, ups in pending.items() if not ups]
            if not ready:
                raise DefinitionError(f"dependency cycle: {' -> '.join(self._find_cycle(pending))}")
            for n in ready:
                order.append(n)
                del pending[n]
            for ups in pending.values():
                ups.difference_update(ready)
        return order

    @staticmethod
    def _find_cycle(pending: Mapping[str, set[str]]) -> list[str]:
        node = next(iter(pending))
        path: list[str] = []
        while node not in path:
            path.append(node)
            node = sorted(pending[node])[0]
        cycle = path[path.index(node) :]
        return [*reversed(cycle), cycle[-1]]

    # -- the graph -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> AssetDef:
        try:
            return self.assets[name]
        except KeyError:
            raise SelectionError(
                f"unknown asset {name!r}", hint=_suggest(name, self.assets)
            ) from None

    def upstream(self, name: str) -> tuple[Edge, ...]:
        """Edges into `name`, its own previous partitions included."""
        return self._up[name]

    def downstream(self, name: str) -> tuple[Edge, ...]:
        return self._down[name]

    def _closure(self, start: str, step: Mapping[str, tuple[Edge, ...]], attr: str) -> set[str]:
        seen, stack = {start}, [start]
        while stack:
            for edge in step[stack.pop()]:
                node = getattr(edge, attr)
                if node not in seen:
                    seen.add(node)
                    stack.append(node)
        return seen

    def timeout_of(self, name: str) -> float | None:
        """Seconds one unit of `name` may run: its own `timeout=`, else the pipeline's."""
        own = self[name].timeout
        return own if own is not None else self.timeout

    def compaction_of(self, name: str) -> Compaction | None:
        """When `name`'s partitions are compacted: its own `optimize=`, else the pipeline's."""
        own = self[name].optimize
        return own if own is not None else self.optimize

    def table_properties(self, name: str) -> dict[str, str]:
        """The Delta table properties `name`'s table keeps: its own `retention=`, else the
        pipeline's (empty: Delta's defaults)."""
        retention = self[name].retention or self.retention
        return retention.properties() if retention is not None else {}

    def select(self, selection: str | Sequence[str] | None = None) -> list[str]:
        """Asset names a selection names, in topological order.

        >>> pipeline.select("flights+,weather")
        """
        if selection is None:
            return [n for n, a in self.assets.items() if not a.source]
        terms = selection.split(",") if isinstance(selection, str) else list(selection)
        chosen: set[str] = set()
        for raw in terms:
            term = raw.strip()
            if term == "*":
                chosen.update(self.assets)
                continue
            name = term.strip("+")
            if not name:
                raise SelectionError(
                    f"empty selection term {raw!r}", hint="write names like orders+ or +orders"
                )
            if self[name].source:  # raises for unknown names
                raise SelectionError(
                    f"{name} is a source: its producer writes it, lakeflow only watches it",
                    hint=f"select the assets that read it ({name}+)",
                )
            chosen.add(name)
            if term.startswith("+"):
                chosen |= self._closure(name, self._up, "up")
            if term.endswith("+"):
                chosen |= self._closure(name, self._down, "down")
        picked = [n for n in self.assets if n in chosen and not self.assets[n].source]
        if not picked:
            raise SelectionError(f"selection {selection!r} matches no asset lakeflow builds")
        return picked

    def describe(self) -> str:
        """The graph as text: one line per asset, with its partitions and inputs."""
        lines = []
        for name, item in self.assets.items():
            ups = ", ".join(
                f"{e.up}"
                + (
                    ""
                    if e.mapping.describe() in ("identity", "overlap", "all")
                    else f" [{e.mapping.describe()}]"
                )
                for e in self._up[name]
            )
            if item.source:
                ups = "(source: written outside lakeflow)"
            elif item.automation is not None:
                ups = f"{ups}  [{item.automation.describe()}]"
            lines.append(f"{name:<24} {item.partitions.describe():<40} <- {ups or '(no inputs)'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {len(self.assets)} assets, lake={self.lake}>"
