"""The triggers that watch no table: schedules (firing each tick, catching up missed ones per
`catch_up`) and file sensors (listing a glob, registering new files as partitions in the lake
before anything runs them). `TimedTriggers` is a part of `engine.Triggers`, whose `_request`,
`_busy`, `_save` and `_emit` it uses.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from lakeflow.define.automation import Schedule
from lakeflow.define.graph import Pipeline
from lakeflow.define.partitions import FilePartitions
from lakeflow.errors import LakeflowError
from lakeflow.lake import Lake
from lakeflow.lake.registry import load_registry, save_registry
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
        recovered = False
        unasked: list[tuple[str, str]] = []  # registered files whose request was refused
        while True:
            try:
                if not recovered:  # files registered before a crash but never published
                    parts.load(await asyncio.to_thread(load_registry, self.lake, asset))
                    if len(parts):
                        recovered = await self._request(
                            asset, "*", "file:recovery", {"kind": "file"}, "file"
                        )
                    else:
                        recovered = True
                new = unasked + await asyncio.to_thread(self._sense, asset, parts)
                if new:
                    where = new[0][1] if len(new) == 1 else f"{len(new)} files"
                    detail = {"kind": "file", "files": [u for _, u in new][:100]}
                    asked = await self._request(
                        asset, tuple(k for k, _ in new), f"file:{where}", detail, "file"
                    )
                    unasked = [] if asked else new
            except LakeflowError as error:
                self._emit("trigger_error", asset=asset, message=str(error))
            except OSError as error:
                self._emit(
                    "trigger_error", asset=asset, message=f"cannot list {parts.url}: {error}"
                )
            await asyncio.sleep(parts.poll)

    def _sense(self, asset: str, parts: FilePartitions) -> list[tuple[str, str]]:
        """List the glob; register files not seen before (in the lake, before anything runs them)."""
        import fsspec

        parts.load(load_registry(self.lake, asset))
        fs, pattern = fsspec.core.url_to_fs(parts.url, **_fsspec_options(parts, self.lake))
        fs.invalidate_cache()  # listings are cached per instance: a new file must show up
        paths = fs.glob(pattern)
        protocol = parts.url.split("://", 1)[0] + "://" if "://" in parts.url else ""
        known = set(parts.keys())
        new: list[tuple[str, str]] = []
        for path in sorted(paths):
            url = protocol + path if protocol and not path.startswith(protocol) else path
            key = parts.key_for(url)
            if key not in known:
                known.add(key)
                new.append((key, url))
        if new:
            parts.load(new)
            save_registry(self.lake, asset, parts.entries())
        return new


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
