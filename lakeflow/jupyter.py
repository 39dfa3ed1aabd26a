"""A run's progress in a Jupyter kernel: one line (an HTML progress bar, and the same words as
text) shown once and updated in place through IPython's display ids, so it needs nothing
beyond ipykernel itself (no ipywidgets, which rich's live display would). `in_kernel()` tells
whether this process is a kernel; elsewhere `lakeflow.progress.ProgressBar` draws the bar."""

from __future__ import annotations

import html
import sys
import time
from collections.abc import Mapping
from typing import Any

from lakeflow.plan.scheduler import NOT_BUILT
from lakeflow.progress import not_built

__all__ = ["NotebookProgress", "in_kernel"]


def in_kernel() -> bool:
    """This process is a Jupyter kernel (IPython with a kernel attached), not a terminal."""
    ipython = sys.modules.get("IPython")  # never imported here: a kernel has loaded it already
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _eta(seconds: float | None) -> str:
    if not seconds:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class NotebookProgress:
    """`with NotebookProgress(run_id) as bar: bar.update(info)`: the cell shows one line,
    `run ID: 12/40 units done, 0 failed, 35 units/s, ETA 0:03`, redrawn at most every
    `every` seconds and always at the end."""

    def __init__(self, run_id: str, *, every: float = 0.2) -> None:
        self._run_id = run_id
        self._every = every
        self._info: Mapping[str, Any] | None = None
        self._shown = 0.0
        self._handle: Any = None

    def __enter__(self) -> NotebookProgress:
        # IPython is there: this is used only in a kernel (in_kernel())
        from IPython.display import display

        self._handle = display(self._bundle(), raw=True, display_id=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._show()

    def update(self, info: Mapping[str, Any]) -> None:
        if not info.get("known", True):
            return
        self._info = info
        now = time.monotonic()
        if info.get("done") or now - self._shown >= self._every:
            self._show()

    def _show(self) -> None:
        if self._handle is not None:
            self._shown = time.monotonic()
            self._handle.update(self._bundle(), raw=True)

    def line(self) -> str:
        """The progress as words (what a reader without HTML sees)."""
        info = self._info
        if info is None:
            return f"run {self._run_id}: planning"
        done = int(info["published"]) + sum(int(info.get(k) or 0) for k in NOT_BUILT)
        rate = float(info.get("rate") or 0.0)
        eta = "" if info.get("done") else _eta(info.get("eta"))
        return (
            f"run {self._run_id}: {done}/{info['total']} units done, {not_built(info)}"
            + (f", {rate:,.0f} units/s" if rate else "")
            + (f", ETA {eta}" if eta else "")
        )

    def _bundle(self) -> dict[str, str]:
        info = self._info or {}
        total = int(info.get("total") or 0)
        done = int(info.get("published") or 0) + sum(int(info.get(k) or 0) for k in NOT_BUILT)
        bad = any(info.get(k) for k in NOT_BUILT)
        colour = "#c62828" if bad else "#2e7d32"
        bar = (
            f'<progress value="{done}" max="{total}" style="width:220px;accent-color:{colour}">'
            f"</progress> "
            if total
            else ""
        )
        words = html.escape(self.line())
        return {
            "text/plain": self.line(),
            "text/html": f'<div class="lf-progress" style="font-family:monospace">{bar}{words}</div>',
        }
