"""What the `lakeflow` commands share: loading the pipeline they name, printing a table, Ray for
the commands that run, and how the command ends: the one place that turns what went wrong into an exit code and
a message, with no Python traceback unless `--debug` asks for it.

    0   every requested unit was published or already fresh
    1   some units were not (a failure of their code, a failed check, a unit held behind one)
    2   the request or the definitions were wrong (pipeline file, selection, partitions, options,
        an unknown run): nothing changed
    3   infrastructure: Ray could not start or be reached, the lake's storage failed; also a run
        whose failed units all failed on storage (a full disk). A mix with units failing on their
        own code is 1: the code needs fixing before a rerun can pass (`cli.main._exit`)
    70  a bug in lakeflow itself (an exception it did not expect): `--debug` shows where
    130 cancelled with Ctrl-C
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lakeflow import api
from lakeflow.control.services import ServiceInfo, find_service
from lakeflow.errors import (
    InfrastructureError,
    LakeflowError,
    RunError,
    UserCodeError,
    storage_failure,
)
from lakeflow.lake import Lake
from lakeflow.loading import load_pipeline

__all__ = [
    "EXIT_FAILED",
    "EXIT_INFRA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "attached_service",
    "exit_code",
    "guarded",
    "on_ray",
    "pipeline_args",
    "pipeline_from_args",
    "split_debug",
    "table",
]

ROWS = 200  # rows a table prints; --json has them all
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INFRA, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 70, 130


def exit_code(error: BaseException) -> int:
    """The exit code for an exception that ended a command."""
    if isinstance(error, InfrastructureError):
        return EXIT_INFRA
    if isinstance(error, RunError | UserCodeError):
        return EXIT_FAILED
    if isinstance(error, LakeflowError):
        return EXIT_USAGE
    # failures of the machinery under us that reach the command unwrapped: storage and network
    # errors (OSError, including ConnectionError and TimeoutError) and Ray's own system errors
    if isinstance(error, OSError) or type(error).__module__.startswith("ray."):
        return EXIT_INFRA
    if storage_failure(error):
        return EXIT_INFRA  # e.g. polars' ComputeError for a full disk
    return EXIT_INTERNAL


def describe(error: BaseException) -> str:
    """One or two lines for the user: the message, then what to do."""
    if isinstance(error, LakeflowError):
        return f"{error.message}\n  hint: {error.hint}" if error.hint else error.message
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    if exit_code(error) == EXIT_INTERNAL:
        return f"internal error: {text}\n  hint: a bug in lakeflow; --debug shows the traceback"
    return text


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere before a `--` (what follows `--` belongs to another command)."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    head = [a for a in args[:end] if a != "--debug"]
    return head + args[end:], len(head) != end


def guarded(run: Callable[[list[str], bool], int], argv: Sequence[str]) -> int:
    """Run a command; whatever it raises becomes a message on stderr and an exit code."""
    args, debug = split_debug(argv)
    try:
        return run(args, debug)
    except SystemExit as stop:  # argparse: usage errors (2), --help (0)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "lakeflow: cancelled; units in flight finished, nothing was half published",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exception(error, file=sys.stderr)
        print(f"lakeflow: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)


def pipeline_args(sub: argparse.ArgumentParser) -> None:
    """The pipeline module and `--lake`, which every command that loads a pipeline takes."""
    sub.add_argument(
        "pipeline", help="pipeline module: path/to/file.py or package.module, optionally :NAME"
    )
    sub.add_argument("--lake", help="lake URL (default: the pipeline's, or $LAKEFLOW_LAKE)")


def pipeline_from_args(args: argparse.Namespace) -> Any:
    """The pipeline the arguments name, on `--lake` or $LAKEFLOW_LAKE if given."""
    pipeline = load_pipeline(args.pipeline)
    lake = args.lake or os.environ.get("LAKEFLOW_LAKE")
    if lake:
        pipeline = pipeline.with_lake(lake)
    return pipeline


WIDE = 4096  # columns of a table printed to a pipe or a file: wide enough that no row wraps
STYLES = {  # outcome and status words, coloured on a terminal only
    **dict.fromkeys(["failed", "check_failed", "upstream_failed", "blocked", "error"], "red"),
    **dict.fromkeys(["published", "passed", "succeeded", "fresh", "deleted"], "green"),
    **dict.fromkeys(["running", "stale", "warn", "waiting", "cancelled", "missing"], "yellow"),
}


def _cell(value: Any) -> Text:
    if value is None:
        return Text("")
    if isinstance(value, float):
        return Text(f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}")
    if isinstance(value, list | tuple):
        return Text(", ".join(str(v) for v in value))
    text = str(value)
    return Text(text, style=STYLES.get(text, ""))


def table(frame: pl.DataFrame, *, file: TextIO | None = None) -> str:
    """A frame as a rich table for `file` (stdout by default): on a terminal its width and
    colours; to a pipe or a file no colour and no wrapping (a row stays one line)."""
    stream = file if file is not None else sys.stdout
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    columns = os.environ.get("COLUMNS", "")
    width = (
        shutil.get_terminal_size().columns
        if terminal
        else int(columns)
        if columns.isdigit()
        else WIDE
    )
    out = io.StringIO()
    console = Console(
        file=out, width=width, force_terminal=terminal, color_system="auto" if terminal else None,
        highlight=False, legacy_windows=False,
    )  # fmt: skip
    grid = Table(box=box.SIMPLE_HEAD if terminal else None, header_style="bold")
    for name, dtype in frame.schema.items():
        grid.add_column(name, overflow="fold", justify="right" if dtype.is_numeric() else "left")
    for row in frame.head(ROWS).iter_rows():
        grid.add_row(*(_cell(v) for v in row))
    console.print(grid)
    if frame.height > ROWS:
        console.print(f"... {frame.height - ROWS:,} more rows (--json prints all)")
    return out.getvalue().rstrip("\n")


def attached_service(args: argparse.Namespace) -> ServiceInfo | None:
    """The `lakeflow dev` service running for the lake the arguments name, if the command
    should send its work there: not with `--address`, `--executor local` or
    $LAKEFLOW_NO_SERVICE=1 (`control/services.py`)."""
    if getattr(args, "executor", "ray") != "ray" or getattr(args, "address", None):
        return None
    if getattr(args, "pipeline", None):
        pipeline = pipeline_from_args(args)  # loaded already by the command: no second import
        url = Lake(pipeline.lake, pipeline.storage_options).url
    else:
        url = Lake(args.lake or os.environ.get("LAKEFLOW_LAKE") or "./lake").url
    return find_service(url)


def on_ray(args: argparse.Namespace, work: Callable[[], Any]) -> Any:
    """Run `work` with Ray attached: the given cluster, or a local Ray for this command only.
    With a `lakeflow dev` service running for the lake, `work` runs without Ray in this process:
    the controller it reaches is the service's, over HTTP (`control.client.controller_client`)."""
    if attached_service(args) is not None:
        return work()
    import ray  # deferred: commands that only read the lake or attach to a service never import Ray

    started_here = False
    if args.executor == "ray" and not ray.is_initialized():
        api.connect(args.address, log_to_driver=bool(os.environ.get("LAKEFLOW_WORKER_LOGS")))
        started_here = True
    try:
        return work()
    finally:
        if started_here:
            ray.shutdown()
