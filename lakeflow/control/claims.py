"""One build of a partition at a time, among the runs of one controller: a unit whose
partition another run is building waits for it (parked), and one that another run published
since this run was planned, from the inputs it would read and by the same code, is done
already (dispatch-time freshness; for a file, only if the file has not changed since). And the spec of a unit to run: the upstream files it
reads, as the tables are at dispatch. `Claims` is a part of `Run` (control/runner.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

import numpy as np

from lakeflow.control.outcomes import RunEvents
from lakeflow.define.partitions import FilePartitions
from lakeflow.execute.worker import WHOLE_TABLE_FILES, InputSpec, UnitSpec
from lakeflow.lake.log import TableState
from lakeflow.plan.planner import Request
from lakeflow.plan.scheduler import UnitStatus

__all__ = ["BUILDING", "Claims"]

BUILDING = (UnitStatus.RUNNING, UnitStatus.STAGED, UnitStatus.VERIFYING)  # a partition in the works


class Claims(RunEvents):
    """Which of a run's units to run now, given the other runs of its controller."""

    request: Request
    tables: Mapping[str, TableState]
    parked: set[int]
    seen: dict[str, int]  # each table's version when the run was planned
    finished: asyncio.Event

    def others(self) -> Iterable[Claims]:
        """The other runs of this controller."""
        raise NotImplementedError

    def _claim(self, batch: list[int]) -> list[int]:
        """The units of `batch` to run now. One whose partition another run of this controller is
        building waits for it (parked); one that another run published since this run was
        planned, from the inputs this unit would read and with the same code, is done already:
        two runs asking for one partition build it once."""
        out = []
        for unit in batch:
            if self._held_elsewhere(unit):
                self.parked.add(unit)
            elif self._fresh_now(unit):
                asset = self.plan.locate(unit)[0]
                info = self.tables[asset].published[self.key(unit)]
                self.state.published([unit], info.version)
                self.event(unit, "unit_fresh", version=info.version,
                           message=f"built meanwhile by run {info.run_id}")  # fmt: skip
                self.forget_key(unit)
            else:
                out.append(unit)
        return out

    def _held_elsewhere(self, unit: int) -> bool:
        """Is another unfinished run of this controller running, staging or verifying this
        unit's partition?"""
        asset, index = self.plan.locate(unit)
        for other in self.others():
            if other.finished.is_set() or asset not in other.plan.assets:
                continue
            theirs = other.plan.unit(asset, index)
            if (
                theirs is not None
                and theirs not in other.parked
                and other.state.status[theirs] in BUILDING
            ):
                return True
        return False

    def _fresh_now(self, unit: int) -> bool:
        """Did another run publish this unit's partition after this run was planned, by the
        current code and from the upstream partitions as they are now?"""
        if self.request.force or self.request.only == "all" or self.plan.is_delete(unit):
            return False
        asset = self.plan.locate(unit)[0]
        table, key = self.tables[asset], self.key(unit)
        with table.lock:
            if table.touched.get(key, -1) <= self.seen.get(asset, -1):
                return False  # nothing new since the plan: the plan's verdict stands
            info = table.published.get(key)
            if info is None or not table.files.get(key):
                return False
        if info.run_id == self.id or info.code_version != self.pipeline[asset].code_version:
            return False
        position = unit - int(self.plan.offsets[self.plan.asset_of(unit)])
        for edge in self.pipeline.upstream(asset):
            lo, hi = (int(x[position]) for x in self.plan.ranges[(asset, edge.up)])
            up = self.tables[edge.up]
            keys = self.pipeline[edge.up].partitions.keys(np.arange(lo, hi)) if hi > lo else []
            with up.lock:
                newest = max((up.touched.get(k, -1) for k in keys), default=-1)
            if newest > info.inputs.get(edge.up, -1):
                return False
        stamp = self._file_stamp(asset, key)  # a file that changed since is not done
        return all(info.inputs.get(part) == value for part, value in stamp.items())

    def _file_stamp(self, asset: str, key: str) -> dict[str, int]:
        """The stamp of a file sensor's partition as the sensor last took it ({} for other
        assets): recorded with the unit's input versions, so its publish says which version of
        the file it was built from."""
        parts = self.pipeline[asset].partitions
        return dict(parts.stamp(key) or {}) if isinstance(parts, FilePartitions) else {}

    def _spec(self, unit: int) -> UnitSpec:
        plan, pipeline, tables = self.plan, self.pipeline, self.tables
        asset, index = plan.locate(unit)
        position = unit - int(plan.offsets[plan.asset_of(unit)])
        inputs = []
        for edge in pipeline.upstream(asset):
            lo, hi = (int(x[position]) for x in plan.ranges[(asset, edge.up)])
            table = tables[edge.up]
            up_parts = pipeline[edge.up].partitions
            keys = up_parts.keys(np.arange(lo, hi)) if hi > lo else []
            files = table.file_list(keys)
            whole = len(files) > WHOLE_TABLE_FILES
            inputs.append(InputSpec(
                name=edge.up, table_url=table.url, column=table.column, version=table.version,
                files=() if whole else tuple((k, p) for k, p, _ in files),
                keys=(None if hi - lo == len(up_parts) else tuple(keys)) if whole else None,
                schema=table.schema, whole_table=whole,
            ))  # fmt: skip
        attempt = int(self.state.attempts[unit])
        return UnitSpec(asset, index, self.key(unit), attempt, tuple(inputs), tables[asset].schema)
