"""The state of one run as it executes: which units wait, which are ready, running, staged,
published or failed. Pure bookkeeping over the plan's arrays; the controller feeds it what happens
(records, commits, crashes) and asks it what to dispatch and what to publish.

Ready units are served deepest asset first, so a partition flows through the graph as soon as its
own inputs are published instead of waiting for a whole upstream asset; within an asset,
partitions go oldest-first (or newest-first).
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .errors import ErrorInfo
from .planner import Plan

__all__ = ["RunState", "UnitStatus"]


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
        self.cause: dict[int, int] = {}  # upstream_failed unit -> the failed unit behind it
        depths: dict[str, int] = depth or {}

        # asset positions, deepest first, each with a queue of its ready units
        def deepest_first(j: int) -> tuple[int, int]:
            return (-depths.get(plan.assets[j], j), -j)

        self._asset_order = sorted(range(len(plan.assets)), key=deepest_first)
        self._ready: list[deque[int]] = [deque() for _ in plan.assets]
        self._backoff: list[tuple[float, int]] = []
        self._counts = {s: 0 for s in UnitStatus}
        self._counts[UnitStatus.WAITING] = size
        self.started = time.time()
        self.finished: float | None = None
        newest = plan.order == "newest"
        initial = np.flatnonzero(self.waits == 0)
        for j in range(len(plan.assets)):
            lo, hi = plan.offsets[j], plan.offsets[j + 1]
            units = initial[(initial >= lo) & (initial < hi)]
            for unit in (units[::-1] if newest else units).tolist():
                self._set(unit, UnitStatus.READY)
                self._ready[j].append(unit)
        self._newest = newest

    # -- counting ------------------------------------------------------------------------------
    def _set(self, unit: int, status: UnitStatus) -> None:
        self._counts[UnitStatus(self.status[unit])] -= 1
        self._counts[status] += 1
        self.status[unit] = status

    def counts(self) -> dict[str, int]:
        return {s.name.lower(): n for s, n in self._counts.items()}

    @property
    def done(self) -> bool:
        return sum(self._counts[s] for s in FINAL) == self.plan.size

    @property
    def in_flight(self) -> int:
        return self._counts[UnitStatus.RUNNING] + self._counts[UnitStatus.STAGED]

    @property
    def succeeded(self) -> bool:
        return self.done and self._counts[UnitStatus.PUBLISHED] == self.plan.size

    # -- dispatch ------------------------------------------------------------------------------
    def ready_count(self) -> int:
        return self._counts[UnitStatus.READY]

    def next_backoff(self) -> float | None:
        """When the earliest unit in backoff becomes ready (epoch seconds), if any."""
        return self._backoff[0][0] if self._backoff else None

    def release_backoffs(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        while self._backoff and self._backoff[0][0] <= now:
            _, unit = heapq.heappop(self._backoff)
            if self.status[unit] == UnitStatus.RETRYING:
                self._make_ready(unit)

    def _make_ready(self, unit: int) -> None:
        self._set(unit, UnitStatus.READY)
        queue = self._ready[self.plan.asset_of(unit)]
        queue.append(unit)

    def take(self, limit: int) -> list[int]:
        """Up to `limit` ready units of one asset (the deepest that has any), now RUNNING."""
        for j in self._asset_order:
            queue = self._ready[j]
            if not queue:
                continue
            batch: list[int] = []
            while queue and len(batch) < limit:
                unit = queue.popleft()
                if self.status[unit] == UnitStatus.READY:
                    batch.append(unit)
                    self._set(unit, UnitStatus.RUNNING)
                    self.attempts[unit] += 1
            if batch:
                return batch
        return []

    # -- outcomes ------------------------------------------------------------------------------
    def staged(self, unit: int, *, rows: int, size: int, seconds: float) -> None:
        self._set(unit, UnitStatus.STAGED)
        self.rows[unit], self.bytes[unit], self.seconds[unit] = rows, size, seconds

    def published(self, units: Iterable[int], version: int, *, verify: bool = False) -> None:
        """Units committed at `version`. With `verify`, their consumers wait for `verified`."""
        for unit in units:
            if self.status[unit] in FINAL:
                continue
            self.version[unit] = version
            if verify:
                self._set(unit, UnitStatus.VERIFYING)
            else:
                self._release(unit)
        self._check_done()

    def verified(self, units: Iterable[int]) -> None:
        """The table checks of these published units passed: their consumers may run."""
        for unit in units:
            if self.status[unit] == UnitStatus.VERIFYING:
                self._release(unit)
        self._check_done()

    def _release(self, unit: int) -> None:
        self._set(unit, UnitStatus.PUBLISHED)
        for down in self.plan.downstream(unit).tolist():
            self.waits[down] -= 1
            if self.waits[down] == 0 and self.status[down] == UnitStatus.WAITING:
                self._make_ready(down)

    def retry(self, unit: int, delay: float) -> None:
        self._set(unit, UnitStatus.RETRYING)
        heapq.heappush(self._backoff, (time.time() + delay, unit))

    def requeue(self, unit: int) -> None:
        """Put a unit back without counting the attempt (its task was lost, not failed)."""
        self.attempts[unit] = max(0, self.attempts[unit] - 1)
        self._make_ready(unit)

    def failed(self, unit: int, error: ErrorInfo) -> list[int]:
        """Mark `unit` failed and everything downstream of it upstream_failed (returned)."""
        return self._stop(unit, error, UnitStatus.FAILED, UnitStatus.UPSTREAM_FAILED)

    def check_failed(self, unit: int, error: ErrorInfo) -> list[int]:
        """A blocking check failed on `unit`: everything downstream is blocked (returned)."""
        return self._stop(unit, error, UnitStatus.CHECK_FAILED, UnitStatus.BLOCKED)

    def _stop(
        self, unit: int, error: ErrorInfo, status: UnitStatus, downstream: UnitStatus
    ) -> list[int]:
        if self.status[unit] in FINAL:
            return []
        self._set(unit, status)
        self.errors[unit] = Failure(unit, error, int(self.attempts[unit]))
        held, stack = [], [unit]
        while stack:
            for down in self.plan.downstream(stack.pop()).tolist():
                if self.status[down] not in FINAL and self.status[down] != UnitStatus.RUNNING:
                    self._set(down, downstream)
                    self.cause[down] = unit
                    held.append(down)
                    stack.append(down)
        self._check_done()
        return held

    def cancel(self) -> list[int]:
        """Cancel every unit not yet running or staged; returns them."""
        gone = []
        for unit in np.flatnonzero(
            np.isin(self.status, (UnitStatus.WAITING, UnitStatus.READY, UnitStatus.RETRYING))
        ).tolist():
            self._set(unit, UnitStatus.CANCELLED)
            gone.append(unit)
        self._check_done()
        return gone

    def _check_done(self) -> None:
        if self.finished is None and self.done:
            self.finished = time.time()
