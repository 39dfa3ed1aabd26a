"""The triggers that watch no table: schedules (firing each tick, catching up missed ones per
`catch_up`) and file sensors (listing a glob, taking a file once its stamp has settled and
registering it with that stamp in the lake before anything runs it; a changed file is taken again).
`TimedTriggers` is a part of `engine.Triggers`, whose `_request`, `_busy`, `_save` and `_emit` it
uses.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from lakeflow.define.automation import Schedule
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions, Stamp, describe_stamp, file_stamp
from lakeflow.errors import LakeflowError
from lakeflow.lake import Lake
from lakeflow.lake.log import TableState
from lakeflow.lake.registry import load_registry, save_registry
from lakeflow.plan.status import held_partitions
from lakeflow.secrets import EnvVar
from lakeflow.triggers.follow import TriggerState
from lakeflow.triggers.host import TriggerOptions

__all__ = ["TimedTriggers", "iso"]


class TimedTriggers:
    """Schedules and file sensors of a pipeline's triggers."""

    lake: Lake
    pipeline: Pipeline
    options: TriggerOptions
    state: TriggerState
    schedules: list[Schedule]
    sensors: dict[str, FilePartitions]
    aside: dict[str, set[str]]  # file sensor -> keys set aside at start (their run failed)

    # -- schedules -------------------------------------------------------------------------------
    async def _schedule_loop(self) -> None:
        while True:
            now = self.options.clock()
            for item in self.schedules:
                due = await asyncio.to_thread(item.due, self.state.ticks[item.name], now)
                if due.skipped_until is not None:  # decided once: saved before anything fires
                    self.state.ticks[item.name] = due.skipped_until
                    await self._save()
                    self._skipped(item, due.skipped, due.skipped_until, due.ticks)
                for tick in due.ticks:
                    while any(self._busy(a) for a in self.pipeline.select(item.select)):
                        await asyncio.sleep(self.options.poll)  # then its partitions are fresh
                    spec = item.spec(self.pipeline, tick)
                    origin = f"schedule:{item.name}@{iso(tick)}"
                    asked = await self._request(
                        item.select, spec, origin, {"kind": "schedule", "schedule": item.name,
                                                    "tick": iso(tick)}, "schedule",
                    )  # fmt: skip
                    if not asked:  # refused (the lake is away): this tick is fired again later
                        await asyncio.sleep(min(5.0, self.options.poll * 20))
                        break
                    self.state.ticks[item.name] = tick
                    await self._save()
            await asyncio.sleep(min(0.5, self.options.poll * 5))

    def _skipped(
        self, item: Schedule, count: int, until: float, kept: tuple[float, ...] = ()
    ) -> None:
        """Say that `count` missed ticks of `item`, up to `until`, will never fire."""
        why = f"catch_up={item.describe_catch_up()}"
        then = f"; firing the newest {len(kept)}" if kept else ""
        self._emit(
            "schedule_ticks_skipped",
            message=f"{item.name}: skipped {count} missed ticks up to {iso(until)} ({why}){then}",
            detail={"schedule": item.name, "skipped": count, "until": iso(until),
                    "fired": [iso(t) for t in kept]},
        )  # fmt: skip

    # -- files -----------------------------------------------------------------------------------
    async def _sensor_loop(self, asset: str) -> None:
        parts = self.sensors[asset]
        watch: dict[str, tuple[Stamp, float]] = {}  # url -> (stamp, when first listed with it)
        recovered = False
        unasked: list[tuple[str, str]] = []  # new files taken whose request was refused
        rerun: list[tuple[str, str]] = []  # changed files taken whose request was refused
        while True:
            try:
                if not recovered:
                    recovered = await self._recover(asset, parts)
                sensed, changed, changes = await asyncio.to_thread(self._sense, asset, parts, watch)
                for change in changes:
                    self._emit("file_changed", asset=asset, **change)
                unasked = await self._ask_files(asset, unasked + sensed, None)
                # a changed file runs whatever its publish recorded (a lake from before stamps
                # recorded none to compare with)
                rerun = await self._ask_files(asset, rerun + changed, "all")
            except LakeflowError as error:
                self._emit("trigger_error", asset=asset, message=str(error))
            except OSError as error:
                self._emit(
                    "trigger_error", asset=asset, message=f"cannot list {parts.url}: {error}"
                )
            except Exception as error:  # say so and keep sensing: a dead sensor misses files
                self._emit("trigger_error", asset=asset, message=f"{type(error).__name__}: {error}")
            await asyncio.sleep(parts.poll)

    async def _ask_files(
        self, asset: str, taken: list[tuple[str, str]], only: str | None
    ) -> list[tuple[str, str]]:
        """Request the (key, url) taken; returns those to ask for again (refused, or a changed
        file's rerun while a run builds the asset: that run may read it as it is now)."""
        if not taken:
            return []
        if only == "all":  # a changed file's rerun
            if self._busy(asset):
                return taken
            taken = await asyncio.to_thread(self._not_built_as_is, asset, taken)
            if not taken:
                return []
        where = taken[0][1] if len(taken) == 1 else f"{len(taken)} files"
        detail = {"kind": "file", "files": [u for _, u in taken][:100]}
        keys = tuple(k for k, _ in taken)
        asked = await self._request(asset, keys, f"file:{where}", detail, "file", only=only)
        return [] if asked else taken

    def _not_built_as_is(self, asset: str, taken: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The changed files whose last publish did not record the stamp they were taken with
        (a run that started after the change already built them as they are: running them
        again would publish the same file twice)."""
        parts = self.sensors[asset]
        table = TableState.load(
            self.lake, self.pipeline[asset].table_url(self.lake), column=parts.column
        )
        out = []
        for key, url in taken:
            done = table.published.get(key)
            stamp = parts.stamp(key) or {}
            if done is None or not stamp or any(done.inputs.get(k) != v for k, v in stamp.items()):
                out.append((key, url))
        return out

    async def _recover(self, asset: str, parts: FilePartitions) -> bool:
        """Once per start: ask for the files registered before (a crash may have left them
        unpublished, or changed and not re-run), but not those whose last unit failed: they
        wait for a change of the file or an explicit run. False: refused, ask again."""
        parts.load(await asyncio.to_thread(load_registry, self.lake, asset))
        if not len(parts):
            return True
        held = await asyncio.to_thread(
            held_partitions, self.lake, asset, cleared_by=("file_changed",)
        )  # a file that changed after its run failed is tried again
        aside = {k for keys in held.get(asset, {}).values() for k in keys}
        self.aside[asset] = set(aside)
        spec: str | tuple[str, ...] = "*"
        if aside:
            every = parts.keys()
            spec = tuple(k for k in every if k not in aside)
            self._emit("files_set_aside", asset=asset, detail={"files": sorted(aside)[:100]},
                       message=f"{len(aside)} files whose last run failed wait for a change "
                       "or an explicit materialize")  # fmt: skip
            if not spec:
                return True
        return await self._request(asset, spec, "file:recovery", {"kind": "file"}, "file")

    def _sense(
        self, asset: str, parts: FilePartitions, watch: dict[str, tuple[Stamp, float]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[dict[str, Any]]]:
        """List the glob; take the files whose stamp stayed the same for `parts.settle`
        seconds and that are new or changed (with `on_change="rerun"`, or whose last run
        failed: they hold no data to keep), registering their stamps in the lake before
        anything runs them. Returns the (key, url) new and changed, and the `file_changed`
        events to emit (on the loop: the emitter is not ours to share)."""
        import fsspec  # loaded with the first sensor only

        parts.load(load_registry(self.lake, asset))
        fs, pattern = fsspec.core.url_to_fs(parts.url, **_fsspec_options(parts, self.lake))
        fs.invalidate_cache()  # listings are cached per instance: a new file must show up
        listing = fs.glob(pattern, detail=True)
        protocol = parts.url.split("://", 1)[0] + "://" if "://" in parts.url else ""
        now = time.monotonic()
        known = set(parts.keys())
        taken: list[tuple[str, str]] = []
        changed: list[tuple[str, str]] = []
        changes: list[dict[str, Any]] = []
        aside = self.aside.setdefault(asset, set())
        failed_now: set[str] | None = None  # keys whose last run failed
        stamped: list[tuple[str, str, Stamp]] = []  # to register
        listed: set[str] = set()
        for path, info in sorted(listing.items()):
            url = protocol + path if protocol and not path.startswith(protocol) else path
            if info.get("type") == "directory" or parts.ignored(url):
                continue
            listed.add(url)
            stamp = file_stamp(info)
            first = watch.get(url)
            if first is None or first[0] != stamp:  # new, or still changing: the clock restarts
                watch[url] = first = (stamp, now)
            if now - first[1] < parts.settle:
                continue
            key = parts.key_for(url)
            if key not in known:
                known.add(key)
                taken.append((key, url))
                stamped.append((key, url, stamp))
                continue
            before = parts.stamp(key)
            if before == stamp or parts.partition(parts.index(key)).url != url:
                continue  # unchanged, or another name mapped to this key
            stamped.append((key, url, stamp))
            if before is None:  # registered before stamps were kept: nothing to compare
                continue
            if parts.on_change == "refuse" and failed_now is None:  # read once, when needed
                held = held_partitions(self.lake, asset)
                failed_now = {k for keys in held.get(asset, {}).values() for k in keys}
            failed = key in aside or key in (failed_now or ())
            aside.discard(key)
            if parts.on_change == "rerun" or failed:
                changed.append((key, url))
            verb = (
                "re-run" if parts.on_change == "rerun"
                else "re-run (its last run failed: no data to keep)" if failed
                else "refused: its data stays as it was"
            )  # fmt: skip
            changes.append({
                "partition": key,
                "message": f"{url} changed ({describe_stamp(before)} -> "
                f"{describe_stamp(stamp)}): {verb}",
                "detail": {"url": url, "before": before, "after": stamp,
                           "on_change": parts.on_change},
            })  # fmt: skip
        for url in set(watch) - listed:  # gone: a file that comes back starts afresh
            del watch[url]
        if stamped:
            parts.load(stamped)
            save_registry(self.lake, asset, parts.entries())
        return taken, changed, changes


def _fsspec_options(parts: FilePartitions, lake: Lake) -> dict[str, Any]:
    """fsspec options for the sensor's URL: its own, else the lake's S3 settings."""
    if parts.storage_options:  # `lf.EnvVar` values resolved here, where the sensor runs
        return {
            k: v.resolve(option=k) if isinstance(v, EnvVar) else v
            for k, v in parts.storage_options.items()
        }
    if not parts.url.startswith("s3://"):
        return {}
    opts = lake.storage_options
    out: dict[str, Any] = {}
    if "AWS_ENDPOINT_URL" in opts:
        out["endpoint_url"] = opts["AWS_ENDPOINT_URL"]
    if "AWS_ACCESS_KEY_ID" in opts:
        out["key"] = opts["AWS_ACCESS_KEY_ID"]
    if "AWS_SECRET_ACCESS_KEY" in opts:
        out["secret"] = opts["AWS_SECRET_ACCESS_KEY"]
    if "AWS_REGION" in opts:
        out["client_kwargs"] = {"region_name": opts["AWS_REGION"]}
    return out


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")
