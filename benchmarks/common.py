"""Shared helpers for the benchmark scripts: timing, peak memory, tables and RESULTS.md."""

from __future__ import annotations

import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import readme_table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def command_line() -> str:
    return "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]]
    )


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, {platform.system()}"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_mib(pid: int, field: str = "VmHWM") -> float:
    """Memory of another process on this machine from /proc, in MiB: its peak resident set
    (VmHWM) or its resident set now (VmRSS); NaN when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str, *, quick: bool) -> None:
    """Print the figures; in full mode also append them to RESULTS.md with the command."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = f"\n## {title}\n\n{stamp}, {machine()}\n\n`{command_line()}`\n\n{body}\n"
    print(text)
    if not quick:
        with RESULTS.open("a") as handle:
            handle.write(text)
        # README's benchmark table quotes the newest entries: regenerate it with every append, so
        # a figure can never land in RESULTS.md without the README that quotes it
        readme_table.README.write_text(
            readme_table.render(readme_table.README.read_text(), RESULTS.read_text())
        )
