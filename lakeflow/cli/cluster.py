"""`lakeflow submit` and `lakeflow jobs`: a lakeflow command run on a Ray cluster as a Ray Job,
and the cluster's jobs listed, followed and stopped."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import polars as pl
from rich.console import Console

from lakeflow.cli.common import EXIT_INTERRUPTED, EXIT_OK, table
from lakeflow.errors import RequestError
from lakeflow.serve.jobs import follow_job, job_client, parse_env, submit_job

__all__ = ["add_commands"]


def add_commands(commands: Any) -> None:
    """Add these commands' parsers to the `lakeflow` parser's subcommands."""
    job = commands.add_parser(
        "submit",
        help="run a lakeflow command on a Ray cluster as a Ray Job",
        description="lakeflow submit [options] -- materialize|backfill|up PIPELINE ...",
    )
    job.add_argument(
        "--address", help="Ray Jobs URL (default: $LAKEFLOW_JOBS_ADDRESS or http://127.0.0.1:8265)"
    )
    job.add_argument("--working-dir", default=".", help="the project to upload (default: here)")
    job.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="for the job (LAKEFLOW_*, AWS_* pass by themselves)",
    )
    job.add_argument("--no-wait", action="store_true", help="print the job id and return")
    job.add_argument("--id", dest="submission_id", help="the job id to use")
    job.add_argument("job", nargs=argparse.REMAINDER, help="-- then the lakeflow command")

    jobs = commands.add_parser("jobs", help="list the cluster's jobs, print one's logs, stop one")
    jobs.add_argument("action", choices=["list", "logs", "stop", "status"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument(
        "--address", help="Ray Jobs URL (default: $LAKEFLOW_JOBS_ADDRESS or http://127.0.0.1:8265)"
    )
    jobs.add_argument(
        "--follow", "-f", action="store_true", help="logs: keep printing until it ends"
    )
    jobs.add_argument("--json", action="store_true", help="list: print as JSON")
    jobs.set_defaults(handler=jobs_command)
    job.set_defaults(handler=submit)


def submit(args: argparse.Namespace, console: Console) -> int:
    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    job_id = submit_job(
        command, address=args.address, working_dir=args.working_dir, env=parse_env(args.env),
        submission_id=args.submission_id,
    )  # fmt: skip
    print(job_id, flush=True)
    if args.no_wait:
        return EXIT_OK
    try:
        status, code = follow_job(job_client(args.address), job_id)
    except KeyboardInterrupt:
        print(f"lakeflow submit: stopped following; job {job_id} goes on "
              f"(lakeflow jobs logs {job_id} -f, lakeflow jobs stop {job_id})", file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(f"lakeflow submit: job {job_id} {status.lower()}", file=sys.stderr)
    return code


def jobs_command(args: argparse.Namespace, console: Console) -> int:
    if args.action != "list" and not args.job_id:  # before reaching the cluster
        raise RequestError(f"lakeflow jobs {args.action} needs a job id")
    client = job_client(args.address)
    if args.action == "list":
        rows = [
            {
                "job_id": j.submission_id, "status": str(j.status).rsplit(".", 1)[-1],
                "start": j.start_time, "end": j.end_time, "entrypoint": j.entrypoint,
            }
            for j in sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
            if j.submission_id
        ]  # fmt: skip
        if args.json:
            print(json.dumps(rows))
        else:
            frame = pl.DataFrame(
                rows,
                schema={
                    "job_id": pl.String,
                    "status": pl.String,
                    "start": pl.Int64,
                    "end": pl.Int64,
                    "entrypoint": pl.String,
                },
            )
            frame = frame.with_columns(pl.from_epoch("start", "ms"), pl.from_epoch("end", "ms"))
            print(table(frame))
        return EXIT_OK
    try:
        if args.action == "status":
            print(str(client.get_job_status(args.job_id)).rsplit(".", 1)[-1])
        elif args.action == "stop":
            stopped = client.stop_job(args.job_id)
            print(f"job {args.job_id}: {'stopping' if stopped else 'was not running'}")
        elif args.follow:
            return follow_job(client, args.job_id)[1]
        else:
            print(client.get_job_logs(args.job_id), end="")
    except RuntimeError as error:  # the SDK's answer to an unknown id
        raise RequestError(f"no job {args.job_id}: {str(error).splitlines()[0]}") from error
    return EXIT_OK
