"""A run's group commits: units its tasks have staged wait a moment for more units of the same
table, then one Delta commit publishes them together (`lake.publish`). A table with table-level checks
is audited on the version the commit would make, before it is made (`table_audit`): the units the
checks reject are check_failed and never committed, the others are published.

The interface to the run is narrow: `GroupCommits` gets the lake, the open tables and their
locks, the executor, the fence and an event emitter when it is built, the units to commit (with
the input versions they read) per call, and yields `CommitOutcome` values that the `Run` applies
(events, state transitions, the release of downstream units). It never sees the run.

A commit that fails on the lake's answer (a `LakeflowError`) fails its units per their retry
policy; one that fails on anything else is an error of ours, so the table's state is reloaded
from the lake before the units retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lakeflow.define.checks import CheckResult
from lakeflow.define.graph import Pipeline
from lakeflow.errors import ErrorInfo, LakeError, LakeflowError, Superseded
from lakeflow.execute.executors import Executor
from lakeflow.execute.table_audit import Candidate, TableAudit, Verdict
from lakeflow.execute.worker import WHOLE_TABLE_FILES, UnitRecord
from lakeflow.lake import Lake
from lakeflow.lake.compaction import Compacted, compact, due
from lakeflow.lake.events import Event
from lakeflow.lake.fence import Fence
from lakeflow.lake.log import Commit, TableState
from lakeflow.lake.publish import UnitOutput, publish, rollback, split_by_schema
from lakeflow.lake.staging import quarantine_files

__all__ = ["CommitOutcome", "GroupCommits", "Rejected", "Staged"]

LONGEST_LINGER = 300.0  # seconds a dear table's staged units of a backfill wait at most
RUN_LONGEST_LINGER = 5.0  # ... and those of any other run (triggered, materialize)


@dataclass(frozen=True)
class Staged:
    """One staged unit waiting for its table's commit: its record, the input versions it read,
    and whether it deletes its partition (inputs deleted upstream)."""

    unit: int
    record: UnitRecord
    inputs: Mapping[str, int] = field(default_factory=dict)
    delete: bool = False


@dataclass(frozen=True)
class Rejected:
    """A unit the table checks failed: their results, where its files went, why."""

    unit: int
    results: tuple[CheckResult, ...]
    quarantine: str | None = None
    note: str = ""


@dataclass(frozen=True)
class CommitOutcome:
    """What one step of a group commit did, for the run to apply in this order: units whose
    schema does not fit the table fail; rejected units are check_failed; units published at
    `version` (deleted ones among them) are released downstream (`verify`: once their table
    checks on that version pass); `table_results` are the table-level check results of that
    version; `verified` units passed them; `failed` units fail with `error`, retried when
    `retryable` (only those still staged); `held` units were published but their table checks
    on `version` failed (`note` says what became of the version)."""

    asset: str
    version: int | None = None
    misfits: tuple[tuple[int, ErrorInfo], ...] = ()
    rejected: tuple[Rejected, ...] = ()
    published: tuple[int, ...] = ()
    deleted: frozenset[int] = frozenset()
    verify: bool = False
    table_results: tuple[CheckResult, ...] = ()
    verified: tuple[int, ...] = ()
    held: tuple[int, ...] = ()
    note: str = ""
    failed: tuple[int, ...] = ()
    error: ErrorInfo | None = None
    retryable: bool = False


class GroupCommits:
    """The staged units of one run, per table, and the commits that publish them."""

    def __init__(
        self,
        *,
        run_id: str,
        pipeline: Pipeline,
        handle: Any,
        lake: Lake,
        tables: Mapping[str, TableState],
        table_lock: Callable[[str], asyncio.Lock],
        executor: Executor,
        fence: Fence,
        emit: Callable[[Event], int],
        committed: Callable[[str, Commit], None],
        released: Callable[[str, int, bool], None],
        superseded: Callable[[Superseded], None],
        linger: float,
        max_units: int,
        share: float,
        longest: float = LONGEST_LINGER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.handle = handle  # the executor's handle of the run's pipeline
        self.lake = lake
        self.tables = tables
        self.table_lock = table_lock
        self.executor = executor
        self.fence = fence
        self.emit = emit
        self.committed = committed  # told of each commit (the triggers' table followers)
        self.released = released  # told when a commit is final: checks passed or failed
        self.superseded = superseded  # another controller runs the lake
        self.linger = linger  # seconds staged units may wait for more of their table
        self.max_units = max_units
        self.share = share  # of a table's time its commits may take (see `linger_of`)
        self.longest = longest  # the longest linger a dear table gets
        self.clock = clock
        self.cost: dict[str, float] = {}  # table -> seconds its last commit took
        self.staged: dict[str, list[Staged]] = {}
        self.staged_since: dict[str, float] = {}
        self.committing: set[str] = set()

    def stage(self, asset: str, item: Staged) -> None:
        self.staged.setdefault(asset, []).append(item)
        self.staged_since.setdefault(asset, self.clock())

    def waiting(self) -> bool:
        """Are staged units waiting for their commit?"""
        return any(self.staged.values())

    def linger_of(self, asset: str) -> float:
        """How long staged units of `asset` may wait for more of their table: `linger`, or
        longer once its last commit took more than `share` of that. A Delta commit costs more
        as its table grows (deltalake rebuilds its snapshot of every file of the table, twice a
        commit), so a table that keeps growing is committed in ever bigger groups: its commits
        stay about `share` of its time, and their cost a unit stays flat from ten thousand
        files to a million, instead of growing with the table. The cost is the commit's own
        (`TableState.commit_seconds`: what grows with the table), not its per-unit work or
        checkpoints, which would feed a bigger group's cost back into a longer linger. Up to
        `longest` (`LONGEST_LINGER` for a backfill, `RUN_LONGEST_LINGER` for other runs, whose
        consumers wait on each commit), which bounds how long a published partition waits to
        show and what a crash of the controller makes run again."""
        return max(self.linger, min(self.cost.get(asset, 0.0) / self.share, self.longest))

    def ready(self, running: Mapping[str, int]) -> list[tuple[str, list[Staged]]]:
        """The batches to commit now: per table whose staged units should wait no longer (none
        of its units in flight, `running`, or they waited `linger_of` it, or they fill a
        commit of `max_units`; a table whose commits are dear is committed whole, when its
        longer linger is over)."""
        now = self.clock()
        out = []
        for asset, items in self.staged.items():
            if not items or asset in self.committing:
                continue
            linger = self.linger_of(asset)
            dear = linger > self.linger  # only its longer linger bounds its commits
            lingering = now - self.staged_since.get(asset, now) < linger
            full = not dear and len(items) >= self.max_units
            if running.get(asset, 0) and lingering and not full:
                continue  # more units of this table are on their way: let them join the commit
            batch = items[:] if dear else items[: self.max_units]
            del items[: len(batch)]
            self.staged_since.pop(asset, None)
            if items:
                self.staged_since[asset] = now
            self.committing.add(asset)
            out.append((asset, batch))
        return out

    async def commit(self, asset: str, batch: list[Staged]) -> AsyncIterator[CommitOutcome]:
        """Commit `batch` (from `ready`): yields the outcome of the publish, then, for a table
        audited on the committed version, the outcome of that audit."""
        definition = self.pipeline[asset]
        units = tuple(s.unit for s in batch)
        misfits: list[tuple[int, ErrorInfo]] = []
        rejected: tuple[Rejected, ...] = ()
        error: BaseException | None = None
        try:
            async with self.table_lock(asset):
                table = self.tables[asset]
                outputs = [
                    UnitOutput(s.record.key, s.record.files, dict(s.inputs), s.record.schema_id,
                               s.record.schema, delete=s.delete)
                    for s in batch
                ]  # fmt: skip
                fits, unfit = split_by_schema(table, outputs)
                by_key = {s.record.key: s for s in batch}
                misfits = [(by_key[o.key].unit, ErrorInfo.from_exception(e)) for o, e in unfit]
                if not fits:
                    yield CommitOutcome(asset, misfits=tuple(misfits))
                    return
                audit: Verdict | None = None
                after = False  # audit the version once committed (files not readable alone)
                if definition.table_checks:
                    after = not await asyncio.to_thread(_files_readable, self.lake, table)
                    if not after:
                        audit, rejected = await self._audit_group(asset, table, batch, fits)
                        fits = [o for o in fits if o.key not in audit.rejected]
                        if not fits:
                            yield CommitOutcome(asset, misfits=tuple(misfits), rejected=rejected)
                            return
                fence = self.fence

                def fenced_publish() -> tuple[Commit, float]:
                    fence.check()  # on this thread, right before the commit
                    began = time.perf_counter()
                    commit = publish(
                        self.lake, table, asset=asset, column=definition.partitions.column,
                        run_id=self.run_id, code_version=definition.code_version, units=fits,
                        epoch=fence.epoch, properties=self.pipeline.table_properties(asset),
                    )  # fmt: skip
                    return commit, time.perf_counter() - began

                commit, seconds = await asyncio.to_thread(fenced_publish)
                self.cost[asset] = table.commit_seconds
                # what a commit costs as the table grows: one event a group commit
                self.emit(Event(self.run_id, "table_committed", asset=asset, version=commit.version,
                                seconds=seconds, detail={"units": len(fits)}))  # fmt: skip
                published = tuple(by_key[o.key].unit for o in fits)
                yield CommitOutcome(
                    asset, commit.version, tuple(misfits), rejected, published,
                    frozenset(by_key[o.key].unit for o in fits if o.delete), verify=after,
                    table_results=tuple(audit.results) if audit is not None else (),
                )  # fmt: skip
                misfits, rejected, units = [], (), ()  # applied: nothing of them to fail
                self.committed(asset, commit)
                keys = [o.key for o in fits]
                if after:
                    # still under the table's lock: nothing commits between publish and audit
                    audited = await self._audit_table(asset, table, commit, published)
                    yield audited
                    keys = [] if audited.held else keys
                else:
                    self.released(asset, commit.version, True)
                await self._compact(asset, table, keys)
        except Superseded as stop:  # another controller runs the lake: this one stops
            self.superseded(stop)
        except LakeflowError as failure:
            error = failure
        except Exception as failure:  # not the lake's answer but our own doing: trust the lake
            await self._reload_table(asset, failure)
            error = failure
        finally:
            self.committing.discard(asset)
        if error is not None or misfits or rejected:
            yield CommitOutcome(
                asset, misfits=tuple(misfits), rejected=rejected,
                failed=units if error is not None else (),
                error=ErrorInfo.from_exception(error) if error is not None else None,
                retryable=isinstance(error, LakeError) or not isinstance(error, LakeflowError),
            )  # fmt: skip

    async def _compact(self, asset: str, table: TableState, keys: list[str]) -> None:
        """Apply the asset's compaction policy to the partitions `keys` just published. It
        changes no rows, so nothing downstream waits for it; one that cannot run now (another
        optimize holds the table, the lake failed) is recorded and the units stay published."""
        policy = self.pipeline.compaction_of(asset)
        if policy is None or not keys:
            return
        try:
            todo = await asyncio.to_thread(
                due, self.lake, table, keys, min_files=policy.min_files,
                target_size=policy.target_size, reorder=bool(policy.zorder),
            )  # fmt: skip
            if not todo:
                return
            fence = self.fence

            def fenced_compact() -> Compacted:
                fence.check()  # a superseded controller rewrites nothing either
                return compact(
                    self.lake, table, keys=todo, min_files=policy.min_files,
                    target_size=policy.target_size, zorder=policy.zorder, wait=0.0,
                )  # fmt: skip

            done = await asyncio.to_thread(fenced_compact)
        except Superseded:
            raise
        except LakeflowError as error:
            self.emit(Event(self.run_id, "optimize_failed", asset=asset, message=error.message))
            return
        self.emit(Event(
            self.run_id, "table_optimized", asset=asset, version=done.version_after,
            message=f"{done.partitions} partitions: {done.files_before} -> {done.files_after} files",
        ))  # fmt: skip

    async def _reload_table(self, asset: str, cause: BaseException) -> None:
        try:
            async with self.table_lock(asset):
                table = self.tables[asset]
                await asyncio.to_thread(table.reload, self.lake)
        except Exception:  # the lake is out of reach too: the retry's commit meets it again
            return
        message = f"after {type(cause).__name__}: {cause}"[:500]
        self.emit(
            Event(
                self.run_id, "table_reloaded", asset=asset, version=table.version, message=message
            )
        )

    async def _audit_group(
        self, asset: str, table: TableState, batch: list[Staged], fits: list[UnitOutput]
    ) -> tuple[Verdict, tuple[Rejected, ...]]:
        """Table checks on the version committing `fits` would make, before the commit (under
        the table's lock: nothing commits in between). The staged files of the units the checks
        reject are quarantined; returns the verdict and those units."""
        await asyncio.to_thread(table.refresh, self.lake)
        with table.lock:
            keys = table.keys()
            base = table.file_list(keys)
            spec = TableAudit(
                asset, table.url, table.column, table.version, table.schema,
                tuple(Candidate(o.key, tuple(f.path for f in o.files)) for o in fits),
                base=() if len(base) > WHOLE_TABLE_FILES else tuple((k, p) for k, p, _ in base),
                whole_table=len(base) > WHOLE_TABLE_FILES,
            )  # fmt: skip
        verdict = await self.executor.audit_group(self.lake, self.handle, self.pipeline, spec)
        records = {s.record.key: s for s in batch}
        rejected = []
        for key, results in verdict.rejected.items():
            staged = records[key]
            folder = None
            if staged.record.files:
                paths = [f.path for f in staged.record.files]
                folder = await asyncio.to_thread(
                    quarantine_files, self.lake, table.url, paths, asset, key, self.run_id
                )
            note = " (table check on the version this commit would make; nothing committed)"
            if verdict.reason:
                note = f" ({verdict.reason}: the {len(fits)} units of its commit failed together)"
            elif key in verdict.unresolved:
                note = f" (not told apart from {len(verdict.unresolved) - 1} other units within {verdict.audits} audits; nothing committed)"
            rejected.append(Rejected(staged.unit, tuple(results), quarantine=folder, note=note))
        return verdict, tuple(rejected)

    async def _audit_table(
        self, asset: str, table: TableState, commit: Commit, units: tuple[int, ...]
    ) -> CommitOutcome:
        """Table checks on the version just published, for tables whose files cannot be read
        on their own (see `_files_readable`); a blocking failure holds the consumers of every
        unit of the commit, and with on_fail="rollback" restores the previous version."""
        try:
            results = await self.executor.audit_table(
                self.lake, self.handle, self.pipeline, asset, commit.version
            )
        except Exception as error:
            message = f"table checks could not run: {type(error).__name__}: {error}"
            results = [
                CheckResult("table checks", "error", "error", message=message, scope="table")
            ]
        results = tuple(results)
        if not any(r.blocking for r in results):
            self.released(asset, commit.version, True)
            return CommitOutcome(asset, commit.version, table_results=results, verified=units)
        self.released(asset, commit.version, False)
        note = f" (published at version {commit.version}; consumers held)"
        if self.pipeline[asset].on_fail == "rollback":
            try:
                undo = await asyncio.to_thread(
                    rollback, self.lake, table, commit, run_id=self.run_id
                )
                note = f" (version {commit.version} rolled back by version {undo.version})"
                self.emit(Event(self.run_id, "table_rolled_back", asset=asset, version=undo.version,
                                message=f"undid version {commit.version}"))  # fmt: skip
            except LakeflowError as error:
                note = f" (rollback failed: {error.message}; consumers held)"
        return CommitOutcome(asset, commit.version, table_results=results, held=units, note=note)


def _files_readable(lake: Lake, table: TableState) -> bool:
    """Can the table be read from its Parquet files alone? Not once it uses reader features
    (column mapping, deletion vectors: protocol reader version 2 or more), which only a Delta
    reader applies; such a table's checks run on the committed version instead."""
    if not table.exists:
        return True
    return table.current_handle(lake).protocol().min_reader_version < 2
