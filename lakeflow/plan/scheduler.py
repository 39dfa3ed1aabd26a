"""The state of one run as it executes: which units wait, which are ready, running, staged,
published or failed. Pure bookkeeping over the plan's arrays; the controller feeds it what happens
(records, commits, crashes) and asks it what to dispatch.

Every transition moves a whole batch with numpy (a status array, counts per status, the plan's
CSR of downstream units), so a million units cost seconds of bookkeeping, not minutes. Ready
units are served deepest asset first, so a partition flows through the graph as soon as its own
inputs are published instead of waiting for a whole upstream asset; within an asset, partitions
go oldest-first (or newest-first).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from lakeflow.define.graph import Pipeline
from lakeflow.define.mappings import expand_ranges
from lakeflow.errors import ErrorInfo
from lakeflow.plan.planner import Plan

__all__ = ["NOT_BUILT", "RunState", "UnitStatus", "depths"]


class UnitStatus(IntEnum):
    WAITING = 0  # for upstream units of the plan
    READY = 1
    RUNNING = 2
    RETRYING = 3  # waiting out a backoff
    STAGED = 4  # written, waiting for its commit
    PUBLISHED = 5
    FAILED = 6
    UPSTREAM_FAILED = 7
    CANCELLED = 8
    VERIFYING = 9  # published, its table checks still running: consumers wait
    CHECK_FAILED = 10  # a blocking check failed: not published (or held / rolled back)
    BLOCKED = 11  # downstream of a failed check: not run


FINAL = (
    UnitStatus.PUBLISHED,
    UnitStatus.FAILED,
    UnitStatus.UPSTREAM_FAILED,
    UnitStatus.CANCELLED,
    UnitStatus.CHECK_FAILED,
    UnitStatus.BLOCKED,
)
# Final outcomes of a unit that was not built, each counted on its own in progress and status.
NOT_BUILT = ("failed", "upstream_failed", "check_failed", "blocked")
_IS_FINAL = np.zeros(len(UnitStatus), bool)
_IS_FINAL[list(FINAL)] = True


@dataclass(frozen=True, slots=True)
class Failure:
    unit: int
    error: ErrorInfo
    attempt: int


class RunState:
    """Mutable progress of a run over its immutable `Plan`."""

    def __init__(self, plan: Plan, *, depth: dict[str, int] | None = None) -> None:
        self.plan = plan
        size = plan.size
        self.status = np.zeros(size, np.int8)
        self.waits = plan.waits.copy()
        self.attempts = np.zeros(size, np.int16)
        self.rows = np.zeros(size, np.int64)
        self.bytes = np.zeros(size, np.int64)
        self.seconds = np.zeros(size, np.float32)
        self.version = np.full(size, -1, np.int64)
        self.errors: dict[int, Failure] = {}
        self.cause: dict[int, int] = {}  # held unit -> the failed unit behind it
        self._counts = np.zeros(len(UnitStatus), np.int64)
        self._counts[UnitStatus.WAITING] = size
        depths: dict[str, int] = depth or {}

        def deepest_first(j: int) -> tuple[int, int]:
            return (-depths.get(plan.assets[j], j), -j)

        self._asset_order = sorted(range(len(plan.assets)), key=deepest_first)
        self._ready: list[deque[int]] = [deque() for _ in plan.assets]
        self._backoff: list[tuple[float, int]] = []
        self._newest = plan.order == "newest"
        self.started = time.time()
        self.finished: float | None = None
        self._make_ready(np.flatnonzero(self.waits == 0))
        self._check_done()

    # -- counting ------------------------------------------------------------------------------
    def _move(self, units: np.ndarray, to: UnitStatus) -> None:
        """Set the status of `units` (an index array), keeping the counts."""
        if len(units) == 0:
            return
        self._counts -= np.bincount(self.status[units], minlength=len(UnitStatus))
        self._counts[to] += len(units)
        self.status[units] = to

    def _set(self, unit: int, to: UnitStatus) -> None:
        self._counts[self.status[unit]] -= 1
        self._counts[to] += 1
        self.status[unit] = to

    def count(self, status: UnitStatus) -> int:
        return int(self._counts[status])

    def counts(self) -> dict[str, int]:
        return {s.name.lower(): int(self._counts[s]) for s in UnitStatus}

    @property
    def done(self) -> bool:
        return int(self._counts[list(FINAL)].sum()) == self.plan.size

    @property
    def succeeded(self) -> bool:
        return self.done and self.count(UnitStatus.PUBLISHED) == self.plan.size

    # -- dispatch ------------------------------------------------------------------------------
    def ready_count(self) -> int:
        return self.count(UnitStatus.READY)

    def next_backoff(self) -> float | None:
        """When the earliest unit in backoff becomes ready (epoch seconds), if any."""
        return self._backoff[0][0] if self._backoff else None

    def release_backoffs(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        due = []
        while self._backoff and self._backoff[0][0] <= now:
            due.append(heapq.heappop(self._backoff)[1])
        if due:
            units = np.array(due, np.int64)
            self._make_ready(units[self.status[units] == UnitStatus.RETRYING], front=True)

    def _make_ready(self, units: np.ndarray, *, front: bool = False) -> None:
        """Queue `units` in their asset's order; `front`: before the backlog (a retry is due
        now, not after every unit queued while it failed)."""
        if len(units) == 0:
            return
        units = np.sort(units)
        self._move(units, UnitStatus.READY)
        owners = np.searchsorted(self.plan.offsets, units, side="right") - 1
        for j in np.unique(owners).tolist():
            mine = units[owners == j]
            ordered = (mine[::-1] if self._newest else mine).tolist()
            if front:
                self._ready[j].extendleft(reversed(ordered))
            else:
                self._ready[j].extend(ordered)

    def next_asset(self) -> int | None:
        """The position (in the plan) of the asset `take` serves next: the deepest with ready units."""
        for j in self._asset_order:
            queue = self._ready[j]
            while queue and self.status[queue[0]] != UnitStatus.READY:
                queue.popleft()  # cancelled leftovers
            if queue:
                return j
        return None

    def take(self, limit: int) -> list[int]:
        """Up to `limit` ready units of one asset (the deepest that has any), now RUNNING."""
        for j in self._asset_order:
            queue = self._ready[j]
            while queue:
                picked = np.array(
                    [queue.popleft() for _ in range(min(limit, len(queue)))], np.int64
                )
                picked = picked[self.status[picked] == UnitStatus.READY]  # drop cancelled leftovers
                if len(picked):
                    self._move(picked, UnitStatus.RUNNING)
                    self.attempts[picked] += 1
                    return picked.tolist()
        return []

    # -- outcomes ------------------------------------------------------------------------------
    def staged(self, unit: int, *, rows: int, size: int, seconds: float) -> None:
        self._set(unit, UnitStatus.STAGED)
        self.rows[unit], self.bytes[unit], self.seconds[unit] = rows, size, seconds

    def published(self, units: Iterable[int], version: int, *, verify: bool = False) -> None:
        """Units committed at `version`. With `verify`, their consumers wait for `verified`."""
        batch = np.fromiter(units, np.int64)
        batch = batch[~_IS_FINAL[self.status[batch]]]
        self.version[batch] = version
        if verify:
            self._move(batch, UnitStatus.VERIFYING)
        else:
            self._release(batch)
        self._check_done()

    def verified(self, units: Iterable[int]) -> None:
        """The table checks of these published units passed: their consumers may run."""
        batch = np.fromiter(units, np.int64)
        self._release(batch[self.status[batch] == UnitStatus.VERIFYING])
        self._check_done()

    def _release(self, units: np.ndarray) -> None:
        """Mark `units` published and let every downstream unit whose waits reach 0 go."""
        self._move(units, UnitStatus.PUBLISHED)
        _, positions = expand_ranges(self.plan.down_ptr[units], self.plan.down_ptr[units + 1])
        if len(positions) == 0:
            return
        downs = self.plan.down_ids[positions]
        np.subtract.at(self.waits, downs, 1)
        touched = np.unique(downs)
        self._make_ready(
            touched[(self.waits[touched] == 0) & (self.status[touched] == UnitStatus.WAITING)]
        )

    def retry(self, unit: int, delay: float) -> None:
        self._set(unit, UnitStatus.RETRYING)
        heapq.heappush(self._backoff, (time.time() + delay, unit))

    def requeue(self, unit: int) -> None:
        """Put a unit back without counting the attempt (its task was lost, not failed)."""
        self.attempts[unit] = max(0, self.attempts[unit] - 1)
        self._make_ready(np.array([unit], np.int64), front=True)

    def failed(self, unit: int, error: ErrorInfo) -> list[int]:
        """Mark `unit` failed and everything downstream of it upstream_failed (returned)."""
        return self._stop(unit, error, UnitStatus.FAILED, UnitStatus.UPSTREAM_FAILED)

    def check_failed(self, unit: int, error: ErrorInfo) -> list[int]:
        """A blocking check failed on `unit`: everything downstream is blocked (returned)."""
        return self._stop(unit, error, UnitStatus.CHECK_FAILED, UnitStatus.BLOCKED)

    def _stop(
        self, unit: int, error: ErrorInfo, status: UnitStatus, downstream: UnitStatus
    ) -> list[int]:
        if _IS_FINAL[self.status[unit]]:
            return []
        self._set(unit, status)
        self.errors[unit] = Failure(unit, error, int(self.attempts[unit]))
        held, stack = [], [unit]
        while stack:
            for down in self.plan.downstream(stack.pop()).tolist():
                if not _IS_FINAL[self.status[down]] and self.status[down] != UnitStatus.RUNNING:
                    self._set(down, downstream)
                    self.cause[down] = unit
                    held.append(down)
                    stack.append(down)
        self._check_done()
        return held

    def cancel(self, also: Iterable[int] = ()) -> list[int]:
        """Cancel every unit not yet running or staged, and `also` those (taken, never
        started); returns them."""
        waiting = (UnitStatus.WAITING, UnitStatus.READY, UnitStatus.RETRYING)
        gone = np.flatnonzero(np.isin(self.status, waiting))
        if also:
            gone = np.union1d(gone, np.fromiter(also, np.int64))
        self._move(gone, UnitStatus.CANCELLED)
        self._check_done()
        return gone.tolist()

    def _check_done(self) -> None:
        if self.finished is None and self.done:
            self.finished = time.time()


def depths(pipeline: Pipeline) -> dict[str, int]:
    """Each asset's depth in the graph (0 for one with no inputs), which orders a run's units."""
    depth: dict[str, int] = {}
    for name in pipeline.assets:
        depth[name] = 1 + max(
            (depth[e.up] for e in pipeline.upstream(name) if e.up != name), default=-1
        )
    return depth
