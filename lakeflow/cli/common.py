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
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from lakeflow import api
from lakeflow.errors import (
    InfrastructureError,
    LakeflowError,
    RunError,
    UserCodeError,
    storage_failure,
)
from lakeflow.loading import load_pipeline

__all__ = [
    "EXIT_FAILED",
    "EXIT_INFRA",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "exit_code",
    "guarded",
    "on_ray",
    "pipeline_args",
    "pipeline_from_args",
    "split_debug",
    "table",
]

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


def table(frame: pl.DataFrame) -> str:
    """A frame printed whole enough for a terminal."""
    with pl.Config(
        tbl_rows=200,
        tbl_cols=20,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
        fmt_str_lengths=160,
        tbl_width_chars=200,
    ):
        return str(frame)


def on_ray(args: argparse.Namespace, work: Callable[[], Any]) -> Any:
    """Run `work` with Ray attached: the given cluster, or a local Ray for this command only."""
    import ray  # deferred: commands that only read the lake never import Ray

    started_here = False
    if args.executor == "ray" and not ray.is_initialized():
        api.connect(args.address, log_to_driver=bool(os.environ.get("LAKEFLOW_WORKER_LOGS")))
        started_here = True
    try:
        return work()
    finally:
        if started_here:
            ray.shutdown()
