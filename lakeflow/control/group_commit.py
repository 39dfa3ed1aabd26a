"""A run's group commits: units its tasks have staged wait a moment for more units of the same
table, then one Delta commit publishes them together (`lake.publish`). A table with table-level checks
is audited on the version the commit would make, before it is made (`table_audit`): the units the
checks reject are check_failed and never committed, the others are published.

A commit that fails on the lake's answer (a `LakeflowError`) fails its units per their retry
policy; one that fails on anything else is an error of ours, so the table's state is reloaded
from the lake before the units retry.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from lakeflow.define.checks import CheckResult
from lakeflow.errors import ErrorInfo, LakeError, LakeflowError, Superseded
from lakeflow.execute.table_audit import Candidate, TableAudit, Verdict
from lakeflow.execute.worker import WHOLE_TABLE_FILES, UnitRecord
from lakeflow.lake import Lake
from lakeflow.lake.events import Event
from lakeflow.lake.log import Commit, TableState
from lakeflow.lake.publish import UnitOutput, publish, rollback, split_by_schema
from lakeflow.lake.staging import quarantine_files
from lakeflow.plan.scheduler import UnitStatus

if TYPE_CHECKING:
    from lakeflow.control.runner import Run

__all__ = ["GroupCommits"]


class GroupCommits:
    """The staged units of one run, per table, and the commits that publish them."""

    def __init__(self, run: Run, *, linger: float, max_units: int) -> None:
        self.run = run
        self.linger = linger  # seconds staged units may wait for more of their table
        self.max_units = max_units
        self.staged: dict[str, list[tuple[int, UnitRecord]]] = {}
        self.staged_since: dict[str, float] = {}
        self.committing: set[str] = set()

    def stage(self, asset: str, unit: int, record: UnitRecord) -> None:
        self.staged.setdefault(asset, []).append((unit, record))
        self.staged_since.setdefault(asset, time.monotonic())

    def waiting(self) -> bool:
        """Are staged units waiting for their commit?"""
        return any(self.staged.values())

    def publish_ready(self) -> None:
        """Start a commit for each table whose staged units should wait no longer."""
        now = time.monotonic()
        run = self.run
        for asset, items in self.staged.items():
            if not items or asset in self.committing:
                continue
            lingering = now - self.staged_since.get(asset, now) < self.linger
            if run.running.get(asset, 0) and lingering and len(items) < self.max_units:
                continue  # more units of this table are on their way: let them join the commit
            batch = items[: self.max_units]
            del items[: len(batch)]
            self.staged_since.pop(asset, None)
            if items:
                self.staged_since[asset] = now
            self.committing.add(asset)
            run.host.spawn(self._commit(asset, batch))

    async def _commit(self, asset: str, batch: list[tuple[int, UnitRecord]]) -> None:
        run = self.run
        host, state = run.host, run.state
        definition = run.pipeline[asset]
        units = [u for u, _ in batch]
        try:
            async with host.table_lock(asset):
                table = host.tables[asset]
                outputs = [
                    UnitOutput(
                        r.key,
                        r.files,
                        run.inputs.get(u, {}),
                        r.schema_id,
                        r.schema,
                        delete=run.plan.is_delete(u),
                    )
                    for u, r in batch
                ]
                fits, misfits = split_by_schema(table, outputs)
                by_key = {r.key: u for u, r in batch}
                for output, error in misfits:
                    run.fail(by_key[output.key], ErrorInfo.from_exception(error))
                if not fits:
                    return
                fence = host.fence
                audit: Verdict | None = None
                after = False  # audit the version once committed (files not readable alone)
                if definition.table_checks:
                    after = not await asyncio.to_thread(_files_readable, host.lake, table)
                    if not after:
                        audit = await self._audit_group(asset, table, batch, fits)
                        fits = [o for o in fits if o.key not in audit.rejected]
                        if not fits:
                            return

                def fenced_publish() -> Commit:
                    fence.check()  # on this thread, right before the commit
                    return publish(
                        host.lake, table, asset=asset, column=definition.partitions.column,
                        run_id=run.id, code_version=definition.code_version, units=fits,
                        epoch=fence.epoch,
                    )  # fmt: skip

                commit = await asyncio.to_thread(fenced_publish)
                published = [by_key[o.key] for o in fits]
                state.published(published, commit.version, verify=after)
                for unit in published:
                    run.inputs.pop(unit, None)
                    if run.plan.is_delete(unit):
                        run.event(unit, "unit_deleted", version=commit.version, attempt=int(state.attempts[unit]),
                                  message="deleted upstream")  # fmt: skip
                    else:
                        run.event(unit, "unit_published", version=commit.version, attempt=int(state.attempts[unit]),
                                  rows=int(state.rows[unit]), bytes=int(state.bytes[unit]), seconds=float(state.seconds[unit]))  # fmt: skip
                    if not after:
                        run.forget_key(unit)
                host.committed(asset, commit)
                if audit is not None:
                    run.check_events(None, audit.results, asset=asset, version=commit.version)
                if after:
                    # still under the table's lock: nothing commits between publish and audit
                    await self._audit_table(asset, table, commit, published)
                else:
                    host.released(asset, commit.version, True)
        except Superseded as error:  # another controller runs the lake: this one stops
            host.superseded(error)
        except LakeflowError as error:
            self._commit_failed(
                units, ErrorInfo.from_exception(error), retryable=isinstance(error, LakeError)
            )
        except Exception as error:  # not the lake's answer but our own doing: trust the lake
            await self._reload_table(asset, error)
            self._commit_failed(units, ErrorInfo.from_exception(error), retryable=True)
        finally:
            self.committing.discard(asset)
            run.host.wake_all()  # runs waiting for these partitions (`Run._claim`) look again

    async def _reload_table(self, asset: str, cause: BaseException) -> None:
        host = self.run.host
        try:
            async with host.table_lock(asset):
                table = host.tables[asset]
                await asyncio.to_thread(table.reload, host.lake)
        except Exception:  # the lake is out of reach too: the retry's commit meets it again
            return
        message = f"after {type(cause).__name__}: {cause}"[:500]
        host.events.emit(
            Event(
                self.run.id, "table_reloaded", asset=asset, version=table.version, message=message
            )
        )

    def _commit_failed(self, units: list[int], info: ErrorInfo, *, retryable: bool) -> None:
        run = self.run
        for unit in units:
            if run.state.status[unit] == UnitStatus.STAGED:
                run.failure(unit, info, retryable=retryable)

    async def _audit_group(
        self,
        asset: str,
        table: TableState,
        batch: list[tuple[int, UnitRecord]],
        fits: list[UnitOutput],
    ) -> Verdict:
        """Table checks on the version committing `fits` would make, before the commit (under
        the table's lock: nothing commits in between). The units the checks reject are
        check_failed and their staged files quarantined; the verdict says which."""
        run = self.run
        host = run.host
        await asyncio.to_thread(table.refresh, host.lake)
        with table.lock:
            keys = table.keys()
            base = table.file_list(keys)
            spec = TableAudit(
                asset, table.url, table.column, table.version, table.schema,
                tuple(Candidate(o.key, tuple(f.path for f in o.files)) for o in fits),
                base=() if len(base) > WHOLE_TABLE_FILES else tuple((k, p) for k, p, _ in base),
                whole_table=len(base) > WHOLE_TABLE_FILES,
            )  # fmt: skip
        verdict = await host.executor.audit_group(host.lake, run.handle, run.pipeline, spec)
        records = {r.key: (u, r) for u, r in batch}
        for key, results in verdict.rejected.items():
            unit, record = records[key]
            folder = None
            if record.files:
                paths = [f.path for f in record.files]
                folder = await asyncio.to_thread(
                    quarantine_files, host.lake, table.url, paths, asset, key, run.id
                )
            note = " (table check on the version this commit would make; nothing committed)"
            if verdict.reason:
                note = f" ({verdict.reason}: the {len(fits)} units of its commit failed together)"
            elif key in verdict.unresolved:
                note = f" (not told apart from {len(verdict.unresolved) - 1} other units within {verdict.audits} audits; nothing committed)"
            run.check_events(unit, results)
            run.check_failed(unit, results, quarantine=folder, note=note)
        return verdict

    async def _audit_table(
        self, asset: str, table: TableState, commit: Commit, units: list[int]
    ) -> None:
        """Table checks on the version just published, for tables whose files cannot be read
        on their own (see `_files_readable`); a blocking failure holds the consumers of every
        unit of the commit, and with on_fail="rollback" restores the previous version."""
        run = self.run
        host = run.host
        try:
            results = await host.executor.audit_table(
                host.lake, run.handle, run.pipeline, asset, commit.version
            )
        except Exception as error:
            message = f"table checks could not run: {type(error).__name__}: {error}"
            results = [
                CheckResult("table checks", "error", "error", message=message, scope="table")
            ]
        run.check_events(None, results, asset=asset, version=commit.version)
        if not any(r.blocking for r in results):
            run.state.verified(units)
            host.released(asset, commit.version, True)
            return
        host.released(asset, commit.version, False)
        note = f" (published at version {commit.version}; consumers held)"
        if run.pipeline[asset].on_fail == "rollback":
            try:
                undo = await asyncio.to_thread(rollback, host.lake, table, commit, run_id=run.id)
                note = f" (version {commit.version} rolled back by version {undo.version})"
                host.events.emit(Event(run.id, "table_rolled_back", asset=asset, version=undo.version,
                                       message=f"undid version {commit.version}"))  # fmt: skip
            except LakeflowError as error:
                note = f" (rollback failed: {error.message}; consumers held)"
        for unit in units:
            run.check_failed(unit, results, note=note)


def _files_readable(lake: Lake, table: TableState) -> bool:
    """Can the table be read from its Parquet files alone? Not once it uses reader features
    (column mapping, deletion vectors: protocol reader version 2 or more), which only a Delta
    reader applies; such a table's checks run on the committed version instead."""
    if not table.exists:
        return True
    return table.current_handle(lake).protocol().min_reader_version < 2
