"""Compaction and z-order of a table's partitions: deltalake's OPTIMIZE, one table at a time.

An optimize commit rewrites files without changing rows (deltalake marks every add and remove
`dataChange: false`), so lakeflow reads it as touching nothing (`log.Commit.data_change`): the
partitions keep the run, code version and inputs they were published with.

An optimize and a publish racing on one table both end correct. A publish lands only on the
version it read (`publish`), so an optimize that lands first sends it back to read again; an
optimize whose files a publish replaced meanwhile fails on deltalake's conflict check (a
concurrent commit removed files it read) and is tried again on the new version. What deltalake
1.6 does not catch is two optimizes of the same files at once: both land, and the rows are
doubled. So lakeflow's optimizers of one table take turns, through a `Lease` in the lake.

>>> compact(lake, state, keys=["2024-01-01"], min_files=2)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError

from lakeflow.errors import LakeError, RequestError
from lakeflow.lake import Lake
from lakeflow.lake.log import NO_CLEANUP, TableState, commit_path

__all__ = ["DEFAULT_TARGET_SIZE", "Compacted", "Lease", "check_zorder", "compact", "due"]

DEFAULT_TARGET_SIZE = 100 * 2**20  # deltalake's, when the table sets no delta.targetFileSize
LEASES = "_lakeflow/leases"
LEASE_KEY = "lakeflow_lease"  # commitInfo key of a lease claim
OPTIMIZE_KEY = "lakeflow_optimize"  # commitInfo key of lakeflow's optimize commits: who ran it
LEASE_TTL = 900.0  # seconds a claim lasts unless renewed (a holder that died frees it then)
BATCH_KEYS = 64  # partitions one optimize commit rewrites at most
BATCH_BYTES = 2**30  # and bytes of files, so that a commit comes well within the lease's time
TRIES = 5  # optimize attempts of one batch while commits of others keep landing first
_LEASE_SCHEMA = pa.schema([("holder", pa.string())])


class Lease:
    """An exclusive claim on a name in the lake, so that one holder at a time does the `work` it
    names, with an expiry; kept in the log of a small Delta table (`_lakeflow/leases/<name>`,
    which never holds a file).

    A claim is a commit that must land on the version it read, so when two claim at once the
    lake's atomic put-if-absent of the log entry picks one; the newest claim that has not
    expired is the holder's. A holder that dies leaves a claim that expires after `ttl` seconds;
    a long holder renews it. The clocks of the machines sharing a lake must agree to well within
    `ttl`.
    """

    def __init__(self, lake: Lake, name: str, *, work: str = "", ttl: float = LEASE_TTL) -> None:
        self.lake = lake
        self.name = name
        self.work = work or name  # what the holder does, for messages
        self.url = f"{lake.url}/{LEASES}/{name}"
        self.holder = uuid.uuid4().hex[:12]
        self.ttl = ttl
        self.claimed = 0.0  # when our newest claim was made (time.monotonic())
        self._handle: DeltaTable | None = None

    def acquire(self, wait: float) -> None:
        """Claim it, waiting up to `wait` seconds while another holder has it; `LakeError` if
        it stays held."""
        deadline = time.monotonic() + wait
        while (other := self._claim(time.time() + self.ttl)) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(other["until"]))
                raise LakeError(
                    f"{self.work} is running elsewhere (holder {other['holder']}, "
                    f"claimed until {until})",
                    hint="let it finish; a holder that died frees the claim by then",
                )
            time.sleep(min(0.2, left))

    def renew(self) -> None:
        """Once half the claim's time has passed, claim it for another `ttl` seconds;
        `LakeError` if another holder took it (ours had expired)."""
        if time.monotonic() - self.claimed < self.ttl / 2:
            return
        other = self._claim(time.time() + self.ttl)
        if other is not None:
            raise LakeError(f"{self.work}: the claim expired and {other['holder']} holds it now")

    def release(self) -> None:
        """Give it up. If the lake cannot be reached now, the claim expires on its own."""
        try:
            self._claim(0.0)
        except (LakeError, OSError):
            pass

    def _claim(self, until: float) -> dict[str, Any] | None:
        """Record our claim up to `until` unless another holder's is current; returns that one."""
        while True:
            handle = self._table()
            claim = self._newest(handle)
            if claim and claim.get("holder") != self.holder and claim.get("until", 0) > time.time():
                return claim
            properties = CommitProperties(
                custom_metadata={LEASE_KEY: {"holder": self.holder, "until": until}},
                max_commit_retries=0,  # on the version read, or another claim came first
            )
            try:
                handle.create_write_transaction(
                    [], mode="append", schema=_LEASE_SCHEMA, partition_by=None,
                    commit_properties=properties,
                )  # fmt: skip
                self.claimed = time.monotonic()
                return None
            except CommitFailedError:
                continue  # another claim landed first: read it
            except OSError as error:
                raise self.lake.unreachable(error) from error

    def _table(self) -> DeltaTable:
        """The lease's table at its newest version (created on first use)."""
        try:
            if self._handle is None:
                options = self.lake.delta_options()
                if not DeltaTable.is_deltatable(self.url, storage_options=options):
                    _create_quietly(self.url, options)
                self._handle = DeltaTable(self.url, storage_options=options)
            else:
                self._handle.update_incremental()
        except OSError as error:
            raise self.lake.unreachable(error) from error
        return self._handle

    def _newest(self, handle: DeltaTable) -> dict[str, Any] | None:
        """The claim the handle's version records (None: released, or none yet)."""
        raw = self.lake.read_bytes(commit_path(self.url, handle.version())) or b""
        for line in raw.splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is not None:
                claim = info.get(LEASE_KEY)
                return claim if isinstance(claim, dict) else None
        return None


def _create_quietly(url: str, options: dict[str, str] | None) -> None:
    """Create an empty lease table; another process creating it first is as good."""
    try:
        DeltaTable.create(
            url, DeltaSchema.from_arrow(_LEASE_SCHEMA), mode="ignore", storage_options=options
        )
    except Exception:
        if not DeltaTable.is_deltatable(url, storage_options=options):
            raise


@dataclass(frozen=True)
class Compacted:
    """What one optimize of a table did, over the partitions it looked at."""

    partitions: int  # partitions rewritten
    files_before: int
    files_after: int
    version_before: int
    version_after: int
    retries: int  # batch commits tried again because another commit landed first
    properties: bool  # the table properties were changed


def compact(
    lake: Lake,
    state: TableState,
    *,
    keys: Iterable[str] | None = None,
    min_files: int = 2,
    target_size: int | None = None,
    zorder: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
    wait: float = 30.0,
) -> Compacted:
    """Rewrite those of the partitions `keys` (None: every partition) holding at least
    `min_files` files smaller than the target size into files of about that size (`target_size`,
    else the table's `delta.targetFileSize`, else 100 MiB); with `zorder` columns, every one of
    them holding `min_files` files, whatever their size, sorted along a z-order curve of those
    columns. `properties` (Delta table properties) are set first where the table's differ.

    One commit per batch of partitions; `state` moves forward with them. Waits up to `wait`
    seconds for another optimize of the table to finish (`LakeError` after that). A column to
    z-order by that the table lacks, or its partition column, is a `RequestError` before
    anything is written."""
    _refresh(lake, state)
    if not state.exists:
        raise LakeError(f"table {state.url} does not exist yet")
    check_zorder(state, zorder)
    chosen = sorted(state.files) if keys is None else sorted(set(keys))
    if not _needed(lake, state, chosen, min_files, target_size, zorder, properties or {}):
        with state.lock:
            files = sum(len(state.files.get(k, {})) for k in chosen)
            return Compacted(0, files, files, state.version, state.version, 0, False)
    name = state.url.removeprefix(f"{lake.url}/")
    lease = Lease(lake, f"optimize-{name.replace('/', '__')}", work=f"an optimize of {name}")
    lease.acquire(wait)
    try:
        _refresh(lake, state)  # what the table holds now that no other optimize runs
        before_version = state.version
        with state.lock:
            before = {k: dict(state.files.get(k, {})) for k in chosen}
        changed = _set_properties(lake, state, properties or {})
        target = target_size or _table_target(state.current_handle(lake))
        todo = due(
            lake, state, chosen, min_files=min_files, target_size=target, reorder=bool(zorder)
        )
        retries = 0
        for batch in _batches(state, todo):
            lease.renew()
            retries += _optimize(lake, state, batch, target, zorder, lease.holder, min_files)
        with state.lock:
            after = {k: state.files.get(k, {}) for k in chosen}
            version = state.version
        return Compacted(
            partitions=sum(1 for k in chosen if set(after[k]) != set(before[k])),
            files_before=sum(len(files) for files in before.values()),
            files_after=sum(len(files) for files in after.values()),
            version_before=before_version,
            version_after=version,
            retries=retries,
            properties=changed,
        )
    finally:
        lease.release()


def _needed(
    lake: Lake,
    state: TableState,
    keys: Sequence[str],
    min_files: int,
    target_size: int | None,
    zorder: Sequence[str],
    properties: Mapping[str, str],
) -> bool:
    """Is there anything to rewrite or set? Asked before taking the lease, which costs commits."""
    if _differing(state.current_handle(lake), properties):
        return True
    reorder = bool(zorder)
    return bool(
        due(lake, state, keys, min_files=min_files, target_size=target_size, reorder=reorder)
    )


def check_zorder(state: TableState, zorder: Sequence[str]) -> None:
    """`RequestError` unless the table has every column of `zorder`, none its partition column."""
    names = set(state.schema.names) if state.schema is not None else set()
    for column in zorder:
        if column == state.column:
            raise RequestError(
                f"cannot z-order {state.url} by {column!r}: it is the partition column",
                hint="z-order by columns inside a partition",
            )
        if column not in names:
            raise RequestError(
                f"cannot z-order {state.url} by {column!r}: the table has no such column",
                hint=f"its columns: {', '.join(sorted(names - {state.column}))}",
            )


def _refresh(lake: Lake, state: TableState) -> None:
    try:
        if state.exists:
            state.refresh(lake)
        else:
            state.reload(lake)
    except OSError as error:
        raise lake.unreachable(error) from error


def _table_target(handle: DeltaTable) -> int:
    value = handle.metadata().configuration.get("delta.targetFileSize")
    return int(value) if value and value.isdigit() else DEFAULT_TARGET_SIZE


def _wants(files: Mapping[str, int], min_files: int, target: int, reorder: bool) -> bool:
    """Does a partition holding `files` (path -> size) need rewriting?"""
    count = len(files) if reorder else sum(1 for size in files.values() if size < target)
    return count >= min_files


def due(
    lake: Lake,
    state: TableState,
    keys: Iterable[str],
    *,
    min_files: int,
    target_size: int | None = None,
    reorder: bool = False,
) -> list[str]:
    """Those of the partitions `keys` that `compact` with these settings would rewrite
    (`reorder`: it z-orders); cheap, for a caller deciding whether to optimize at all."""
    target = target_size or _table_target(state.current_handle(lake))
    with state.lock:
        return [k for k in keys if _wants(state.files.get(k, {}), min_files, target, reorder)]


def _batches(state: TableState, keys: Sequence[str]) -> list[list[str]]:
    """`keys` in batches of at most BATCH_KEYS partitions and about BATCH_BYTES of files."""
    out: list[list[str]] = []
    batch: list[str] = []
    size = 0
    with state.lock:
        for key in keys:
            if batch and (len(batch) >= BATCH_KEYS or size >= BATCH_BYTES):
                out.append(batch)
                batch, size = [], 0
            batch.append(key)
            size += sum(state.files.get(key, {}).values())
    return [*out, batch] if batch else out


def _optimize(
    lake: Lake,
    state: TableState,
    batch: list[str],
    target: int,
    zorder: Sequence[str],
    holder: str,
    min_files: int,
) -> int:
    """Rewrite one batch in one commit; returns how many times it had to be tried again. A
    conflict (a publish replaced some of its partitions first) reads the table again and tries
    the partitions that still need it."""
    properties = CommitProperties(custom_metadata={OPTIMIZE_KEY: {"holder": holder}})
    for attempt in range(TRIES):
        if not state.checkpoint(lake, now=True):
            raise LakeError(
                f"optimize of {state.url} did not start: lakeflow could not checkpoint the "
                "table first (deltalake's optimize cleans up the log behind its own checkpoint)",
                hint="see the warning logged above; run it again once the lake accepts writes",
            )
        handle = state.current_handle(lake)
        filters = [(state.column, "in", batch)] if state.column else None
        try:
            if zorder:
                handle.optimize.z_order(
                    list(zorder), partition_filters=filters, target_size=target,
                    commit_properties=properties,
                )  # fmt: skip
            else:
                handle.optimize.compact(
                    partition_filters=filters, target_size=target, commit_properties=properties
                )
            landed = True
        except CommitFailedError:
            landed = False
        except OSError as error:
            raise lake.unreachable(error) from error
        except Exception as error:  # deltalake's own errors
            raise LakeError(
                f"optimize of {state.url} failed: {str(error).splitlines()[0]}"
            ) from error
        _refresh(lake, state)
        if landed:
            state.checkpoint(lake)
            return attempt
        with state.lock:
            batch = [
                k for k in batch if _wants(state.files.get(k, {}), min_files, target, bool(zorder))
            ]
        if not batch:
            return attempt + 1
    raise LakeError(
        f"optimize of {state.url} kept conflicting with other commits ({TRIES} tries); "
        "the partitions it rewrote before stay rewritten",
        hint="run it again when fewer commits land on the table",
    )


def _differing(handle: DeltaTable, properties: Mapping[str, str]) -> dict[str, str]:
    """Those of `properties` the table does not have (or has with another value)."""
    current = handle.metadata().configuration
    return {k: v for k, v in properties.items() if current.get(k) != v}


def _set_properties(lake: Lake, state: TableState, properties: Mapping[str, str]) -> bool:
    """Set the table properties that differ from `properties`; whether any did."""
    handle = state.current_handle(lake)
    changed = _differing(handle, properties)
    if not changed:
        return False
    try:
        handle.alter.set_table_properties(
            changed, raise_if_not_exists=False, post_commithook_properties=NO_CLEANUP
        )
    except OSError as error:
        raise lake.unreachable(error) from error
    except Exception as error:
        raise LakeError(
            f"setting the properties of {state.url} failed: {str(error).splitlines()[0]}"
        ) from error
    _refresh(lake, state)
    state.checkpoint(lake)
    return True
