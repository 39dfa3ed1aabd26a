"""Publish: many staged units of one table become visible in one atomic Delta commit.

The commit replaces exactly the units' partitions (overwrite with a partition filter), carries
lakeflow's metadata (run, code version, each unit's input versions) and an application
transaction `(lakeflow, n)`. A delete unit (its inputs were deleted upstream) adds no files: the
overwrite removes its partition's files, and the metadata lists it under `deleted`. If the commit
fails or its outcome is unknown, the table's state is brought up to date and the transaction
number tells whether it landed (then the log says which version holds it), so a retry never
applies a commit twice. The table's schema is never changed by a publish: outputs that do not
match it are refused.

A commit lands on the version it was computed from or not at all (no rebase by deltalake): its
overwrite removes the files its partitions held at that version, and deltalake 1.6 lets such a
commit rebase over a concurrent OPTIMIZE without a conflict, which would remove the files the
compaction had already replaced and leave its new file beside the unit's: rows doubled. Taken
strictly, any commit that lands first (an optimize, another writer) sends the publish back to
read the table again and retry.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, create_table_with_add_actions

from lakeflow.errors import LakeError, SchemaError
from lakeflow.lake import Lake
from lakeflow.lake.log import (
    APP_ID,
    METADATA_KEY,
    METADATA_VERSION,
    NO_CLEANUP,
    Commit,
    TableState,
    commit_path,
    parse_commit,
)
from lakeflow.lake.staging import StagedFile, partition_values, schema_id

__all__ = ["UnitOutput", "publish", "rollback"]

_COMMIT_RETRIES = 8


@dataclass(frozen=True, slots=True)
class UnitOutput:
    """One unit ready to publish: its partition, staged files, inputs read and output schema."""

    key: str
    files: tuple[StagedFile, ...]
    inputs: Mapping[str, int]
    schema_id: str  # fingerprint of the output's schema (staging.schema_id)
    schema: pa.Schema | None = None  # the schema itself, needed to create the table
    delete: bool = False  # remove the partition's data, add none (no files, any schema)


def table_schema(output: pa.Schema, column: str | None) -> pa.Schema:
    schema = pa.schema([f for f in output if f.name != column])
    return schema.append(pa.field(column, pa.string())) if column else schema


def _metadata(
    run_id: str, asset: str, code_version: str, units: Sequence[UnitOutput], epoch: int | None
) -> dict:
    groups: dict[tuple, list[str]] = {}
    for unit in units:
        groups.setdefault(tuple(sorted(unit.inputs.items())), []).append(unit.key)
    meta = {
        "v": METADATA_VERSION,
        "run": run_id,
        "asset": asset,
        "code": code_version,
        "groups": [{"in": dict(inputs), "keys": keys} for inputs, keys in groups.items()],
    }
    deleted = sorted(u.key for u in units if u.delete)
    if deleted:  # recorded in `groups` too: the input versions they were deleted against
        meta["deleted"] = deleted
    if not any(u.files for u in units):  # nothing added to know the commit by: a unique id
        meta["commit"] = uuid.uuid4().hex
    if epoch is not None:
        meta["epoch"] = epoch  # the controller that wrote it (lake.fence)
    return {METADATA_KEY: meta}


def _verify_files(lake: Lake, url: str, units: Sequence[UnitOutput]) -> None:
    paths = [lake.path(lake.uri(url, f.path)) for u in units for f in u.files]
    try:
        infos = lake.filesystem().get_file_info(paths)
    except OSError as error:
        raise lake.unreachable(error) from error
    missing = [
        info.path
        for info in infos
        if info.size is None or info.size < 0 or info.type.name == "NotFound"
    ]
    if missing:
        raise LakeError(f"staged files are missing, refusing to commit them: {missing[:3]}")


def _actions(column: str | None, units: Sequence[UnitOutput]) -> list[AddAction]:
    return [
        AddAction(
            f.path, f.size, partition_values(column, u.key), f.modification_time, True, f.stats
        )
        for u in units
        for f in u.files
    ]


def split_by_schema(
    state: TableState, units: Sequence[UnitOutput]
) -> tuple[list[UnitOutput], list[tuple[UnitOutput, SchemaError]]]:
    """Units whose output fits the table (or the first output, for a new table) and the rest."""
    expected = schema_id(state.schema, state.column) if state.schema is not None else None
    fits, misfits = [], []
    for unit in units:
        if unit.delete:  # writes no data: fits any table
            fits.append(unit)
            continue
        if expected is None:
            expected = unit.schema_id
        if unit.schema_id == expected:
            fits.append(unit)
        else:
            gap = sorted(set(unit.schema_id.split(";")) ^ set(expected.split(";")))
            message = f"partition {unit.key}: output schema no longer matches the table: {gap}"
            misfits.append((unit, SchemaError(message)))
    return fits, misfits


def publish(
    lake: Lake,
    state: TableState,
    *,
    asset: str,
    column: str | None,
    run_id: str,
    code_version: str,
    units: Sequence[UnitOutput],
    epoch: int | None = None,
    properties: Mapping[str, str] | None = None,
) -> Commit:
    """Commit `units` to the table in one version; returns that commit. `state` moves forward,
    and the table is checkpointed when due (`TableState.checkpoint`).

    Units must all fit the table's schema (see `split_by_schema`). `epoch`: the committing
    controller's (recorded in the commit's metadata). `properties`: Delta table properties a
    table this commit creates starts with (checkpoint interval, log retention).
    """
    commit = _publish(lake, state, asset=asset, column=column, run_id=run_id,
                      code_version=code_version, units=units, epoch=epoch,
                      properties=properties)  # fmt: skip
    state.checkpoint(lake)
    return commit


def _publish(
    lake: Lake,
    state: TableState,
    *,
    asset: str,
    column: str | None,
    run_id: str,
    code_version: str,
    units: Sequence[UnitOutput],
    epoch: int | None,
    properties: Mapping[str, str] | None,
) -> Commit:
    if not units:
        raise ValueError("nothing to publish")
    _verify_files(lake, state.url, units)
    actions = _actions(column, units)
    metadata = _metadata(run_id, asset, code_version, units, epoch)
    hooks = NO_CLEANUP  # cleaned up by `TableState.checkpoint`, behind lakeflow's checkpoint
    if not state.exists:
        created = _create(lake, state, column, units, actions, metadata, hooks, properties)
        if created is not None:
            return created
    keys = sorted({u.key for u in units})
    with state.lock:
        marker = actions[0].path if actions else metadata[METADATA_KEY]["commit"]
        ours = _Attempt(state.version, state.txn_version + 1, marker)
    for attempt in range(_COMMIT_RETRIES):
        handle, replaced = _replaced(lake, state, keys)
        if state.txn_version >= ours.sequence:  # another writer of ours took the number
            ours = _Attempt(ours.base, state.txn_version + 1, ours.marker)
        strict = CommitProperties(
            custom_metadata=metadata,
            app_transactions=[Transaction(APP_ID, ours.sequence)],
            max_commit_retries=0,  # on the version `replaced` was read at, or not at all
        )
        assert state.schema is not None
        try:
            began = time.perf_counter()
            _commit_once(handle, actions, state.schema, column, replaced, strict, hooks)
            state.commit_seconds = time.perf_counter() - began
        except CommitFailedError:
            landed = _landed(lake, state, ours)
            if landed is not None:
                return landed
            time.sleep(min(0.05 * 2**attempt, 1.0))
            continue
        except OSError as error:
            landed = _landed(lake, state, ours)
            if landed is not None:
                return landed
            raise lake.unreachable(error) from error
        except Exception as error:
            landed = _landed(lake, state, ours)
            if landed is not None:
                return landed
            raise LakeError(f"commit to {asset} failed: {str(error).splitlines()[0]}") from error
        landed = _landed(lake, state, ours)
        if landed is None:
            raise LakeError(
                f"commit to {asset} reported success but its transaction is not in the log"
            )
        return landed
    raise LakeError(
        f"commit to {asset} kept conflicting with other writers ({_COMMIT_RETRIES} tries)"
    )


def _replaced(lake: Lake, state: TableState, keys: list[str]) -> tuple[DeltaTable, list[str]]:
    """The table's handle and which of `keys` hold files now, both at the newest version.

    Only those partitions go into the commit's overwrite filter: deltalake tests every file of
    the table against every key of an `in` filter, so naming all 5,000 keys of a group commit
    cost seconds a commit on a 100k-file table, while a backfill's new partitions hold nothing
    to replace. Should the handle and `state` not meet at one version (another writer keeps
    committing), every key is named. A commit that only adds is an append; like every publish
    it lands only on the version it was read at, so another writer adding to the same new
    partition first sends it back to read again (and then replace that partition)."""
    for _ in range(3):
        try:
            state.refresh(lake, check_gap=True)  # a state behind the log's cleanup catches up
        except OSError as error:
            raise lake.unreachable(error) from error
        handle = state.current_handle(lake)
        if handle.version() == state.version:
            with state.lock:
                return handle, [k for k in keys if state.files.get(k)]
    return handle, keys


def _commit_once(handle: DeltaTable, actions, schema, column, replaced, properties, hooks) -> None:
    """One commit attempt: add `actions`, replacing the partitions `replaced` (or the whole
    unpartitioned table)."""
    if column and not replaced:
        mode, filters = "append", None
    else:
        mode, filters = "overwrite", [(column, "in", replaced)] if column else None
    handle.create_write_transaction(
        actions,
        mode=mode,
        schema=schema,
        partition_by=[column] if column else None,
        partition_filters=filters,
        commit_properties=properties,
        post_commithook_properties=hooks,
    )


@dataclass(frozen=True, slots=True)
class _Attempt:
    """How a publish recognizes its own commit: the table version it started from, the
    application transaction number its commit carries and one staged file it adds (or, for a
    commit that adds nothing, the unique id in its metadata)."""

    base: int
    sequence: int
    marker: str


def _landed(lake: Lake, state: TableState, ours: _Attempt) -> Commit | None:
    """Move `state` to the table's newest version; our commit, if it landed.

    The transaction number answers "did it land" (a table's `txn` for lakeflow only grows);
    the commit itself is then found in the log after `base`, by its number and one of its
    files. It is read from the log rather than taken from what this refresh applied: a
    concurrent refresh of the same state (a plan, another publish) may have applied it."""
    try:
        state.refresh(lake, check_gap=True)
    except OSError as error:
        raise lake.unreachable(error) from error
    with state.lock:
        newest, txn = state.version, state.txn_version
    if txn < ours.sequence:
        return None
    for version in range(ours.base + 1, newest + 1):
        raw = lake.read_bytes(commit_path(state.url, version))
        if raw is None:  # cleaned up already: only very old commits are
            continue
        commit = parse_commit(raw, version, state.column)
        if commit.txn.get(APP_ID) != ours.sequence:
            continue
        if any(path == ours.marker for files in commit.added.values() for path, _ in files):
            return commit
        if commit.metadata and commit.metadata.get("commit") == ours.marker:  # adds nothing
            return commit
    return None


def _create(lake, state, column, units, actions, metadata, hooks, properties) -> Commit | None:
    """Create the table with the units' data as version 0; None if someone else created it first."""
    if units[0].schema is None:  # dispatched while the table existed; it is gone now
        raise LakeError(f"table {state.url} disappeared while its units ran; they will run again")
    schema = table_schema(units[0].schema, column)
    from deltalake import Schema as DeltaSchema

    try:
        create_table_with_add_actions(
            state.url,
            DeltaSchema.from_arrow(schema),
            actions,
            mode="error",
            partition_by=[column] if column else None,
            configuration=dict(properties) if properties else None,
            storage_options=lake.delta_options(),
            commit_properties=CommitProperties(
                custom_metadata=metadata, app_transactions=[Transaction(APP_ID, 1)]
            ),
            post_commithook_properties=hooks,
        )
    except Exception as error:
        if "exist" not in str(error).lower():
            if isinstance(error, OSError):
                raise lake.unreachable(error) from error
            raise LakeError(
                f"creating table {state.url} failed: {str(error).splitlines()[0]}"
            ) from error
    return _landed(lake, state, _Attempt(-1, 1, actions[0].path))


def rollback(lake: Lake, state: TableState, commit: Commit, *, run_id: str) -> Commit:
    """Undo `commit` (the table's newest version) with a new commit restoring the version before
    it; the partitions it touches are no longer lakeflow's, so they count as stale afterwards."""
    handle = state.current_handle(lake)
    handle.update_incremental()
    if handle.version() != commit.version:
        raise LakeError(
            f"cannot roll back {state.url}: it moved on to version {handle.version()} since {commit.version}"
        )
    metadata = {
        METADATA_KEY: {
            "v": METADATA_VERSION,
            "run": run_id,
            "rollback_of": commit.version,
            "groups": [],
        }
    }
    properties = CommitProperties(custom_metadata=metadata)
    try:
        if commit.version == 0:
            handle.delete(commit_properties=properties)  # the commit created the table: empty it
        else:
            handle.restore(commit.version - 1, commit_properties=properties)
    except OSError as error:
        raise lake.unreachable(error) from error
    commits = state.refresh(lake)
    if not commits:
        raise LakeError(f"rollback of {state.url} left no commit in the log")
    return commits[-1]
