"""A live progress bar for a run: units done/failed/total, rate and ETA (rich; live in a terminal
and in a notebook; a plain line every few seconds when output is neither)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from lakeflow.plan.scheduler import NOT_BUILT

__all__ = ["ProgressBar", "not_built"]


def not_built(info: Mapping[str, Any]) -> str:
    """`1 check_failed, 3 blocked`: each cause of an unbuilt unit on its own (none: `0 failed`)."""
    parts = [f"{int(info[k])} {k}" for k in NOT_BUILT if info.get(k)]
    return ", ".join(parts) or "0 failed"


def _duration(seconds: float | None) -> str:
    if not seconds:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    def __init__(self, run_id: str, *, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._plain = not (self.console.is_terminal or self.console.is_jupyter)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            disable=self._plain,
        )
        self._task = self._progress.add_task(
            f"run {run_id}", total=None, failed="0 failed", rate="", eta=""
        )
        self._run_id = run_id
        self._last_line = 0.0

    def __enter__(self) -> ProgressBar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def update(self, info: Mapping[str, Any]) -> None:
        if not info.get("known", True):
            return
        done = int(info["published"]) + sum(int(info.get(k) or 0) for k in NOT_BUILT)
        rate = float(info.get("rate") or 0.0)
        eta = _duration(info.get("eta")) if not info.get("done") else ""
        self._progress.update(
            self._task,
            completed=done,
            total=info["total"],
            failed=not_built(info),
            rate=f"{rate:,.0f} units/s" if rate else "",
            eta=f"ETA {eta}" if eta else "",
        )
        now = time.monotonic()
        if self._plain and (now - self._last_line > 5 or info.get("done")):
            self._last_line = now
            self.console.print(
                f"run {self._run_id}: {done}/{info['total']} units done, {not_built(info)}"
                + (f", {rate:,.0f} units/s" if rate else "")
                + (f", ETA {eta}" if eta else ""),
                soft_wrap=True,  # a log line stays one line, whatever width a pipe is given
                highlight=False,
            )
